"""The tree's pure functions (alphallm.search.tree_ops): selection rules, widening, closing."""

import jax.numpy as jnp
import numpy as np
import pytest

from alphallm.search import tree_ops
from alphallm.search.settings import (AdaptiveBranchingConfig, SearchConfig, WideningConfig)


def _tree(visits, value_sum, children, closed=None, exhausted=None):
  """A tree from per-node lists; parents / actions are derived from ``children``."""
  n = len(visits)
  children = np.asarray(children, np.int32)
  parents = np.full(n, -1, np.int32)
  actions = np.full(n, -1, np.int32)
  for p, row in enumerate(children):
    for a, c in enumerate(row):
      if c >= 0:
        parents[c], actions[c] = p, a
  return tree_ops.TreeState(
      visits=jnp.asarray(visits, jnp.int32), value_sum=jnp.asarray(value_sum, jnp.float32),
      parents=jnp.asarray(parents), action_from_parent=jnp.asarray(actions),
      children=jnp.asarray(children), num_children=jnp.asarray((children >= 0).sum(1), jnp.int32),
      closed=jnp.asarray(closed if closed is not None else [False] * n),
      exhausted=jnp.asarray(exhausted if exhausted is not None else [False] * n),
      next_node=jnp.int32(int((children >= 0).sum()) + 1))


def _stats(score, logprob=None, terminal=None):
  n = len(score)
  return tree_ops.NodeStats(
      score=jnp.asarray(score, jnp.float32),
      logprob=jnp.asarray(logprob if logprob is not None else [0.0] * n, jnp.float32),
      option_len=jnp.ones((n,), jnp.int32),
      terminal=jnp.asarray(terminal if terminal is not None else [False] * n))


NOISE = jnp.zeros((4,))


def test_uct_is_the_papers_formula():
  """Q + C sqrt(2 ln(N / n)), no prior: children 1 (Q 0.5, n 3) and 2 (Q 0.2, n 1), N 5."""
  cfg = SearchConfig(policy="uct", uct_c=1.0, num_actions=2)
  tree = _tree([5, 3, 1], [2.0, 1.5, 0.2], [[1, 2], [-1, -1], [-1, -1]])
  got = np.asarray(tree_ops.action_scores(cfg, tree, _stats([0.4, 0.5, 0.2]), 0, NOISE[:2]))
  want = [0.5 + np.sqrt(2 * np.log(5 / 3)), 0.2 + np.sqrt(2 * np.log(5 / 1))]
  np.testing.assert_allclose(got, want, rtol=1e-5)
  assert int(np.argmax(got)) == 1


def test_new_slot_is_offered_only_within_the_widening_cap():
  cfg = SearchConfig(policy="uct", num_actions=4, widening=WideningConfig(c=1.0, alpha=0.5))
  # The root has 1 child and 1 visit: ceil(sqrt(1)) = 1 child allowed, no new slot.
  tree = _tree([1, 1, 0, 0], [0.5, 0.5, 0, 0], [[1, -1, -1, -1]] + [[-1] * 4] * 3)
  s = _stats([0.5, 0.5, 0, 0])
  scores = np.asarray(tree_ops.action_scores(cfg, tree, s, 0, NOISE))
  assert scores[1] == tree_ops.NEG and scores[0] > tree_ops.NEG
  # At 4 visits ceil(sqrt(4)) = 2: slot 1 (the next empty one) is offered, first under UCT.
  tree = tree.replace(visits=tree.visits.at[0].set(4))
  scores = np.asarray(tree_ops.action_scores(cfg, tree, s, 0, NOISE))
  assert scores[1] == tree_ops.NEW_SLOT and scores[2] == tree_ops.NEG
  node, action, ok = tree_ops.select(cfg, tree, s, NOISE, max_depth=8)
  assert (int(node), int(action), bool(ok)) == (0, 1, True)


