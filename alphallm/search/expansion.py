"""Expansion and evaluation of eta-MCTS nodes: the model-side pieces, batched over B.

* ``same_step`` / ``is_new_step``: the state-merge test. Two options are the
  same step when their tokens are equal after dropping the task's ignorable
  tokens (``Task.same_step_ignored``, e.g. spaces); steps with different
  text, such as ``7*8=56`` and ``7*8=54``, are never the same.
* ``propose_options``: samples one new option per row from the parent's KV
  cache, without replacement at the first divergent token (never an exact
  copy of a sibling); an option that is still the same step as a sibling
  (``same_step``: equal up to ignorable tokens) is resampled (up to ``tries``
  draws), so siblings are distinct steps. The keys and
  values written while sampling are the child's: nothing is re-encoded.
* ``propose_tokens``: token level: the slot-th most probable next token
  (never PAD / BOS), encoded in one call.
* ``evaluate``: terminal test and the node score s from the critic slots.
  A node that hits the completion limit without an answer scores 0.
* ``fast_rollouts``: ORM-scored completions from a node; the best is kept.

Axis letters: B problems, A child slots, O option length, C completion slots,
P prompt slots, S cache slots, V vocabulary, L layers, K kv heads, H head dim.
"""

from __future__ import annotations

import flax
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from alphallm import model as model_lib
from alphallm.search import options as opt_lib


def _compact(tokens: Int[Array, "O"], length, ignored: Int[Array, "M"]):
  """Tokens of ``tokens[:length]`` that are not ``ignored``, moved to the front."""
  o = tokens.shape[0]
  keep = jnp.arange(o) < length
  if ignored.shape[0]:
    keep = keep & ~jnp.any(tokens[:, None] == ignored[None, :], axis=-1)
  order = jnp.argsort(~keep, stable=True)
  return jnp.where(jnp.arange(o) < keep.sum(), tokens[order], -1), keep.sum()


def same_step(a: Int[Array, "O"], len_a, b: Int[Array, "O"], len_b,
              ignored: Int[Array, "M"]) -> Bool[Array, ""]:
  """Whether two options are the same step (equal tokens once ``ignored`` ids are dropped)."""
  ca, na = _compact(a, len_a, ignored)
  cb, nb = _compact(b, len_b, ignored)
  return (na == nb) & jnp.all(ca == cb)


def is_new_step(option: Int[Array, "O"], length, siblings: Int[Array, "A O"],
                sibling_len: Int[Array, "A"], sibling_valid: Bool[Array, "A"],
                ignored: Int[Array, "M"]) -> Bool[Array, ""]:
  """True when ``option`` is non-empty and the same step as no valid sibling."""
  same = jax.vmap(same_step, in_axes=(None, None, 0, 0, None))(option, length, siblings,
                                                               sibling_len, ignored)
  return (length > 0) & ~jnp.any(same & sibling_valid)


@flax.struct.dataclass
class Proposal:
  """One new option per row (``ok`` False: none found / row inactive)."""

  tokens: Int[Array, "B O"]
  lengths: Int[Array, "B"]
  logprob: Float[Array, "B"]
  value: Float[Array, "B"]            # policy value head after the option
  next_logits: Float[Array, "B V"]    # next-token logits after the option
  cache: model_lib.KVCache            # prompt ++ path ++ option keys/values
  ok: Bool[Array, "B"]
  sampled_tokens: Float[Array, "B"]   # tokens the policy generated, rejected draws included
  steps: Int[Array, ""]               # sequential model calls


