"""The eta-MCTS loop: one jitted function over B problems, one new node per simulation.

``build(spec) -> search(params, prompt, prompt_mask, rng, critic_params=None,
rollout_params=None) -> SearchOutput``. Each simulation (a ``lax.fori_loop``
step, no Python per node):

1. selection (``tree_ops.select``): UCT / PUCT / Gumbel down to a slot with
   no child, under progressive widening and adaptive branching; closed
   (finished or exhausted) subtrees are never entered;
2. expansion (``expansion.propose_*``): the new child's option is sampled
   then, from the parent's KV cache, resampled while it repeats a sibling;
   the sampled option's keys/values become the child's path KV;
3. evaluation (``expansion.evaluate``, ``rollouts``): critic slots, node
   score, optional fast rollouts (the best kept as an answer candidate);
4. backup (``tree_ops.backup``): the score along the path, closed flags.

After the simulations, ``rollouts.complete_leaves`` samples completions from
the best unfinished leaves until the tree has ``min_solutions`` finished
solutions. The prompt's KV is computed once; a node stores only its path.
"""

from __future__ import annotations

import collections

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import mctx

from alphallm import model as model_lib
from alphallm.search import expansion
from alphallm.search import nodes as nodes_lib
from alphallm.search import options as opt_lib
from alphallm.search import rollouts as rollouts_lib
from alphallm.search import tree_ops
from alphallm.search.settings import SearchConfig

_TRACES: collections.Counter = collections.Counter()


def count_trace(cfg: SearchConfig) -> None:
  """Called once per trace of a search function of ``cfg``."""
  _TRACES[cfg] += 1


def num_traces(search_config: Any = None) -> int:
  """How many times search functions (of ``search_config``, or any) have been traced."""
  if search_config is None:
    return sum(_TRACES.values())
  return _TRACES[SearchConfig.from_config(search_config)]


@dataclasses.dataclass(frozen=True)
class SearchSpec:
  """Everything ``build`` closes over (hashable: one compiled search per spec)."""

  model_config: Any
  cfg: SearchConfig
  eos_id: int
  delimiter_ids: tuple
  critics: nodes_lib.Critics
  answer_prefix_ids: tuple | None
  rollout_model_config: Any
  pad_id: int
  bos_id: int
  banned: tuple
  same_step_ignored_ids: tuple = ()


def _gather(x, rows, idx):
  return None if x is None else x[rows, idx]


def _write(full, new, rows, idx, ok):
  """``full[rows, idx] = new`` where ``ok`` (per row)."""
  if full is None:
    return None
  old = full[rows, idx]
  okb = ok.reshape((ok.shape[0],) + (1,) * (new.ndim - 1))
  return full.at[rows, idx].set(jnp.where(okb, new.astype(full.dtype), old))


def empty_embeddings(spec: SearchSpec, b: int, dtype) -> nodes_lib.NodeEmbedding:
  """``[B, N, ...]`` zeros (tokens ``pad_id``), every slot absorbing."""
  cfg, mc = spec.cfg, spec.model_config
  n, a, o, c = cfg.num_nodes, cfg.tree_actions, cfg.option_len, cfg.max_completion_len
  kv = None if cfg.recompute_prefix else jnp.zeros(
      (b, n, mc.num_layers, c, mc.num_kv_heads, mc.head_dim), dtype)
  f = lambda *s: jnp.zeros((b, n) + s, jnp.float32)  # noqa: E731
  i = lambda *s: jnp.zeros((b, n) + s, jnp.int32)  # noqa: E731
  z = lambda *s: jnp.zeros((b, n) + s, bool)  # noqa: E731
  return nodes_lib.NodeEmbedding(
      path_k=kv, path_v=kv, tokens=jnp.full((b, n, c), spec.pad_id, jnp.int32), length=i(),
      option=jnp.full((b, n, o), spec.pad_id, jnp.int32), option_len=i(), logprob=f(),
      next_logits=f(mc.vocab_size), cand_tokens=jnp.full((b, n, a, o), spec.pad_id, jnp.int32),
      cand_len=i(a), cand_value=f(a), child_valid=z(a), terminal=z(), has_answer=z(),
      absorbing=jnp.ones((b, n), bool), depth=i(), value=f(), prm=f(), orm=f(), has_orm=z(),
      score=f(), forward_passes=f(), gen_tokens=f(), fast_rollouts=f(),
      rollout_tokens=jnp.full((b, n, c), spec.pad_id, jnp.int32), rollout_len=i(),
      rollout_orm=f(), rollout_finished=z(), model_calls=i())


def _node_stats(emb: nodes_lib.NodeEmbedding) -> tree_ops.NodeStats:
  return tree_ops.NodeStats(score=emb.score, logprob=emb.logprob, option_len=emb.option_len,
                            terminal=emb.terminal)


