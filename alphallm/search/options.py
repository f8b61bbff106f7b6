"""Options: the actions of option-level eta-MCTS, and what is done with them.

An option is one reasoning step: a token sequence ended by the termination
function beta, here a step delimiter token (``"\\n"``), EOS, or the length cap
``max_option_len``. This module holds the pure, jit-friendly pieces that the
tree search (``mcts``) and the beam search (``beam``) share:

* building a KV cache from the shared prompt KV plus one path's KV
  (``build_cache``) and encoding new tokens into it (``encode``);
* sampling candidate options / rollouts with an incremental decoder that also
  records the value head at each row's last token (``sample_options``);
* the termination test of an option (``option_is_terminal``);
* state merge: a Levenshtein distance written with lax loops
  (``edit_distance``) and the greedy sibling merge (``merge_candidates``);
* importance-based adaptive branching (``branching_factor``,
  ``keep_first``);
* prior logits over sampled candidates (``prior_logits``).

Axis letters: B problems, R rows (e.g. ``B * A``), A candidates per node,
O option length, C completion slots, P prompt slots, S cache slots, L layers,
K kv heads, H head dim, V vocabulary.
"""

from __future__ import annotations

import flax
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from alphallm import model as model_lib
from alphallm import sampling
from alphallm.tokenizer import PAD_ID

# Prior logit of a masked (invalid) child. Finite so that mctx's softmaxes stay
# NaN-free; ``softmax`` gives such a child exactly zero probability in float32.
MASKED_LOGIT = -1e9


@flax.struct.dataclass
class OptionSample:
  """Sampled continuations of R rows.

  Attributes:
    tokens: ``[R, O]`` generated ids, ``pad_id`` after the row's last token.
    lengths: ``[R]`` generated tokens (stop token included).
    logprob: ``[R]`` sum of log pi(token) under the untempered policy.
    last_value: ``[R]`` value head after the row's last token (0 if empty).
    last_logits: ``[R, V]`` next-token logits after the row's last token
      (``first_logits`` if empty).
    cache: the cache with the generated tokens' keys/values written.
    steps: ``[]`` sequential model calls the loop made (batch-wide).
  """

  tokens: Int[Array, "R O"]
  lengths: Int[Array, "R"]
  logprob: Float[Array, "R"]
  last_value: Float[Array, "R"]
  last_logits: Float[Array, "R V"]
  cache: model_lib.KVCache
  steps: Int[Array, ""]


def build_cache(prompt_k: Float[Array, "L B P K H"], prompt_v: Float[Array, "L B P K H"],
                prompt_mask: Bool[Array, "B P"], path_k: Float[Array, "L B C K H"] | None,
                path_v: Float[Array, "L B C K H"] | None, path_len: Int[Array, "B"],
                completion_slots: int, extra_slots: int) -> model_lib.KVCache:
  """The cache of ``prompt ++ path ++ extra`` slots, ``S = P + C + extra``.

  Slots ``[P, P + path_len)`` hold the path's keys/values and are valid;
  the rest of the completion slots and the ``extra`` slots are free. With
  ``path_k is None`` the completion slots are zeros (e.g. the root).
  """
  l, b, _, k, h = prompt_k.shape
  free = completion_slots + extra_slots
  if path_k is not None:
    free = extra_slots
  pad = jnp.zeros((l, b, free, k, h), prompt_k.dtype)
  ks = [prompt_k] + ([path_k] if path_k is not None else []) + [pad]
  vs = [prompt_v] + ([path_v] if path_v is not None else []) + [pad]
  path_mask = jnp.arange(completion_slots)[None, :] < path_len[:, None]
  mask = jnp.concatenate(
      [prompt_mask, path_mask, jnp.zeros((b, extra_slots), bool)], axis=1)
  return model_lib.KVCache(k=jnp.concatenate(ks, axis=2), v=jnp.concatenate(vs, axis=2),
                           mask=mask)


def repeat_cache(cache: model_lib.KVCache, n: int) -> model_lib.KVCache:
  """``[L, B, S, ...] -> [L, B * n, S, ...]``, each row's copies adjacent."""
  return model_lib.KVCache(k=jnp.repeat(cache.k, n, axis=1), v=jnp.repeat(cache.v, n, axis=1),
                           mask=jnp.repeat(cache.mask, n, axis=0))