def propose_options(model_config, params, cache: model_lib.KVCache,
                    first_logits: Float[Array, "B V"], start_slot: Int[Array, "B"],
                    start_pos: Int[Array, "B"], limit: Int[Array, "B"],
                    stop_ids: Int[Array, "M"], siblings: Int[Array, "B A O"],
                    sibling_len: Int[Array, "B A"], sibling_valid: Bool[Array, "B A"],
                    active: Bool[Array, "B"], rng: jax.Array, *, max_len: int,
                    temperature: float, tries: int, ignored: Int[Array, "Q"],
                    pad_id: int) -> Proposal:
  """Samples an option per active row that is a new step among its siblings.

  Draw t samples only the rows still without a new step; at most ``tries``
  draws. Each draw starts from ``cache`` (the parent's state), and the draw
  that is accepted leaves the option's keys/values in the returned cache.
  """
  b, o = siblings.shape[0], max_len
  new_step = jax.vmap(is_new_step, in_axes=(0, 0, 0, 0, 0, None))

  def body(carry):
    t, rng, need, acc, sampled, steps = carry
    rng, draw_rng = jax.random.split(rng)
    s = opt_lib.sample_options(model_config, params, cache, first_logits, start_slot,
                               start_pos, jnp.where(need, limit, 0), stop_ids, draw_rng,
                               max_len=o, temperature=temperature, pad_id=pad_id,
                               avoid=siblings, avoid_len=jnp.where(sibling_valid, sibling_len, 0))
    fresh = need & new_step(s.tokens, s.lengths, siblings, sibling_len, sibling_valid, ignored)
    pick = lambda new, old: jnp.where(  # noqa: E731
        fresh.reshape((b,) + (1,) * (new.ndim - 1)), new, old)
    kv = lambda new, old: jnp.where(fresh[None, :, None, None, None], new, old)  # noqa: E731
    acc = dict(tokens=pick(s.tokens, acc["tokens"]), lengths=pick(s.lengths, acc["lengths"]),
               logprob=pick(s.logprob, acc["logprob"]),
               value=pick(s.last_value, acc["value"]),
               logits=pick(s.last_logits, acc["logits"]),
               k=kv(s.cache.k, acc["k"]), v=kv(s.cache.v, acc["v"]))
    sampled = sampled + jnp.where(need, s.lengths, 0).astype(jnp.float32)
    return t + 1, rng, need & ~fresh, acc, sampled, steps + s.steps

  def cond(carry):
    return (carry[0] < tries) & jnp.any(carry[2])

  acc = dict(tokens=jnp.full((b, o), pad_id, jnp.int32), lengths=jnp.zeros((b,), jnp.int32),
             logprob=jnp.zeros((b,), jnp.float32), value=jnp.zeros((b,), jnp.float32),
             logits=first_logits, k=cache.k, v=cache.v)
  need = active & (limit > 0)
  _, _, missing, acc, sampled, steps = jax.lax.while_loop(
      cond, body, (jnp.int32(0), rng, need, acc, jnp.zeros((b,), jnp.float32), jnp.int32(0)))
  ok = need & ~missing
  out_cache = model_lib.KVCache(k=acc["k"], v=acc["v"], mask=cache.mask.at[:, :].set(
      _written_mask(cache.mask, start_slot, acc["lengths"] * ok)))
  return Proposal(tokens=acc["tokens"], lengths=acc["lengths"] * ok, logprob=acc["logprob"],
                  value=acc["value"], next_logits=acc["logits"], cache=out_cache, ok=ok,
                  sampled_tokens=sampled, steps=steps)


def _written_mask(mask: Bool[Array, "B S"], start: Int[Array, "B"], length: Int[Array, "B"]
                  ) -> Bool[Array, "B S"]:
  s = jnp.arange(mask.shape[1])[None, :]
  return mask | ((s >= start[:, None]) & (s < (start + length)[:, None]))


def ranked_token(logits: Float[Array, "B V"], slot: Int[Array, "B"], num_slots: int,
                 banned: tuple[int, ...]) -> tuple[Int[Array, "B"], Float[Array, "B"]]:
  """The ``slot``-th most probable next token (never ``banned``) and its log-prob."""
  logp = jax.nn.log_softmax(logits)
  for i in banned:
    logp = logp.at[:, i].set(-jnp.inf)
  top_logp, top_ids = jax.lax.top_k(logp, num_slots)
  tok = jnp.take_along_axis(top_ids, slot[:, None], axis=1)[:, 0].astype(jnp.int32)
  lp = jnp.take_along_axis(top_logp, slot[:, None], axis=1)[:, 0]
  return tok, lp


