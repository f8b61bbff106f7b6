"""Fast rollouts and leaf completion: full solutions sampled from tree nodes.

* ``Rollouts.run``: from each new non-terminal node, ``num_rollouts``
  completions (the policy, or a separate smaller rollout policy), each scored
  by the ORM slot; the mean is the node's ORM term and the best completion is
  kept as an answer candidate (``NodeEmbedding.rollout_*``).
* ``Rollouts.complete_leaves``: after the simulations, when a tree holds
  fewer than ``min_solutions`` finished solutions, its best-scored
  unfinished nodes are completed by sampling (kept the same way).

Completions never exceed the ``C`` completion slots, so a candidate is a
``[C]`` row like a node's tokens.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from alphallm import model as model_lib
from alphallm.search import expansion
from alphallm.search import nodes as nodes_lib
from alphallm.search import options as opt_lib


@flax.struct.dataclass
class RolloutResult:
  """Per node (``[B]``): the rollouts' mean ORM, the best one, and their cost."""

  active: Bool[Array, "B"]
  mean_orm: Float[Array, "B"]
  best_tokens: Int[Array, "B C"]
  best_len: Int[Array, "B"]
  best_orm: Float[Array, "B"]
  best_finished: Bool[Array, "B"]
  policy_tokens: Float[Array, "B"]
  rollout_tokens: Float[Array, "B"]
  critic_tokens: Float[Array, "B"]
  gen_tokens: Float[Array, "B"]
  calls: Any