def test_closed_children_are_never_selected_and_closing_propagates():
  cfg = SearchConfig(policy="puct", num_actions=2, dirichlet_fraction=0.0,
                     widening=WideningConfig(c=1.0, alpha=0.0))  # one child per node
  # root -> 1 (terminal, closed). The root has a free action slot (num_actions=2), so it
  # stays open: it closes only when it can get no more children (commit 719e8b7).
  tree = _tree([2, 1], [1.0, 1.0], [[1, -1], [-1, -1]])
  s = _stats([0.0, 1.0], terminal=[False, True])
  tree = tree_ops.backup(cfg, tree, s, jnp.int32(1), jnp.float32(0.0), jnp.bool_(False))
  assert bool(tree.closed[1]) and not bool(tree.closed[0])
  # A closed tree draws no simulation.
  tree = _tree([2, 1], [1.0, 1.0], [[1, -1], [-1, -1]], closed=[True, True])
  _, _, ok = tree_ops.select(cfg, tree, s, NOISE[:2], max_depth=4)
  assert not bool(ok)
  # An open sibling is selected instead of the closed one.
  cfg2 = SearchConfig(policy="puct", num_actions=2, dirichlet_fraction=0.0,
                      widening=WideningConfig(c=2.0, alpha=0.0))
  tree = _tree([3, 1, 1], [1.0, 1.0, 0.0], [[1, 2], [-1, -1], [-1, -1]],
               closed=[False, True, False])
  s = _stats([0.0, 1.0, 0.0], terminal=[False, True, False])
  node, action, ok = tree_ops.select(cfg2, tree, s, NOISE[:2], max_depth=4)
  assert bool(ok) and int(node) == 2         # descends into the open child 2


def test_backup_adds_the_value_along_the_path():
  cfg = SearchConfig(policy="uct", num_actions=2)
  tree = _tree([2, 1, 0], [0.2, 0.1, 0.0], [[1, -1], [2, -1], [-1, -1]])
  s = _stats([0.2, 0.1, 0.9])
  tree = tree_ops.backup(cfg, tree, s, jnp.int32(2), jnp.float32(0.9), jnp.bool_(True))
  np.testing.assert_array_equal(tree.visits, [3, 2, 1])
  np.testing.assert_allclose(tree.value_sum, [1.1, 1.0, 0.9], rtol=1e-6)


@pytest.mark.parametrize("importance,want", [(0.03, 2), (0.35, 4), (0.95, 10), (2.5, 10)])
def test_child_cap_worked_numbers(importance, want):
  """n(s) = max(c_min, min(floor(alpha I / unit) + 1, c_max)), the settings module's numbers."""
  ab = AdaptiveBranchingConfig(enabled=True, alpha=1.0, importance_unit=0.1, c_min_root=2,
                               c_max_root=10, c_min=2, c_max=10)
  cfg = SearchConfig(adaptive_branching=ab, num_actions=10)
  n = 12
  children = np.full((n, 10), -1)
  children[1, 0] = 2                         # node 1 has one child, node 2
  tree = _tree([1] * n, [0.0] * n, children)
  score = [0.0] * n
  score[1], score[2] = 0.5, 0.5 + importance
  assert int(tree_ops.child_cap(cfg, tree, jnp.asarray(score), 1)) == want


def test_gumbel_and_puct_prefer_the_better_child():
  for policy in ("gumbel", "puct"):
    cfg = SearchConfig(policy=policy, num_actions=2, dirichlet_fraction=0.0,
                       widening=WideningConfig(c=1.0, alpha=0.0))
    # widening cap 1 < 2 children: no new slot; equal priors and visits, child 2 has higher Q.
    tree = _tree([5, 2, 2], [1.0, 0.2, 1.6], [[1, 2], [-1, -1], [-1, -1]])
    s = _stats([0.0, 0.1, 0.8], logprob=[0.0, np.log(0.4), np.log(0.4)])
    scores = np.asarray(tree_ops.action_scores(cfg, tree, s, 0, NOISE[:2]))
    assert scores[1] > scores[0], policy