def encode(model_config: model_lib.TransformerConfig, params, cache: model_lib.KVCache,
           tokens: Int[Array, "B T"], lengths: Int[Array, "B"], start_slot: Int[Array, "B"],
           start_pos: Int[Array, "B"]
           ) -> tuple[Float[Array, "B V"], Float[Array, "B"], model_lib.KVCache]:
  """Encodes ``tokens[:, :lengths]`` at ``start_slot`` in one model call.

  Returns the logits and value at each row's last real token (row 0's if a
  row is empty) and the updated cache.
  """
  t = tokens.shape[1]
  steps = jnp.arange(t, dtype=jnp.int32)[None, :]
  mask = steps < lengths[:, None]
  out = model_lib.Transformer(model_config).apply(
      {"params": params}, tokens, start_pos[:, None] + steps, mask, cache, start_slot)
  last = jnp.maximum(lengths - 1, 0)
  logits = jnp.take_along_axis(out.logits, last[:, None, None], axis=1)[:, 0]
  values = jnp.take_along_axis(out.values, last[:, None], axis=1)[:, 0]
  return logits, values, out.cache


def sample_options(model_config: model_lib.TransformerConfig, params, cache: model_lib.KVCache,
                   first_logits: Float[Array, "R V"], start_slot: Int[Array, "R"],
                   start_pos: Int[Array, "R"], limit: Int[Array, "R"],
                   stop_ids: Int[Array, "M"], rng: jax.Array, *, max_len: int,
                   temperature: float, pad_id: int = PAD_ID,
                   avoid: Int[Array, "R A O"] | None = None,
                   avoid_len: Int[Array, "R A"] | None = None) -> OptionSample:
  """Samples up to ``min(max_len, limit)`` tokens per row, stopping at ``stop_ids``.

  Row r continues the sequence whose next-token logits are ``first_logits[r]``;
  its i-th token is written at cache slot ``start_slot[r] + i`` with RoPE
  position ``start_pos[r] + i``. The loop ends when every row has stopped,
  so it makes at most ``max_len`` model calls of R rows and one token each.
  Slots after a row's last token hold ``pad_id`` (the tokenizer's PAD).

  ``avoid`` / ``avoid_len`` (length 0: no sequence): sampling without
  replacement at the first divergent token. At step i a row may not pick the
  last token of an avoided sequence of length ``i + 1`` whose first i tokens
  it has generated, so the sampled option differs from every avoided one
  (siblings share the row's length limit, so an avoided option cut at the
  limit is covered too). ``logprob`` stays the option's probability under
  the unrestricted policy.
  """
  r = first_logits.shape[0]
  model = model_lib.Transformer(model_config)
  temperature = jnp.asarray(temperature, jnp.float32)

  def banned_logits(i, logits, tokens):
    if avoid is None:
      return logits
    o = avoid.shape[-1]
    prefix = jnp.arange(o)[None, None, :] < i
    match = jnp.all((avoid == tokens[:, None, :o]) | ~prefix, axis=-1)       # [R, A]
    ends_here = match & (avoid_len == i + 1)
    last = jnp.take(avoid, jnp.minimum(i, o - 1), axis=2)                     # [R, A]
    hit = jnp.zeros(logits.shape, jnp.int32).at[jnp.arange(r)[:, None], last].max(
        ends_here.astype(jnp.int32))
    return jnp.where(hit > 0, -jnp.inf, logits)

  def body(state):
    i, rng, cache, logits, last_logits, tokens, logprob, value, done, lengths = state
    rng, step_rng = jax.random.split(rng)
    tok = sampling.sample_logits(step_rng, banned_logits(i, logits, tokens), temperature)
    logp = jnp.take_along_axis(jax.nn.log_softmax(logits), tok[:, None], axis=-1)[:, 0]
    tok = jnp.where(done, pad_id, tok)
    out = model.apply({"params": params}, tok[:, None], (start_pos + i)[:, None],
                      ~done[:, None], cache, start_slot + i)
    tokens = tokens.at[:, i].set(tok)
    logprob = logprob + jnp.where(done, 0.0, logp)
    value = jnp.where(done, value, out.values[:, 0])
    last_logits = jnp.where(done[:, None], last_logits, out.logits[:, -1])
    lengths = lengths + (~done).astype(jnp.int32)
    stop = jnp.any(tok[:, None] == stop_ids[None, :], axis=-1)
    done = done | stop | (lengths >= limit)
    return (i + 1, rng, out.cache, out.logits[:, -1], last_logits, tokens, logprob, value, done,
            lengths)

  def cond(state):
    return (state[0] < max_len) & ~jnp.all(state[8])

  init = (jnp.int32(0), rng, cache, first_logits, first_logits,
          jnp.full((r, max_len), pad_id, jnp.int32),
          jnp.zeros((r,), jnp.float32), jnp.zeros((r,), jnp.float32), limit <= 0,
          jnp.zeros((r,), jnp.int32))
  steps, _, cache, _, last_logits, tokens, logprob, value, _, lengths = jax.lax.while_loop(
      cond, body, init)
  return OptionSample(tokens=tokens, lengths=lengths, logprob=logprob, last_value=value,
                      last_logits=last_logits, cache=cache, steps=steps)


