"""The tree of one problem and the pure functions that select in it and back up.

mctx style: a fixed-size array tree (``TreeState``, one problem; the search
``vmap``s these functions over the batch) and small pure functions for the
phases of a simulation that need no model:

* ``select``: descend from the root by the configured rule (UCT as printed in
  the paper, PUCT, or Gumbel MuZero's interior rule) until the chosen action
  is a slot that has no child yet (an expansion) -- children are created on
  demand, one per simulation, under progressive widening and the adaptive
  branching cap ``child_cap``;
* ``add_child``: link a new node;
* ``backup``: add the leaf value along the path and recompute which nodes are
  closed (terminal, or every child closed and no more children allowed), so
  that a finished or exhausted subtree draws no more simulations.

Per-node arrays read here (``NodeStats``): the node score s (the critics'),
the option log-probability (the prior), the option length, terminal.

Axis letters: N nodes, A actions (child slots).
"""

from __future__ import annotations

import flax
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from alphallm.search.settings import SearchConfig

NEG = -1e9          # score of an action that cannot be selected
NEW_SLOT = 1e8      # UCT score of an unvisited (new) slot: expand first
MIN_REMAINING = 1e-3  # the new slot's prior never drops below this mass


@flax.struct.dataclass
class TreeState:
  """One problem's tree. ``-1`` marks no node."""

  visits: Int[Array, "N"]
  value_sum: Float[Array, "N"]
  parents: Int[Array, "N"]
  action_from_parent: Int[Array, "N"]
  children: Int[Array, "N A"]
  num_children: Int[Array, "N"]
  closed: Bool[Array, "N"]       # no simulation enters this subtree any more
  exhausted: Bool[Array, "N"]    # an expansion found no new step: no more children
  next_node: Int[Array, ""]


@flax.struct.dataclass
class NodeStats:
  """What selection reads per node (``[N]`` each)."""

  score: Float[Array, "N"]
  logprob: Float[Array, "N"]
  option_len: Int[Array, "N"]
  terminal: Bool[Array, "N"]


def init_tree(num_nodes: int, num_actions: int, root_value: Float[Array, ""]) -> TreeState:
  """A tree holding only the root (one visit, value ``root_value``)."""
  n, a = num_nodes, num_actions
  return TreeState(
      visits=jnp.zeros((n,), jnp.int32).at[0].set(1),
      value_sum=jnp.zeros((n,), jnp.float32).at[0].set(root_value),
      parents=jnp.full((n,), -1, jnp.int32), action_from_parent=jnp.full((n,), -1, jnp.int32),
      children=jnp.full((n, a), -1, jnp.int32), num_children=jnp.zeros((n,), jnp.int32),
      closed=jnp.zeros((n,), bool), exhausted=jnp.zeros((n,), bool), next_node=jnp.int32(1))


def _per_level(cfg: SearchConfig, is_root, root_value, value):
  return jnp.where(is_root, root_value, value)


def importance(tree: TreeState, score: Float[Array, "N"], node) -> Float[Array, ""]:
  """I(s) = max_i |s(child_i) - s(node)| over the expanded children (0 if none)."""
  kids = tree.children[node]
  has = kids >= 0
  diff = jnp.abs(score[jnp.maximum(kids, 0)] - score[node])
  return jnp.max(jnp.where(has, diff, 0.0))


def child_cap(cfg: SearchConfig, tree: TreeState, score: Float[Array, "N"], node
              ) -> Int[Array, ""]:
  """Most children ``node`` may ever get now: the slots, capped by n(s) when adaptive.

  n(s) = max(c_min(t), min(floor(alpha * I(s) / importance_unit) + 1, c_max(t)))
  with I(s) from the node score (``settings`` module doc: worked numbers).
  """
  is_root = node == 0
  slots = _per_level(cfg, is_root, cfg.root_candidates, cfg.interior_candidates)
  ab = cfg.adaptive_branching
  if not ab.enabled:
    return jnp.int32(slots) if isinstance(slots, int) else slots.astype(jnp.int32)
  c_min = _per_level(cfg, is_root, ab.c_min_root, ab.c_min)
  c_max = _per_level(cfg, is_root, ab.c_max_root, ab.c_max)
  n = jnp.floor(ab.alpha * importance(tree, score, node) / ab.importance_unit).astype(
      jnp.int32) + 1
  return jnp.minimum(jnp.maximum(c_min, jnp.minimum(n, c_max)), slots).astype(jnp.int32)