@dataclasses.dataclass(frozen=True)
class Rollouts:
  """Rollout settings of one search (``make(spec)``)."""

  spec: Any
  enabled: bool
  orm_fn: Any
  separate: bool
  rollout_config: Any

  @classmethod
  def make(cls, spec) -> "Rollouts":
    cfg = spec.cfg
    enabled = cfg.rollout.enabled and cfg.weights.orm > 0
    separate = spec.rollout_model_config is not None
    orm_fn = spec.critics.orm
    if orm_fn is None and separate and enabled:
      orm_fn = nodes_lib.value_head_critic(spec.model_config)  # the rollout model has no critic
    return cls(spec, enabled, orm_fn, separate, spec.rollout_model_config or spec.model_config)

  def prefill(self, rollout_params, prompt, prompt_mask):
    """The rollout policy's prompt KV (only for a separate rollout policy)."""
    if not (self.enabled and self.separate):
      return None
    b, p = prompt.shape
    out = model_lib.Transformer(self.rollout_config).apply(
        {"params": rollout_params}, prompt, model_lib.default_positions(prompt_mask),
        prompt_mask, model_lib.KVCache.init(self.rollout_config, b, p), jnp.zeros((b,), jnp.int32))
    return out.cache

  def _none(self, b: int, c: int) -> RolloutResult:
    z = jnp.zeros((b,), jnp.float32)
    return RolloutResult(active=jnp.zeros((b,), bool), mean_orm=z,
                         best_tokens=jnp.full((b, c), self.spec.pad_id, jnp.int32),
                         best_len=jnp.zeros((b,), jnp.int32), best_orm=z,
                         best_finished=jnp.zeros((b,), bool), policy_tokens=z, rollout_tokens=z,
                         critic_tokens=z, gen_tokens=z, calls=0)

  def sample(self, model_config, params, critic_params, rng, prompt, prompt_mask, cache,
             logits, tokens, length, active, num: int, max_len: int, temperature: float):
    """``num`` completions per row from ``cache`` (prompt ++ ``tokens[:length]``), ORM-scored.

    Returns ``(best RolloutResult fields dict, orm [B, num], generated [B], critic [B], calls)``.
    """
    spec, c = self.spec, tokens.shape[1]
    b, p = prompt.shape
    rows = opt_lib.repeat_cache(cache, num)
    limit = jnp.repeat(jnp.where(active, jnp.minimum(max_len, c - length), 0), num)
    s = opt_lib.sample_options(
        model_config, params, rows, jnp.repeat(logits, num, axis=0),
        jnp.repeat(p + length, num), jnp.repeat(prompt_mask.sum(1) + length, num), limit,
        jnp.asarray([spec.eos_id], jnp.int32), rng, max_len=max_len, temperature=temperature,
        pad_id=spec.pad_id)
    comp = opt_lib.splice(jnp.repeat(tokens, num, axis=0), s.tokens[:, :c],
                          jnp.repeat(length, num), spec.pad_id)
    comp_len = jnp.repeat(length, num) + s.lengths
    calls = s.steps
    if self.orm_fn is None:
      orm = s.last_value
      critic = jnp.zeros((b,))
    else:
      seq, mask = expansion.full_sequences(jnp.repeat(prompt, num, axis=0),
                                           jnp.repeat(prompt_mask, num, axis=0), comp, comp_len)
      orm = self.orm_fn(critic_params, seq, mask)
      critic = (mask.sum(1).reshape(b, num).sum(1) * active).astype(jnp.float32)
      calls = calls + 1
    last = jnp.take_along_axis(comp, jnp.maximum(comp_len - 1, 0)[:, None], axis=1)[:, 0]
    finished = (last == spec.eos_id) & (s.lengths > 0)
    orm = orm.reshape(b, num)
    best = jnp.argmax(jnp.where(finished.reshape(b, num), orm, orm - 10.0), axis=1)
    pick = lambda x: x.reshape((b, num) + x.shape[1:])[jnp.arange(b), best]  # noqa: E731
    gen = (s.lengths.reshape(b, num).sum(1) * active).astype(jnp.float32)
    best_fields = dict(best_tokens=pick(comp), best_len=pick(comp_len), best_orm=pick(orm.reshape(-1)),
                       best_finished=pick(finished) & active)
    return best_fields, orm, gen, critic, calls

  def run(self, params, rollout_params, critic_params, rstate, rng, prompt, prompt_mask,
          cache: model_lib.KVCache, logits, tokens, length, active) -> RolloutResult:
    """Fast rollouts from B new nodes (``active``); see the module doc."""
    b, c = tokens.shape
    if not self.enabled:
      return self._none(b, c)
    rc = self.spec.cfg.rollout
    p = prompt.shape[1]
    extra_rollout = jnp.zeros((b,))
    if self.separate:
      rcache = opt_lib.build_cache(rstate.k, rstate.v, prompt_mask, None, None,
                                   jnp.zeros((b,), jnp.int32), c, rc.max_len)
      logits, _, rcache = opt_lib.encode(self.rollout_config, rollout_params, rcache, tokens,
                                         length, jnp.full((b,), p), prompt_mask.sum(1))
      extra_rollout = length.astype(jnp.float32) * active
      model_config, params_used = self.rollout_config, rollout_params
    else:
      rcache = cache
      model_config, params_used = self.spec.model_config, params
    best, orm, gen, critic, calls = self.sample(
        model_config, params_used, critic_params, rng, prompt, prompt_mask, rcache, logits,
        tokens, length, active, rc.num_rollouts, rc.max_len, rc.temperature)
    z = jnp.zeros((b,))
    return RolloutResult(
        active=active, mean_orm=orm.mean(axis=1), **best,
        policy_tokens=z if self.separate else gen,
        rollout_tokens=(gen + extra_rollout) if self.separate else z, critic_tokens=critic,
        gen_tokens=gen, calls=calls)

  def complete_leaves(self, params, critic_params, rng, prompt, prompt_mask, prompt_k, prompt_v,
                      tree, emb: nodes_lib.NodeEmbedding):
    """Completes the best unfinished nodes of trees short of ``min_solutions`` solutions.

    Per problem, ``deficit = min_solutions - finished`` (finished nodes and
    finished kept rollouts); the ``min_solutions`` best-scored real,
    non-terminal nodes without a finished rollout are candidates, the first
    ``deficit`` of them are completed (one sample each, the search's
    temperature), and the completion is stored as the node's rollout.
    Returns ``(emb, {"policy": [B], "critic": [B], "calls": []})``.
    """
    spec = self.spec
    cfg, mc = spec.cfg, spec.model_config
    b, n = emb.score.shape
    c, m = cfg.max_completion_len, min(cfg.min_solutions, n)
    real = jnp.arange(n)[None, :] < tree.next_node[:, None]
    finished = (real & emb.terminal & emb.has_answer).sum(1) + (real & emb.rollout_finished).sum(1)
    deficit = jnp.maximum(cfg.min_solutions - finished, 0)
    open_ = real & ~emb.terminal & ~emb.rollout_finished & (emb.length < c)
    _, pick = jax.lax.top_k(jnp.where(open_, emb.score, -1e9), m)             # [B, m]
    ok = (jnp.take_along_axis(open_, pick, axis=1)
          & (jnp.arange(m)[None, :] < deficit[:, None]))                      # [B, m]
    rows = jnp.arange(b)[:, None]
    flat = lambda x: x[rows, pick].reshape((b * m,) + x.shape[2:])  # noqa: E731
    length = flat(emb.length)
    rep = lambda x: jnp.repeat(x, m, axis=0)  # noqa: E731
    if cfg.recompute_prefix:
      seq, mask = expansion.full_sequences(rep(prompt), rep(prompt_mask), flat(emb.tokens), length)
      cache = model_lib.Transformer(mc).apply(
          {"params": params}, seq, model_lib.default_positions(mask), mask,
          model_lib.KVCache.init(mc, b * m, prompt.shape[1] + c), jnp.zeros((b * m,), jnp.int32)
      ).cache
    else:
      cache = opt_lib.build_cache(jnp.repeat(prompt_k, m, axis=1), jnp.repeat(prompt_v, m, axis=1),
                                  rep(prompt_mask), jnp.moveaxis(flat(emb.path_k), 0, 1),
                                  jnp.moveaxis(flat(emb.path_v), 0, 1), length, c, 0)
    best, orm, gen, critic, calls = self.sample(
        mc, params, critic_params, rng, rep(prompt), rep(prompt_mask), cache,
        flat(emb.next_logits), flat(emb.tokens), length, ok.reshape(-1), 1, c,
        cfg.temperature)
    okf = ok.reshape(-1)
    put = lambda full, new: full.at[rows, pick].set(  # noqa: E731
        jnp.where(ok.reshape((b, m) + (1,) * (new.ndim - 1)),
                  new.reshape((b, m) + new.shape[1:]), full[rows, pick]))
    emb = emb.replace(rollout_tokens=put(emb.rollout_tokens, best["best_tokens"]),
                      rollout_len=put(emb.rollout_len, best["best_len"]),
                      rollout_orm=put(emb.rollout_orm, best["best_orm"]),
                      rollout_finished=put(emb.rollout_finished, best["best_finished"] & okf))
    return emb, {"policy": (gen * okf).reshape(b, m).sum(1),
                 "critic": (critic * okf).reshape(b, m).sum(1), "calls": calls}