def option_is_terminal(tokens: Int[Array, "... O"], lengths: Int[Array, "..."], eos_id: int,
                       answer_prefix_ids: Int[Array, "Q"] | None = None) -> Bool[Array, "..."]:
  """Whether an option ends a solution: it ends with EOS or is the answer line.

  The answer line is an option starting with ``answer_prefix_ids`` (e.g. the
  ids of ``"A: "``). The completion length limit is checked by the caller.
  """
  last = jnp.take_along_axis(tokens, jnp.maximum(lengths - 1, 0)[..., None], axis=-1)[..., 0]
  terminal = (lengths > 0) & (last == eos_id)
  if answer_prefix_ids is not None and answer_prefix_ids.shape[0] > 0:
    q = answer_prefix_ids.shape[0]
    if q <= tokens.shape[-1]:
      starts = jnp.all(tokens[..., :q] == answer_prefix_ids, axis=-1) & (lengths >= q)
      terminal = terminal | starts
  return terminal


def edit_distance(a: Int[Array, "O"], len_a: Int[Array, ""], b: Int[Array, "O"],
                  len_b: Int[Array, ""]) -> Int[Array, ""]:
  """Levenshtein distance between ``a[:len_a]`` and ``b[:len_b]``.

  The dynamic programme runs row by row in a ``lax.scan``; within a row the
  insertion chain ``d[i][j] = min_k (t[k] + j - k)`` is a cumulative minimum,
  so each row is one vectorised step. ``O(O^2)`` work, ``O`` sequential steps.
  """
  o = a.shape[0]
  j = jnp.arange(o + 1, dtype=jnp.int32)

  def row(prev, i):
    cost = (a[i] != b).astype(jnp.int32)                                     # [O]
    t = jnp.minimum(prev[1:] + 1, prev[:-1] + cost)                           # [O]
    t = jnp.concatenate([(i + 1)[None], t])                                   # [O+1]
    cur = jax.lax.cummin(t - j) + j
    return cur, cur

  _, rows = jax.lax.scan(row, j, jnp.arange(o, dtype=jnp.int32))
  rows = jnp.concatenate([j[None], rows], axis=0)                             # [O+1, O+1]
  return rows[len_a, len_b]


def pairwise_edit_distance(tokens: Int[Array, "A O"], lengths: Int[Array, "A"]
                           ) -> Int[Array, "A A"]:
  """All pairwise edit distances among one node's candidates."""
  inner = jax.vmap(edit_distance, in_axes=(None, None, 0, 0))
  return jax.vmap(inner, in_axes=(0, 0, None, None))(tokens, lengths, tokens, lengths)


def identical(tokens: Int[Array, "A O"], lengths: Int[Array, "A"]) -> Bool[Array, "A A"]:
  """``[i, j]`` True where candidates i and j are the same token sequence."""
  same = jnp.all(tokens[:, None, :] == tokens[None, :, :], axis=-1)
  return same & (lengths[:, None] == lengths[None, :])