def widening_cap(cfg: SearchConfig, node_visits, node) -> Int[Array, ""]:
  """ceil(c * N^alpha) children at N visits, at least c_min (adaptive branching)."""
  w = cfg.widening
  pw = jnp.ceil(w.c * jnp.maximum(node_visits, 1).astype(jnp.float32) ** w.alpha - 1e-6)
  ab = cfg.adaptive_branching
  c_min = jnp.where(node == 0, ab.c_min_root, ab.c_min) if ab.enabled else 1
  return jnp.maximum(pw.astype(jnp.int32), c_min)


def may_widen(cfg: SearchConfig, tree: TreeState, stats: NodeStats, node) -> Bool[Array, ""]:
  """Whether selection may open a new child slot at ``node`` now."""
  k = tree.num_children[node]
  kids = tree.children[node]
  any_open = jnp.any((kids >= 0) & ~tree.closed[jnp.maximum(kids, 0)])
  can_ever = ~tree.exhausted[node] & (k < child_cap(cfg, tree, stats.score, node))
  return can_ever & ~stats.terminal[node] & ((k < widening_cap(cfg, tree.visits[node], node))
                                             | (k == 0) | ~any_open)


def node_closed(cfg: SearchConfig, tree: TreeState, stats: NodeStats, node) -> Bool[Array, ""]:
  """Terminal, or every child closed and no child may be added at the node's visits.

  A closed node gets no more visits, so its widening cap no longer grows: a
  node whose children are all finished once it has as many as its visits
  allow is finished (e.g. a step followed by its answer line does not keep
  drawing alternative answer lines). The root is exempt: it closes only when
  it can get no more children at all, so the search never stops early.
  """
  kids = tree.children[node]
  k = tree.num_children[node]
  all_closed = jnp.all((kids < 0) | tree.closed[jnp.maximum(kids, 0)])
  can_now = (~tree.exhausted[node] & (k < child_cap(cfg, tree, stats.score, node))
             & ((k < widening_cap(cfg, tree.visits[node], node)) | (k == 0) | (node == 0)))
  return stats.terminal[node] | (all_closed & ~can_now)


def child_priors(cfg: SearchConfig, tree: TreeState, stats: NodeStats, node, new_ok,
                 root_noise: Float[Array, "A"]) -> Float[Array, "A"]:
  """``[A]`` prior probabilities: expanded children, then the new slot's remaining mass.

  A child's mass is its option's probability (``prior`` "count") or its
  length-normalised probability ("logprob"); the new slot gets ``1 - sum``
  of the children's option probabilities (at least ``MIN_REMAINING``). PUCT
  mixes Dirichlet-like ``root_noise`` into the root's priors.
  """
  kids = tree.children[node]
  a = kids.shape[0]
  has = kids >= 0
  lp = stats.logprob[jnp.maximum(kids, 0)]
  raw = jnp.where(has, jnp.exp(lp), 0.0)
  if cfg.prior == "logprob":
    mass = jnp.where(has, jnp.exp(lp / jnp.maximum(stats.option_len[jnp.maximum(kids, 0)], 1)),
                     0.0)
  else:
    mass = raw
  remaining = jnp.maximum(1.0 - jnp.sum(raw), MIN_REMAINING)
  slot = jnp.arange(a) == tree.num_children[node]
  mass = jnp.where(slot & new_ok, remaining, mass)
  p = mass / jnp.maximum(jnp.sum(mass), 1e-30)
  if cfg.policy == "puct" and cfg.dirichlet_fraction > 0:
    f = cfg.dirichlet_fraction
    valid = has | (slot & new_ok)
    noise = jnp.where(valid, root_noise, 0.0)
    noise = noise / jnp.maximum(jnp.sum(noise), 1e-30)
    p = jnp.where(node == 0, (1 - f) * p + f * noise, p)
  return p