def root_noise(cfg: SearchConfig, rng, b: int) -> jax.Array:
  """``[B, A]`` the root's exploration noise: Gumbel(0, 1) x scale, Dirichlet, or 0."""
  a = cfg.tree_actions
  if cfg.policy == "gumbel":
    return cfg.gumbel_scale * jax.random.gumbel(rng, (b, a))
  if cfg.policy == "puct" and cfg.dirichlet_fraction > 0:
    return jax.random.dirichlet(rng, jnp.full((a,), cfg.dirichlet_alpha), shape=(b,))
  return jnp.zeros((b, a))


def finalize_tree(tree: tree_ops.TreeState, emb: nodes_lib.NodeEmbedding) -> mctx.Tree:
  """The batched ``TreeState`` + embeddings as an ``mctx.Tree`` (children's options filled)."""
  b, n, a = tree.children.shape
  kids = tree.children
  safe = jnp.maximum(kids, 0)
  has = kids >= 0
  rows = jnp.arange(b)[:, None, None]
  emb = emb.replace(
      cand_tokens=jnp.where(has[..., None], emb.option[rows, safe], emb.cand_tokens),
      cand_len=jnp.where(has, emb.option_len[rows, safe], 0),
      cand_value=jnp.where(has, emb.score[rows, safe], 0.0), child_valid=has,
      absorbing=jnp.arange(n)[None, :] >= tree.next_node[:, None])
  node_values = tree.value_sum / jnp.maximum(tree.visits, 1)
  return mctx.Tree(
      node_visits=tree.visits, raw_values=emb.score, node_values=node_values,
      parents=tree.parents, action_from_parent=tree.action_from_parent, children_index=kids,
      children_prior_logits=jnp.where(has, emb.logprob[rows, safe], opt_lib.MASKED_LOGIT),
      children_visits=jnp.where(has, tree.visits[rows, safe], 0),
      children_rewards=jnp.zeros((b, n, a)), children_discounts=jnp.ones((b, n, a)),
      children_values=jnp.where(has, node_values[rows, safe], 0.0), embeddings=emb,
      root_invalid_actions=(~has[:, 0]).astype(jnp.float32), extra_data=None)


def tree_stats(cfg: SearchConfig, tree: tree_ops.TreeState, emb: nodes_lib.NodeEmbedding,
               wasted) -> nodes_lib.TreeStats:
  """``TreeStats`` of a finished batched tree (``wasted``: simulations adding no node)."""
  n = tree.visits.shape[1]
  real = jnp.arange(n)[None, :] < tree.next_node[:, None]
  interior = real & (jnp.arange(n)[None, :] > 0) & (tree.num_children > 0)
  n_int = interior.sum(axis=1)
  per_int = jnp.where(interior, tree.num_children, 0).sum(axis=1) / jnp.maximum(n_int, 1)
  finished = (real & emb.terminal & emb.has_answer).sum(axis=1)
  return nodes_lib.TreeStats(
      real_nodes=tree.next_node.astype(jnp.float32),
      distinct_root=tree.num_children[:, 0].astype(jnp.float32),
      children_per_interior=per_int.astype(jnp.float32),
      revisit_fraction=wasted.astype(jnp.float32) / cfg.num_simulations,
      finished=finished.astype(jnp.float32),
      max_depth=jnp.max(jnp.where(real, emb.depth, 0), axis=1).astype(jnp.float32))