def merge_candidates(tokens: Int[Array, "A O"], lengths: Int[Array, "A"], valid: Bool[Array, "A"],
                     threshold: int | None) -> tuple[Bool[Array, "A"], Int[Array, "A"]]:
  """Greedy sibling merge. Returns ``(keep [A], multiplicity [A])``.

  Candidates are visited in index order; candidate j is kept unless an
  earlier kept candidate is "close" to it, in which case j is merged into the
  first such one (its multiplicity is added there). Close means identical
  when ``threshold is None`` (plain de-duplication, always applied so that
  the count prior sees multiplicities) and edit distance ``<= threshold``
  otherwise. Kept candidates are therefore pairwise farther apart than the
  threshold.
  """
  a = tokens.shape[0]
  if threshold is None:
    close = identical(tokens, lengths)
  else:
    close = pairwise_edit_distance(tokens, lengths) <= threshold
  idx = jnp.arange(a)

  def body(j, carry):
    keep, rep = carry
    earlier = keep & close[j] & (idx < j)
    has = jnp.any(earlier)
    keep = keep.at[j].set(valid[j] & ~has)
    rep = rep.at[j].set(jnp.where(has, jnp.argmax(earlier), j))
    return keep, rep

  keep, rep = jax.lax.fori_loop(0, a, body, (jnp.zeros((a,), bool), idx))
  counts = jax.ops.segment_sum(valid.astype(jnp.int32), rep, num_segments=a)
  return keep, jnp.where(keep, counts, 0)


def branching_factor(node_value: Float[Array, ""], candidate_values: Float[Array, "A"],
                     valid: Bool[Array, "A"], alpha: float, c_min: int, c_max: int
                     ) -> Int[Array, ""]:
  """n(s) = max(c_min, min(floor(alpha * I(s)) + 1, c_max)).

  I(s) = max_i |v([s, o_i]) - v(s)| over the sampled candidates ``valid``.
  """
  importance = jnp.max(jnp.where(valid, jnp.abs(candidate_values - node_value), 0.0))
  n = jnp.floor(alpha * importance).astype(jnp.int32) + 1
  return jnp.maximum(c_min, jnp.minimum(n, c_max))


def keep_first(keep: Bool[Array, "A"], n: Int[Array, ""]) -> Bool[Array, "A"]:
  """Keeps only the first ``n`` True entries of ``keep`` (in index order)."""
  rank = jnp.cumsum(keep.astype(jnp.int32)) - 1
  return keep & (rank < n)


def prior_logits(kind: str, keep: Bool[Array, "A"], counts: Int[Array, "A"],
                 logprob: Float[Array, "A"], lengths: Int[Array, "A"]) -> Float[Array, "A"]:
  """Prior logits over a node's sampled candidates; masked ones get MASKED_LOGIT.

  * ``"count"`` (Sampled MuZero): ``log(multiplicity)``, i.e. the empirical
    distribution of the samples, merged duplicates included. With sampling
    temperature 1 this is an unbiased estimate of the policy restricted to the
    sampled support.
  * ``"logprob"``: the length-normalised log-probability of the option under
    the (untempered) policy, ``sum log pi / length``.
  """
  if kind == "count":
    logits = jnp.log(jnp.maximum(counts, 1).astype(jnp.float32))
  elif kind == "logprob":
    logits = logprob / jnp.maximum(lengths, 1).astype(jnp.float32)
  else:
    raise ValueError(f"unknown prior {kind!r}; expected 'count' or 'logprob'")
  return jnp.where(keep, logits, MASKED_LOGIT)


def splice(base: Int[Array, "B C"], new: Int[Array, "B O"], at: Int[Array, "B"],
           pad_id: int = PAD_ID) -> Int[Array, "B C"]:
  """Writes ``new`` into ``base`` at ``at`` per row (truncated at ``C``).

  ``new`` is ``pad_id`` beyond its length, and ``base`` is ``pad_id`` beyond
  ``at``, so the result is the concatenation of the two token sequences.
  """
  c = base.shape[1]
  wide = jnp.concatenate([base, jnp.full(new.shape, pad_id, base.dtype)], axis=1)
  wide = jax.vmap(lambda row, n, i: jax.lax.dynamic_update_slice(row, n, (i,)))(wide, new, at)
  return wide[:, :c]