def action_scores(cfg: SearchConfig, tree: TreeState, stats: NodeStats, node,
                  root_noise: Float[Array, "A"]) -> Float[Array, "A"]:
  """``[A]`` selection scores at ``node``; ``NEG`` for slots that cannot be chosen.

  Choosable: expanded children that are not closed, and the next empty slot
  when ``may_widen``. Q of a child is its mean backed-up value; the new slot
  has no visits and Q = the node's own mean value.
  """
  kids = tree.children[node]
  a = kids.shape[0]
  safe = jnp.maximum(kids, 0)
  has = kids >= 0
  open_kid = has & ~tree.closed[safe]
  new_ok = may_widen(cfg, tree, stats, node)
  slot = (jnp.arange(a) == tree.num_children[node]) & new_ok
  valid = open_kid | slot
  n_parent = tree.visits[node].astype(jnp.float32)
  n_child = jnp.where(has, tree.visits[safe], 0).astype(jnp.float32)
  node_q = tree.value_sum[node] / jnp.maximum(n_parent, 1.0)
  q = jnp.where(has, tree.value_sum[safe] / jnp.maximum(n_child, 1.0), node_q)
  if cfg.policy == "uct":
    explore = cfg.uct_c * jnp.sqrt(2.0 * jnp.log(jnp.maximum(n_parent, 1.0)
                                                 / jnp.maximum(n_child, 1.0)))
    score = jnp.where(has, q + explore, NEW_SLOT)
  else:
    p = child_priors(cfg, tree, stats, node, new_ok, root_noise)
    if cfg.policy == "puct":
      pb_c = cfg.pb_c_init + jnp.log((n_parent + cfg.pb_c_base + 1.0) / cfg.pb_c_base)
      score = q + pb_c * p * jnp.sqrt(n_parent) / (1.0 + n_child)
    else:  # gumbel: mctx's interior rule, noise on the root's prior logits
      logits = jnp.log(jnp.maximum(p, 1e-30)) + jnp.where(node == 0, root_noise, 0.0)
      lo = jnp.min(jnp.where(valid, q, jnp.inf))
      hi = jnp.max(jnp.where(valid, q, -jnp.inf))
      qn = jnp.where(hi > lo, (q - lo) / jnp.maximum(hi - lo, 1e-9), 0.5)
      scale = (50.0 + jnp.max(n_child)) * 0.1
      probs = jax.nn.softmax(jnp.where(valid, logits + scale * qn, -jnp.inf))
      score = probs - n_child / (1.0 + jnp.sum(n_child))
  return jnp.where(valid, score, NEG)


def select(cfg: SearchConfig, tree: TreeState, stats: NodeStats, root_noise: Float[Array, "A"],
           max_depth: int) -> tuple[Int[Array, ""], Int[Array, ""], Bool[Array, ""]]:
  """``(node, action, ok)``: where to expand. ``ok`` False when the root is closed."""

  def cond(carry):
    _, _, done, depth = carry
    return ~done & (depth <= max_depth)

  def body(carry):
    node, _, _, depth = carry
    scores = action_scores(cfg, tree, stats, node, root_noise)
    a = jnp.argmax(scores).astype(jnp.int32)
    child = tree.children[node, a]
    stop = (child < 0) | (scores[a] <= NEG)
    return jnp.where(stop, node, child), a, stop, depth + 1

  node, action, _, _ = jax.lax.while_loop(
      cond, body, (jnp.int32(0), jnp.int32(0), jnp.bool_(False), jnp.int32(0)))
  scores = action_scores(cfg, tree, stats, node, root_noise)
  ok = (scores[action] > NEG) & (tree.children[node, action] < 0) & ~tree.closed[0]
  return node, action, ok


def add_child(tree: TreeState, parent, action, ok) -> tuple[TreeState, Int[Array, ""]]:
  """Links node ``tree.next_node`` under ``parent`` at ``action`` when ``ok``."""
  c = tree.next_node
  safe = jnp.where(ok, c, 0)
  tree = tree.replace(
      parents=tree.parents.at[safe].set(jnp.where(ok, parent, tree.parents[safe])),
      action_from_parent=tree.action_from_parent.at[safe].set(
          jnp.where(ok, action, tree.action_from_parent[safe])),
      children=tree.children.at[parent, action].set(
          jnp.where(ok, c, tree.children[parent, action])),
      num_children=tree.num_children.at[parent].add(ok.astype(jnp.int32)),
      next_node=c + ok.astype(jnp.int32))
  return tree, c


def mark_exhausted(tree: TreeState, node, failed) -> TreeState:
  """An expansion at ``node`` found no new step: it gets no more children."""
  return tree.replace(exhausted=tree.exhausted.at[node].set(tree.exhausted[node] | failed))


def backup(cfg: SearchConfig, tree: TreeState, stats: NodeStats, start, value, add_visit
           ) -> TreeState:
  """From ``start`` up to the root: add ``value`` (when ``add_visit``) and update ``closed``."""

  def cond(carry):
    node, _ = carry
    return node >= 0

  def body(carry):
    node, t = carry
    t = t.replace(visits=t.visits.at[node].add(add_visit.astype(jnp.int32)),
                  value_sum=t.value_sum.at[node].add(jnp.where(add_visit, value, 0.0)))
    t = t.replace(closed=t.closed.at[node].set(node_closed(cfg, t, stats, node)))
    return t.parents[node], t

  _, tree = jax.lax.while_loop(cond, body, (start, tree))
  return tree
