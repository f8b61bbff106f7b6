"""Step-level beam search: a search baseline for eta-MCTS.

Each of ``W`` beams is extended by ``A`` sampled options (one reasoning step
each, same sampler and termination as the tree search); of the ``W * A``
extensions plus the already finished beams, the ``W`` with the best score are
kept. The score is ``mcts.node_score`` of the extension: the value head at
its last token (free, from the sampler), a pluggable PRM, and for finished
solutions the ORM. Identical sibling options are de-duplicated so the beam
does not fill with copies. The answer is the best finished beam (the best
beam if none finished).

All of it is one jitted function with the ``alphallm.decoding`` interface.
A kept extension's keys/values are gathered from the sampling cache, so no
token is encoded twice. Accounting per problem: 1 (prompt prefill) + one pass
per sampled token (+ tokens re-encoded by external critics); ``tokens`` =
sampled tokens; ``rollouts`` = sampled options.

Axis letters: B problems, W beams, A options per beam, O option length,
C completion slots, P prompt slots, S cache slots.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from alphallm import decoding
from alphallm import model as model_lib
from alphallm.search import mcts
from alphallm.search import options as opt_lib
from alphallm.tokenizer import PAD_ID


@dataclasses.dataclass(frozen=True)
class BeamConfig:
  """Beam width W, options per beam A, lengths, sampling temperature, score weights."""

  width: int = 4
  num_actions: int = 4
  max_option_len: int = 16
  max_completion_len: int = 64
  temperature: float = 1.0
  weights: mcts.WeightsConfig = mcts.WeightsConfig()

  def __post_init__(self):
    for name in ("width", "num_actions", "max_option_len", "max_completion_len"):
      if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
        raise ValueError(f"BeamConfig.{name} must be a positive int, got {getattr(self, name)!r}")


def make_beam_search(model_config: model_lib.TransformerConfig, beam_config: BeamConfig,
                     eos_id: int, delimiter_ids: Sequence[int],
                     critics: mcts.Critics | None = None, *,
                     answer_prefix_ids: Sequence[int] | None = None,
                     pad_id: int = PAD_ID) -> decoding.DecodeFn:
  """Builds the jitted ``decode(params, prompt, prompt_mask, rng) -> DecodeResult``.

  ``pad_id`` (the tokenizer's PAD) fills each beam's completion beyond its
  length; see ``mcts.make_search`` for the other arguments.
  """
  return _make(model_config, beam_config, int(eos_id), tuple(int(i) for i in delimiter_ids),
               critics or mcts.Critics(),
               None if answer_prefix_ids is None else tuple(answer_prefix_ids), int(pad_id))


@functools.lru_cache(maxsize=32)
def _make(model_config, cfg: BeamConfig, eos_id, delimiter_ids, critics, answer_prefix_ids,
          pad_id=PAD_ID):
  w, a, o, c = cfg.width, cfg.num_actions, cfg.max_option_len, cfg.max_completion_len
  stop_ids = jnp.asarray(sorted(set(delimiter_ids) | {eos_id}), jnp.int32)
  answer_ids = None if answer_prefix_ids is None else jnp.asarray(answer_prefix_ids, jnp.int32)
  model = model_lib.Transformer(model_config)

  def decode(params, prompt, prompt_mask, rng, critic_params=None) -> decoding.DecodeResult:
    critic_params = params if critic_params is None else critic_params
    b, p = prompt.shape
    bw, bwa = b * w, b * w * a
    prompt_len = prompt_mask.sum(axis=1).astype(jnp.int32)
    pre = model.apply({"params": params}, prompt, model_lib.default_positions(prompt_mask),
                      prompt_mask, model_lib.KVCache.init(model_config, b, p),
                      jnp.zeros((b,), jnp.int32))
    cache = opt_lib.build_cache(pre.cache.k, pre.cache.v, prompt_mask, None, None,
                                jnp.zeros((b,), jnp.int32), c, o)
    cache = opt_lib.repeat_cache(cache, w)                                   # [L, BW, S]
    beam_prompt_len = jnp.repeat(prompt_len, w)
    rep_prompt = jnp.repeat(prompt, w * a, axis=0)
    rep_prompt_mask = jnp.repeat(prompt_mask, w * a, axis=0)
    first = jnp.arange(w) == 0

    def score(tokens, lengths, value, terminal):
      """Scores of ``[BWA]`` extensions (critics see prompt + completion)."""
      seq = jnp.concatenate([rep_prompt, tokens], axis=1)
      mask = jnp.concatenate([rep_prompt_mask, jnp.arange(c)[None, :] < lengths[:, None]], 1)
      prm, orm, cost = value, value, jnp.zeros_like(value)
      if critics.prm is not None and cfg.weights.prm > 0:
        prm = critics.prm(critic_params, seq, mask)
        cost = cost + mask.sum(axis=1)
      if critics.orm is not None and cfg.weights.orm > 0:
        orm = critics.orm(critic_params, seq, mask)
        cost = cost + mask.sum(axis=1) * terminal
      return mcts.node_score(cfg.weights, value, prm, orm, terminal), cost

    def body(state):
      (i, rng, cache, logits, tokens, length, alive, terminal, beam_score, fwd, gen,
       sampled) = state
      rng, step_rng = jax.random.split(rng)
      active = alive & ~terminal                                              # [BW]
      limit = jnp.where(active, jnp.minimum(c - length, o), 0)
      sample = opt_lib.sample_options(
          model_config, params, opt_lib.repeat_cache(cache, a), jnp.repeat(logits, a, axis=0),
          jnp.repeat(p + length, a), jnp.repeat(beam_prompt_len + length, a),
          jnp.repeat(limit, a), stop_ids, step_rng, max_len=o, temperature=cfg.temperature,
          pad_id=pad_id)
      lens = sample.lengths                                                   # [BWA]
      keep, _ = jax.vmap(opt_lib.merge_candidates, in_axes=(0, 0, 0, None))(
          sample.tokens.reshape(bw, a, o), lens.reshape(bw, a), (lens > 0).reshape(bw, a),
          None)
      keep = keep.reshape(bwa)
      new_len = jnp.repeat(length, a) + lens
      new_tokens = opt_lib.splice(jnp.repeat(tokens, a, axis=0), sample.tokens,
                                  jnp.repeat(length, a), pad_id)
      new_term = (opt_lib.option_is_terminal(sample.tokens, lens, eos_id, answer_ids)
                  | (new_len >= c))
      new_score, critic_cost = score(new_tokens, new_len, sample.last_value, new_term)
      critic_cost = critic_cost * (lens > 0)
      # A finished beam competes as itself, in its slot 0.
      carry = jnp.repeat(alive & terminal, a) & jnp.tile(jnp.arange(a) == 0, bw)
      cand_score = jnp.where(keep, new_score, -jnp.inf)
      cand_score = jnp.where(carry, jnp.repeat(beam_score, a), cand_score)
      cand_term = jnp.where(carry, True, new_term)
      top_score, top = jax.lax.top_k(cand_score.reshape(b, w * a), w)         # [B, W]
      rows = (top + (jnp.arange(b) * w * a)[:, None]).reshape(bw)
      cache = sample.cache
      cache = model_lib.KVCache(k=jnp.take(cache.k, rows, axis=1),
                                v=jnp.take(cache.v, rows, axis=1), mask=cache.mask[rows])
      per_problem = lambda x: x.reshape(b, w * a).sum(axis=1)  # noqa: E731
      return (i + 1, rng, cache, sample.last_logits[rows], new_tokens[rows], new_len[rows],
              top_score.reshape(bw) > -jnp.inf, cand_term[rows], top_score.reshape(bw),
              fwd + per_problem(lens + critic_cost), gen + per_problem(lens),
              sampled + per_problem(lens > 0))

    def cond(state):
      i, alive, terminal = state[0], state[6], state[7]
      return (i < c) & jnp.any(alive & ~terminal)

    zeros = jnp.zeros((b,), jnp.float32)
    init = (jnp.int32(0), rng, cache, jnp.repeat(pre.logits[:, -1], w, axis=0),
            jnp.full((bw, c), pad_id, jnp.int32), jnp.zeros((bw,), jnp.int32),
            jnp.tile(first, b), jnp.zeros((bw,), bool), jnp.zeros((bw,), jnp.float32),
            zeros + 1.0, zeros, zeros)
    (_, _, _, _, tokens, _, alive, terminal, beam_score, fwd, gen,
     sampled) = jax.lax.while_loop(cond, body, init)
    alive, terminal = alive.reshape(b, w), terminal.reshape(b, w)
    finished = jnp.any(alive & terminal, axis=1, keepdims=True)
    eligible = alive & (terminal | ~finished)
    best = jnp.argmax(jnp.where(eligible, beam_score.reshape(b, w), -jnp.inf), axis=1)
    completions = tokens.reshape(b, w, c)[jnp.arange(b), best]
    return decoding.DecodeResult(completions=completions, forward_passes=fwd, tokens=gen,
                                 rollouts=sampled)

  return jax.jit(decode)