def propose_tokens(model_config, params, cache: model_lib.KVCache,
                   first_logits: Float[Array, "B V"], slot: Int[Array, "B"],
                   start_slot: Int[Array, "B"], start_pos: Int[Array, "B"],
                   active: Bool[Array, "B"], *, num_slots: int, banned: tuple[int, ...],
                   pad_id: int) -> Proposal:
  """Token level: child ``slot`` is the slot-th ranked token, encoded in one call."""
  tok, lp = ranked_token(first_logits, slot, num_slots, banned)
  ok = active & jnp.isfinite(lp)
  lens = ok.astype(jnp.int32)
  logits, value, out_cache = opt_lib.encode(model_config, params, cache,
                                            jnp.where(ok, tok, pad_id)[:, None], lens,
                                            start_slot, start_pos)
  return Proposal(tokens=jnp.where(ok, tok, pad_id)[:, None], lengths=lens,
                  logprob=jnp.where(ok, lp, 0.0), value=value, next_logits=logits,
                  cache=out_cache, ok=ok, sampled_tokens=lens.astype(jnp.float32),
                  steps=jnp.int32(1))


def full_sequences(prompt: Int[Array, "B P"], prompt_mask: Bool[Array, "B P"],
                   completion: Int[Array, "B C"], comp_len: Int[Array, "B"]):
  """``(tokens [B, P + C], mask)``: prompt ++ completion, the critics' input."""
  mask = jnp.concatenate(
      [prompt_mask, jnp.arange(completion.shape[1])[None, :] < comp_len[:, None]], axis=1)
  return jnp.concatenate([prompt, completion], axis=1), mask


@flax.struct.dataclass
class Evaluation:
  """Critic scores of B new nodes and what the critics cost."""

  value: Float[Array, "B"]
  prm: Float[Array, "B"]
  orm: Float[Array, "B"]
  has_orm: Bool[Array, "B"]
  score: Float[Array, "B"]
  critic_tokens: Float[Array, "B"]   # tokens re-encoded by external critics
  calls: int


def evaluate(weights, critics, critic_params, node_score_fn, prompt, prompt_mask,
             tokens: Int[Array, "B C"], length: Int[Array, "B"], policy_value: Float[Array, "B"],
             terminal: Bool[Array, "B"], failed: Bool[Array, "B"], active: Bool[Array, "B"]
             ) -> Evaluation:
  """Scores B nodes: each critic fills its own slot (``mcts.Critics``).

  value: ``critics.value`` or the policy's value head; PRM: ``critics.prm``
  or the value; ORM (finished nodes only): ``critics.orm`` or the value.
  ``failed`` nodes (the completion limit without an answer) score 0.
  """
  seq, mask = full_sequences(prompt, prompt_mask, tokens, length)
  cost = (prompt_mask.sum(axis=1) + length).astype(jnp.float32) * active
  spent, calls = jnp.zeros_like(cost), 0
  value = policy_value
  if critics.value is not None and weights.value > 0:
    value, spent, calls = critics.value(critic_params, seq, mask), spent + cost, calls + 1
  prm = value
  if critics.prm is not None and weights.prm > 0:
    prm, spent, calls = critics.prm(critic_params, seq, mask), spent + cost, calls + 1
  orm = value
  if critics.orm is not None and weights.orm > 0:
    orm, spent, calls = (critics.orm(critic_params, seq, mask), spent + cost * terminal,
                         calls + 1)
  has_orm = terminal
  orm = jnp.where(terminal, orm, 0.0)
  score = node_score_fn(weights, value, prm, orm, has_orm)
  score = jnp.where(failed, 0.0, score)
  return Evaluation(value=value, prm=prm, orm=orm, has_orm=has_orm, score=score,
                    critic_tokens=spent, calls=calls)