def build(spec: SearchSpec) -> Callable[..., nodes_lib.SearchOutput]:
  """The jitted search of ``spec`` (see the module doc)."""
  cfg, mc = spec.cfg, spec.model_config
  c, o, a = cfg.max_completion_len, cfg.option_len, cfg.tree_actions
  token_level = cfg.granularity == "token"
  model = model_lib.Transformer(mc)
  stop_ids = jnp.asarray(sorted(set(spec.delimiter_ids) | {spec.eos_id}), jnp.int32)
  answer_ids = (None if spec.answer_prefix_ids is None or token_level
                else jnp.asarray(spec.answer_prefix_ids, jnp.int32))
  ignored = jnp.asarray(spec.same_step_ignored_ids if cfg.merge.enabled else (), jnp.int32)
  select = jax.vmap(functools.partial(tree_ops.select, cfg, max_depth=c + 1))
  add_child = jax.vmap(tree_ops.add_child)
  mark = jax.vmap(tree_ops.mark_exhausted)
  backup = jax.vmap(functools.partial(tree_ops.backup, cfg))
  critics = spec.critics
  roll = rollouts_lib.Rollouts.make(spec)

  def evaluate(prompt, prompt_mask, critic_params, tokens, length, value, terminal, failed,
               active):
    return expansion.evaluate(cfg.weights, critics, critic_params, nodes_lib.node_score,
                              prompt, prompt_mask, tokens, length, value, terminal, failed,
                              active)

  def search(params, prompt, prompt_mask, rng, critic_params=None, rollout_params=None):
    count_trace(cfg)
    b, p = prompt.shape
    critic_params = params if critic_params is None else critic_params
    rollout_params = params if rollout_params is None else rollout_params
    prompt_len = prompt_mask.sum(axis=1).astype(jnp.int32)
    rows = jnp.arange(b)
    pre = model.apply({"params": params}, prompt, model_lib.default_positions(prompt_mask),
                      prompt_mask, model_lib.KVCache.init(mc, b, p), jnp.zeros((b,), jnp.int32))
    prompt_k, prompt_v = pre.cache.k, pre.cache.v                              # [L, B, P, K, H]
    rstate = roll.prefill(rollout_params, prompt, prompt_mask)
    zero = jnp.zeros((b,), jnp.int32)
    no = jnp.zeros((b,), bool)
    empty = jnp.full((b, c), spec.pad_id, jnp.int32)
    ev0 = evaluate(prompt, prompt_mask, critic_params, empty, zero, pre.values[:, -1], no, no,
                   jnp.ones((b,), bool))
    emb = empty_embeddings(spec, b, prompt_k.dtype)
    emb = emb.replace(
        next_logits=emb.next_logits.at[:, 0].set(pre.logits[:, -1]),
        value=emb.value.at[:, 0].set(ev0.value), prm=emb.prm.at[:, 0].set(ev0.prm),
        score=emb.score.at[:, 0].set(ev0.score), absorbing=emb.absorbing.at[:, 0].set(False),
        forward_passes=emb.forward_passes.at[:, 0].set(1.0 + ev0.critic_tokens))
    tree = jax.vmap(tree_ops.init_tree, in_axes=(None, None, 0))(cfg.num_nodes, a, ev0.score)
    rng, noise_rng = jax.random.split(rng)
    noise = root_noise(cfg, noise_rng, b)
    acc = dict(policy=prompt_len.astype(jnp.float32), gen=jnp.zeros((b,)),
               fwd=1.0 + ev0.critic_tokens, critic=ev0.critic_tokens,
               rollout=jnp.zeros((b,)), wasted=zero, calls=jnp.int32(1 + ev0.calls))

    def simulate(i, carry):
      tree, emb, acc, rng = carry
      rng, prop_rng, roll_rng = jax.random.split(jax.random.fold_in(rng, i), 3)
      node, action, ok = select(tree, _node_stats(emb), noise)
      par_len, par_tokens = emb.length[rows, node], emb.tokens[rows, node]
      first_logits = emb.next_logits[rows, node]
      extra_policy = jnp.zeros((b,))
      if cfg.recompute_prefix:
        seq, mask = expansion.full_sequences(prompt, prompt_mask, par_tokens, par_len)
        cache = model.apply({"params": params}, seq, model_lib.default_positions(mask), mask,
                            model_lib.KVCache.init(mc, b, p + c + o), zero).cache
        extra_policy = (prompt_len + par_len).astype(jnp.float32) * ok
      else:
        cache = opt_lib.build_cache(
            prompt_k, prompt_v, prompt_mask, jnp.moveaxis(emb.path_k[rows, node], 0, 1),
            jnp.moveaxis(emb.path_v[rows, node], 0, 1), par_len, c, o)
      kids = tree.children[rows, node]
      safe = jnp.maximum(kids, 0)
      if token_level:
        prop = expansion.propose_tokens(
            mc, params, cache, first_logits, action, p + par_len, prompt_len + par_len,
            ok & (par_len < c), num_slots=a, banned=spec.banned, pad_id=spec.pad_id)
      else:
        prop = expansion.propose_options(
            mc, params, cache, first_logits, p + par_len, prompt_len + par_len,
            jnp.where(ok, jnp.minimum(c - par_len, o), 0), stop_ids,
            emb.option[rows[:, None], safe], emb.option_len[rows[:, None], safe], kids >= 0, ok,
            prop_rng, max_len=o, temperature=cfg.temperature, tries=cfg.resample_tries,
            ignored=ignored, pad_id=spec.pad_id)
      new = prop.ok
      child_tokens = opt_lib.splice(par_tokens, prop.tokens, par_len, spec.pad_id)
      child_len = par_len + prop.lengths
      ends = opt_lib.option_is_terminal(prop.tokens, prop.lengths, spec.eos_id, answer_ids)
      terminal = (ends | (child_len >= c)) & new
      # Finished with an answer: the answer line when the task has one (an EOS
      # without it, or the completion limit, is a failure: score 0), else EOS.
      answered = ends if answer_ids is None else opt_lib.option_is_terminal(
          prop.tokens, prop.lengths, -1, answer_ids)
      failed = terminal & ~answered
      ev = evaluate(prompt, prompt_mask, critic_params, child_tokens, child_len, prop.value,
                    terminal, failed, new)
      child_k = None if cfg.recompute_prefix else jnp.moveaxis(prop.cache.k[:, :, p:p + c], 1, 0)
      child_v = None if cfg.recompute_prefix else jnp.moveaxis(prop.cache.v[:, :, p:p + c], 1, 0)
      rl = roll.run(params, rollout_params, critic_params, rstate, roll_rng, prompt,
                    prompt_mask, prop.cache, prop.next_logits, child_tokens, child_len,
                    new & ~terminal)
      orm = jnp.where(rl.active, rl.mean_orm, ev.orm)
      has_orm = ev.has_orm | rl.active
      score = jnp.where(failed, 0.0,
                        nodes_lib.node_score(cfg.weights, ev.value, ev.prm, orm, has_orm))
      fwd = (prop.sampled_tokens + extra_policy + ev.critic_tokens + rl.policy_tokens
             + rl.critic_tokens + rl.rollout_tokens)
      cidx = tree.next_node
      node_emb = dict(
          path_k=child_k, path_v=child_v, tokens=child_tokens, length=child_len,
          option=prop.tokens, option_len=prop.lengths, logprob=prop.logprob,
          next_logits=prop.next_logits, terminal=terminal, has_answer=answered & new,
          absorbing=~new, depth=emb.depth[rows, node] + 1, value=ev.value, prm=ev.prm, orm=orm,
          has_orm=has_orm, score=score, forward_passes=fwd,
          gen_tokens=prop.sampled_tokens + rl.gen_tokens,
          fast_rollouts=jnp.where(rl.active, float(cfg.rollout.num_rollouts), 0.0),
          rollout_tokens=rl.best_tokens, rollout_len=rl.best_len, rollout_orm=rl.best_orm,
          rollout_finished=rl.best_finished,
          model_calls=jnp.full((b,), prop.steps + ev.calls + rl.calls, jnp.int32))
      emb = emb.replace(**{k: _write(getattr(emb, k), v, rows, cidx, new)
                           for k, v in node_emb.items()})
      tree, _ = add_child(tree, node, action, new)
      tree = mark(tree, node, ok & ~new)
      tree = backup(tree, _node_stats(emb), jnp.where(new, cidx, node), score, new)
      acc = dict(policy=acc["policy"] + prop.sampled_tokens + extra_policy + rl.policy_tokens,
                 gen=acc["gen"] + prop.sampled_tokens + rl.gen_tokens, fwd=acc["fwd"] + fwd,
                 critic=acc["critic"] + ev.critic_tokens + rl.critic_tokens,
                 rollout=acc["rollout"] + rl.rollout_tokens,
                 wasted=acc["wasted"] + (~new).astype(jnp.int32),
                 calls=acc["calls"] + prop.steps + ev.calls + rl.calls)
      return tree, emb, acc, rng

    tree, emb, acc, rng = jax.lax.fori_loop(0, cfg.num_simulations, simulate,
                                            (tree, emb, acc, rng))
    if cfg.min_solutions > 0:
      emb, extra = roll.complete_leaves(params, critic_params, rng, prompt, prompt_mask,
                                        prompt_k, prompt_v, tree, emb)
      acc = dict(acc, policy=acc["policy"] + extra["policy"], gen=acc["gen"] + extra["policy"],
                 fwd=acc["fwd"] + extra["policy"] + extra["critic"],
                 critic=acc["critic"] + extra["critic"], calls=acc["calls"] + extra["calls"])
    out_tree = finalize_tree(tree, emb)
    visits = out_tree.children_visits[:, 0].astype(jnp.float32)
    weights = visits / jnp.maximum(visits.sum(axis=1, keepdims=True), 1.0)
    return nodes_lib.SearchOutput(
        tree=out_tree, action=jnp.argmax(visits, axis=1).astype(jnp.int32),
        action_weights=weights, prompt=prompt, prompt_mask=prompt_mask,
        forward_passes=acc["fwd"], tokens=acc["gen"],
        rollouts=(tree.next_node - 1).astype(jnp.float32),
        fast_rollouts=jnp.sum(out_tree.embeddings.fast_rollouts, axis=1),
        model_calls=acc["calls"], policy_tokens=acc["policy"],
        critic_tokens={"critics": acc["critic"]}, rollout_tokens=acc["rollout"],
        stats=tree_stats(cfg, tree, out_tree.embeddings, acc["wasted"]))

  return jax.jit(search)
