"""Decoding methods under one interface and one compute accounting.

Every method, from greedy decoding to eta-MCTS, is built by a ``make_*``
function into a jit-compiled

    decode(params, prompt [B, P], prompt_mask [B, P], rng) -> DecodeResult

that sees only the prompts: no method can reach the answer key.

Compute is counted per problem so that methods can be compared at equal
cost (the paper's Table 7):

* ``forward_passes``: model evaluations of one token position for this
  problem (a prefill of the prompt counts 1; each decode step of each
  sequence counts 1; scoring or re-encoding T tokens counts T);
* ``tokens``: tokens generated for this problem (all samples, all nodes);
* ``rollouts``: complete or partial solutions sampled (tree nodes for search);
* ``flops``: ``2 x parameters x tokens processed``, summed over every model
  call (``flops``): the policy's tokens (a prompt prefill counts its prompt
  tokens, each generated token one), each critic's re-encoded tokens times
  that critic's parameter count, a separate rollout policy's likewise. The
  attention term (about ``4 L d_attn`` per token and context position) is not
  included; every method is counted the same way.

``build_methods`` builds every method by name, eta-MCTS included.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from alphallm import model as model_lib
from alphallm import sampling
from alphallm.tokenizer import EOS_ID, PAD_ID


@flax.struct.dataclass
class DecodeResult:
  """What a decoding method returns for a batch of B problems.

  Methods that choose their answer on the device fill ``completions``. Methods
  whose choice needs the host (a vote over extracted answers) also return all
  ``candidates`` with their critic ``candidate_scores``, and a host-side
  selector (``select_*`` below) picks one per problem.
  """

  completions: Int[Array, "B C"]     # chosen completion ids, pad_id-padded (may end with EOS)
  forward_passes: Float[Array, "B"]  # per-problem model evaluations (see module doc)
  tokens: Float[Array, "B"]          # per-problem generated tokens
  rollouts: Float[Array, "B"]        # per-problem sampled solutions / expanded nodes
  candidates: Int[Array, "B n C"] | None = None      # all sampled solutions
  candidate_scores: Float[Array, "B n"] | None = None  # critic score of each candidate
  flops: Float[Array, "B"] | None = None             # per-problem FLOPs (module doc)
  policy_tokens: Float[Array, "B"] | None = None     # tokens the policy processed
  critic_tokens: Float[Array, "B"] | None = None     # tokens critics re-encoded
  rollout_tokens: Float[Array, "B"] | None = None    # tokens a separate rollout policy processed
  stats: object = None                               # search methods: TreeStats
  search: object = None                              # search methods: the SearchOutput, if kept


DecodeFn = Callable[[object, jax.Array, jax.Array, jax.Array], DecodeResult]


def param_count(params) -> int:
  """Number of parameters of a pytree (static under jit)."""
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))


def flops(policy_tokens, policy_params: int, critic_tokens=0.0, critic_params: int = 0,
          rollout_tokens=0.0, rollout_params: int = 0):
  """``2 x (policy_tokens N_policy + critic_tokens N_critic + rollout_tokens N_rollout)``."""
  return 2.0 * (policy_tokens * float(policy_params) + critic_tokens * float(critic_params)
                + rollout_tokens * float(rollout_params))


def sample_accounting(out: sampling.SampleOutput) -> tuple[jax.Array, jax.Array]:
  """(forward_passes, tokens) per row of one ``sampling.generate`` call.

  A row pays for the prompt prefill (1) and one pass per token it generated.
  """
  tokens = out.lengths.astype(jnp.float32)
  return tokens + 1.0, tokens


def make_sampler(config: model_lib.TransformerConfig, max_new_tokens: int, eos_id: int,
                 temperature: float = 0.0, top_k: int = 0, *, pad_id: int = PAD_ID) -> DecodeFn:
  """Greedy (``temperature == 0``) or temperature/top-k sampling of one solution.

  ``pad_id`` (the tokenizer's PAD) fills the completions after EOS.
  """

  @jax.jit
  def decode(params, prompt, prompt_mask, rng) -> DecodeResult:
    out = sampling.generate(params, config, prompt, prompt_mask, rng,
                            max_new_tokens=max_new_tokens, temperature=temperature,
                            top_k=top_k, stop_tokens=jnp.array([eos_id], jnp.int32),
                            pad_id=pad_id)
    fwd, toks = sample_accounting(out)
    policy = toks + prompt_mask.sum(axis=1)
    return DecodeResult(completions=out.tokens, forward_passes=fwd, tokens=toks,
                        rollouts=jnp.ones_like(fwd), policy_tokens=policy,
                        critic_tokens=jnp.zeros_like(fwd), flops=flops(policy, param_count(params)))

  return decode


def make_multi_sampler(config: model_lib.TransformerConfig, num_samples: int,
                       max_new_tokens: int, eos_id: int, temperature: float = 1.0,
                       top_k: int = 0, *, pad_id: int = PAD_ID) -> DecodeFn:
  """N independent samples per problem, each scored by the value head.

  The score of a candidate is the value head at its last generated token,
  which the sampler computes anyway: re-ranking by it costs no extra pass.
  ``completions`` holds the first sample; use a host-side selector
  (self-consistency: ``select_majority``; best-of-N: ``select_max_score``).
  ``pad_id`` (the tokenizer's PAD) fills the candidates after EOS.
  """
  n = num_samples

  @jax.jit
  def decode(params, prompt, prompt_mask, rng) -> DecodeResult:
    b = prompt.shape[0]
    rep, rep_mask = repeat_prompts(prompt, prompt_mask, n)
    out = sampling.generate(params, config, rep, rep_mask, rng,
                            max_new_tokens=max_new_tokens, temperature=temperature,
                            top_k=top_k, stop_tokens=jnp.array([eos_id], jnp.int32),
                            pad_id=pad_id)
    fwd, toks = sample_accounting(out)
    last = jnp.maximum(out.lengths - 1, 0)
    scores = jnp.take_along_axis(out.values, last[:, None], axis=1)[:, 0]
    candidates = out.tokens.reshape(b, n, -1)
    policy = (toks + rep_mask.sum(axis=1)).reshape(b, n).sum(1)
    return DecodeResult(completions=candidates[:, 0], forward_passes=fwd.reshape(b, n).sum(1),
                        tokens=toks.reshape(b, n).sum(1), rollouts=jnp.full((b,), float(n)),
                        candidates=candidates, candidate_scores=scores.reshape(b, n),
                        policy_tokens=policy, critic_tokens=jnp.zeros((b,)),
                        flops=flops(policy, param_count(params)))

  return decode


# Host-side selectors: (candidate texts [n], scores [n]) -> index of the chosen one.

def select_max_score(texts: Sequence[str], scores: Sequence[float],
                     extract_answer: Callable[[str], str | None]) -> int:
  """Best-of-N: the candidate with the highest critic score."""
  del texts, extract_answer
  return int(np.argmax(np.asarray(scores)))


def select_majority(texts: Sequence[str], scores: Sequence[float],
                    extract_answer: Callable[[str], str | None]) -> int:
  """Self-consistency: a candidate carrying the most frequent extracted answer.

  Candidates without an answer do not vote; ties go to the answer seen first.
  """
  del scores
  return _vote(texts, np.ones(len(texts)), extract_answer)


def select_weighted_vote(texts: Sequence[str], scores: Sequence[float],
                         extract_answer: Callable[[str], str | None]) -> int:
  """Critic-weighted vote: answers weighted by the sum of their candidates' scores."""
  return _vote(texts, np.clip(np.asarray(scores, np.float64), 0.0, None), extract_answer)


def _vote(texts, weights, extract_answer) -> int:
  totals: dict[str, float] = {}
  first: dict[str, int] = {}
  for i, text in enumerate(texts):
    answer = extract_answer(text)
    if answer is None:
      continue
    totals[answer] = totals.get(answer, 0.0) + float(weights[i])
    first.setdefault(answer, i)
  if not totals:
    return 0
  best = max(totals, key=lambda a: (totals[a], -first[a]))
  return first[best]


SELECTORS = {"max_score": select_max_score, "majority": select_majority,
             "weighted_vote": select_weighted_vote}


def repeat_prompts(prompt: jax.Array, prompt_mask: jax.Array, n: int
                   ) -> tuple[jax.Array, jax.Array]:
  """``[B, P] -> [B * n, P]``, each problem's copies adjacent."""
  return jnp.repeat(prompt, n, axis=0), jnp.repeat(prompt_mask, n, axis=0)


@functools.partial(jax.jit, static_argnames=("config", "pad_id", "eos_id"))
def score_completions(params, config: model_lib.TransformerConfig, prompt: jax.Array,
                      prompt_mask: jax.Array, completions: jax.Array, *, pad_id: int = PAD_ID,
                      eos_id: int = EOS_ID) -> tuple[Float[Array, "B"], Float[Array, "B"]]:
  """Value-head score of each completion and its total log-probability.

  Re-encodes ``prompt ++ completion`` (``[B, P + C]``) in one pass. The score
  is the value head at the completion's last real token. ``completions`` are
  ``DecodeResult.completions``: their real tokens are told by
  ``sampling.completion_mask`` with the tokenizer's ``pad_id`` and
  ``eos_id`` (static), which keeps the EOS even when the two are one id.
  """
  real = sampling.completion_mask(completions, pad_id, eos_id)
  seq = jnp.concatenate([prompt, completions], axis=1)
  mask = jnp.concatenate([prompt_mask, real], axis=1)
  out = model_lib.Transformer(config).apply(
      {"params": params}, seq, model_lib.default_positions(mask), mask)
  p = prompt.shape[1]
  last = p - 1 + real.sum(axis=1)
  value = jnp.take_along_axis(out.values, last[:, None], axis=1)[:, 0]
  logp = jax.nn.log_softmax(out.logits[:, p - 1:-1])
  tok_logp = jnp.take_along_axis(logp, completions[..., None], axis=-1)[..., 0]
  return value, (tok_logp * real).sum(axis=1)


def make_critic_reranker(sampler: DecodeFn, critic, critic_params, critic_size: int, *,
                         pad_id: int = PAD_ID, eos_id: int = EOS_ID) -> DecodeFn:
  """A multi-sampler whose candidates are scored by a trained critic (re-encoded).

  ``critic(critic_params, tokens [N, S], mask [N, S]) -> [N]`` (a search
  critic slot, e.g. ``critic_slots``' ORM). Each candidate's prompt +
  completion is re-encoded: those tokens are added to ``forward_passes``,
  ``critic_tokens`` and, times ``critic_size`` parameters, to ``flops``.
  """

  @jax.jit
  def rescore(result: DecodeResult, prompt, prompt_mask):
    b, n, c = result.candidates.shape
    cand = result.candidates.reshape(b * n, c)
    real = sampling.completion_mask(cand, pad_id, eos_id)
    rep, rep_mask = repeat_prompts(prompt, prompt_mask, n)
    seq = jnp.concatenate([rep, cand], axis=1)
    mask = jnp.concatenate([rep_mask, real], axis=1)
    scores = critic(critic_params, seq, mask).reshape(b, n)
    spent = mask.sum(axis=1).reshape(b, n).sum(axis=1).astype(jnp.float32)
    return result.replace(candidate_scores=scores, forward_passes=result.forward_passes + spent,
                          critic_tokens=result.critic_tokens + spent,
                          flops=result.flops + flops(0.0, 0, spent, critic_size))

  def decode(params, prompt, prompt_mask, rng) -> DecodeResult:
    return rescore(sampler(params, prompt, prompt_mask, rng), prompt, prompt_mask)

  return decode


def critic_size(critic_params) -> int:
  """Parameters of the largest critic in ``{slot: params}`` (an upper bound per critic token).

  The search counts all critics' re-encoded tokens together; when the slots
  hold critics of different sizes this over-counts the smaller ones.
  """
  if not critic_params:
    return 0
  if isinstance(critic_params, dict) and set(critic_params) <= {"value", "prm", "orm"}:
    return max(param_count(p) for p in critic_params.values())
  return param_count(critic_params)
