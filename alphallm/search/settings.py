"""The search's settings: one frozen, hashable struct (a static jit argument).

``SearchConfig`` holds every knob of eta-MCTS; ``default_search_config()``
is its ConfigDict form with task-agnostic defaults. Sub-structs group the
paper's components (adaptive branching, state merge, fast rollouts, node
score weights) and the on-demand expansion (progressive widening).

Worked numbers for the child-count formula (``AdaptiveBranchingConfig``),
critics in [0, 1], ``importance_unit = 0.1``, ``alpha = 1``, ``c_min = 2``,
``c_max = 10``: I(s) = 0.03 gives floor(0.3) + 1 = 1 -> max(2, 1) = 2 children;
I(s) = 0.35 gives floor(3.5) + 1 = 4; I(s) = 0.95 gives floor(9.5) + 1 = 10
(the cap). With ``importance_unit = 1`` the formula is the paper's as printed,
which for a [0, 1] critic always gives 1 child (I < 1), i.e. c_min.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections


@dataclasses.dataclass(frozen=True)
class AdaptiveBranchingConfig:
  """n(s) = max(c_min(t), min(floor(alpha * I(s) / importance_unit) + 1, c_max(t))).

  t = 0 is the root. I(s) = max_i |s(child_i) - s(s)| over the children
  expanded so far, where s is the node score the search uses (its critics).
  Children are sampled on demand, so n(s) caps how many are ever drawn; no
  candidate is sampled and then discarded.
  """

  enabled: bool = False
  alpha: float = 1.0
  importance_unit: float = 0.1   # importance per extra child (1.0: the paper as printed)
  c_min_root: int = 2
  c_max_root: int = 4
  c_min: int = 1
  c_max: int = 4


@dataclasses.dataclass(frozen=True)
class MergeConfig:
  """State merge: a new option that is the same step as a sibling is resampled.

  Always on for identical token sequences. With ``enabled`` the task's
  same-step hook (``Task.same_step_ignored``: characters that do not change a
  step, e.g. spaces) also makes steps that differ only in those characters
  the same step. Steps with different text (e.g. ``7*8=56`` / ``7*8=54``) are
  never merged. ``threshold`` is kept for configs written for the old
  edit-distance merge and is not used.
  """

  enabled: bool = False
  threshold: int = 2


@dataclasses.dataclass(frozen=True)
class RolloutConfig:
  """Fast rollouts from each new non-terminal node, scored by the ORM.

  The best rollout of each node (highest ORM) is kept as an answer candidate.
  """

  enabled: bool = False
  num_rollouts: int = 4
  max_len: int = 32
  temperature: float = 1.0


@dataclasses.dataclass(frozen=True)
class WeightsConfig:
  """Weights of the node score ``s`` (value, PRM, mean ORM of rollouts); paper: all 1."""

  value: float = 1.0
  prm: float = 1.0
  orm: float = 1.0


@dataclasses.dataclass(frozen=True)
class WideningConfig:
  """Progressive widening: a node with N visits may have ceil(c * N^alpha) children.

  A node never has fewer than c_min (adaptive branching) children allowed,
  nor more than n(s) / the action dimension. A node whose children are all
  finished or exhausted may always widen (up to n(s)).
  """

  c: float = 1.0       # children allowed at N visits: ceil(c * N ** alpha)
  alpha: float = 0.5   # widening exponent (0: c children; 1: one per visit)


POLICIES = ("gumbel", "puct", "uct")
GRANULARITIES = ("option", "token")
PRIORS = ("count", "logprob")
ANSWER_SELECTIONS = ("most_visited", "best_leaf", "orm_rerank", "orm_vote")


@dataclasses.dataclass(frozen=True)
class SearchConfig:
  """Every knob of the search; frozen and hashable (a static jit argument).

  See ``default_search_config`` for the meaning of each field.
  """

  policy: str = "gumbel"
  granularity: str = "option"
  num_simulations: int = 16
  num_actions: int = 4
  max_option_len: int = 16
  max_completion_len: int = 64
  temperature: float = 1.0
  prior: str = "count"
  gumbel_scale: float = 1.0
  max_num_considered_actions: int = 16
  pb_c_init: float = 1.0
  pb_c_base: float = 19652.0
  dirichlet_fraction: float = 0.25
  dirichlet_alpha: float = 0.3
  uct_c: float = 1.0
  resample_tries: int = 4
  min_solutions: int = 0
  recompute_prefix: bool = False
  adaptive_branching: AdaptiveBranchingConfig = AdaptiveBranchingConfig()
  merge: MergeConfig = MergeConfig()
  rollout: RolloutConfig = RolloutConfig()
  weights: WeightsConfig = WeightsConfig()
  widening: WideningConfig = WideningConfig()
  answer_selection: str = "most_visited"

  def __post_init__(self):
    def check(ok, msg):
      if not ok:
        raise ValueError(f"SearchConfig: {msg}")
    check(self.policy in POLICIES, f"policy must be one of {POLICIES}, got {self.policy!r}")
    check(self.granularity in GRANULARITIES,
          f"granularity must be one of {GRANULARITIES}, got {self.granularity!r}")
    check(self.prior in PRIORS, f"prior must be one of {PRIORS}, got {self.prior!r}")
    check(self.answer_selection in ANSWER_SELECTIONS,
          f"answer_selection must be one of {ANSWER_SELECTIONS}, got {self.answer_selection!r}")
    for name in ("num_simulations", "num_actions", "max_option_len", "max_completion_len",
                 "max_num_considered_actions", "resample_tries"):
      check(isinstance(getattr(self, name), int) and getattr(self, name) >= 1,
            f"{name} must be a positive int, got {getattr(self, name)!r}")
    check(isinstance(self.min_solutions, int) and self.min_solutions >= 0,
          f"min_solutions must be an int >= 0, got {self.min_solutions!r}")
    check(self.temperature >= 0, f"temperature must be >= 0, got {self.temperature}")
    check(self.uct_c >= 0, f"uct_c must be >= 0, got {self.uct_c}")
    ab = self.adaptive_branching
    if ab.enabled:
      check(1 <= ab.c_min_root <= ab.c_max_root,
            f"need 1 <= c_min_root <= c_max_root, got {ab.c_min_root}, {ab.c_max_root}")
      check(1 <= ab.c_min <= ab.c_max, f"need 1 <= c_min <= c_max, got {ab.c_min}, {ab.c_max}")
      check(ab.alpha >= 0, f"adaptive_branching.alpha must be >= 0, got {ab.alpha}")
      check(ab.importance_unit > 0,
            f"adaptive_branching.importance_unit must be > 0, got {ab.importance_unit}")
    check(not (self.merge.enabled and self.granularity == "token"),
          "merge needs option granularity (top-k tokens are already distinct)")
    check(self.merge.threshold >= 0, f"merge.threshold must be >= 0, got {self.merge.threshold}")
    if self.rollout.enabled:
      check(self.rollout.num_rollouts >= 1 and self.rollout.max_len >= 1,
            "rollout.num_rollouts and rollout.max_len must be >= 1")
    w = self.weights
    check(min(w.value, w.prm, w.orm) >= 0, f"weights must be >= 0, got {w}")
    check(w.value + w.prm + w.orm > 0, "at least one weight must be positive")
    check(self.widening.c > 0 and self.widening.alpha >= 0,
          f"widening needs c > 0 and alpha >= 0, got {self.widening}")

  @property
  def option_len(self) -> int:
    """O: the token length of an action (1 at token level)."""
    return 1 if self.granularity == "token" else self.max_option_len

  @property
  def root_candidates(self) -> int:
    """Most children the root may get."""
    ab = self.adaptive_branching
    return ab.c_max_root if ab.enabled else self.num_actions

  @property
  def interior_candidates(self) -> int:
    """Most children a non-root node may get."""
    ab = self.adaptive_branching
    return ab.c_max if ab.enabled else self.num_actions

  @property
  def tree_actions(self) -> int:
    """A: the action dimension of the tree."""
    return max(self.root_candidates, self.interior_candidates)

  @property
  def num_nodes(self) -> int:
    """N: node slots (the root plus one per simulation)."""
    return self.num_simulations + 1

  @classmethod
  def from_config(cls, config: Any) -> "SearchConfig":
    """From a ConfigDict / mapping like ``default_search_config()`` (or a SearchConfig)."""
    if isinstance(config, SearchConfig):
      return config
    d = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else dict(config)
    nested = dict(adaptive_branching=AdaptiveBranchingConfig, merge=MergeConfig,
                  rollout=RolloutConfig, weights=WeightsConfig, widening=WideningConfig)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
      raise ValueError(f"unknown search config keys {unknown}; known: {sorted(known)}")
    for key, sub in nested.items():
      if key in d and not isinstance(d[key], sub):
        sub_known = {f.name for f in dataclasses.fields(sub)}
        bad = sorted(set(d[key]) - sub_known)
        if bad:
          raise ValueError(f"unknown keys {bad} in search config {key!r}; known: "
                           f"{sorted(sub_known)}")
        d[key] = sub(**dict(d[key]))
    return cls(**d)

  def to_config_dict(self) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dataclasses.asdict(self))


def default_search_config() -> ml_collections.ConfigDict:
  """All knobs of the search, with CPU-friendly, task-agnostic defaults.

  * ``policy``: "uct" (the paper's UCT as printed, ``Q + uct_c *
    sqrt(2 ln(N / n))``, no prior), "puct" (``Q + c(N) P sqrt(N) / (1 + n)``
    with ``pb_c_init``/``pb_c_base``) or "gumbel" (Gumbel MuZero's interior
    rule at every node, Gumbel noise on the root's prior; the action set
    grows, so there is no sequential halving). P: each expanded child's
    probability under the policy (``prior`` "count": the option's
    probability, i.e. its expected share of samples; "logprob": the
    length-normalised probability); the not-yet-sampled slot gets the
    remaining mass ``1 - sum`` of the children's option probabilities.
  * ``granularity``: "option" (an action is a reasoning step) or "token".
  * ``num_simulations``; ``num_actions``: most children per node (the tree's
    action dimension when adaptive branching is off).
  * ``max_option_len``: O, the longest option; ``max_completion_len``: C.
  * ``temperature``: sampling temperature of new options.
  * ``resample_tries``: draws per expansion to find an option that is not the
    same step as a sibling; when all are, the node is exhausted (no more
    children) and the simulation adds no node.
  * ``min_solutions``: finished solutions wanted per tree: after the
    simulations, the best unfinished leaves are completed by sampling until
    the tree holds that many (kept as answer candidates).
  * ``widening``: {c, alpha}: progressive widening (children <= ceil(c N^alpha)).
  * ``uct_c``: C of the paper's UCT.
  * ``gumbel_scale``; ``max_num_considered_actions`` (unused; kept for configs).
  * ``pb_c_init``, ``pb_c_base``; ``dirichlet_fraction``/``dirichlet_alpha``
    (PUCT root noise).
  * ``recompute_prefix``: re-encode the whole prefix at each expansion
    instead of reusing the path KV (for measuring the KV reuse gain).
  * ``adaptive_branching``: {enabled, alpha, importance_unit, c_min_root,
    c_max_root, c_min, c_max} (module doc: worked numbers).
  * ``merge``: {enabled, threshold}: same-step resampling (``MergeConfig``).
  * ``rollout``: {enabled, num_rollouts, max_len, temperature}.
  * ``weights``: {value, prm, orm}: the node score's weights (paper: all 1).
  * ``answer_selection``: "most_visited" | "best_leaf" | "orm_rerank" |
    "orm_vote" (see ``alphallm.search.selection``).
  """
  return SearchConfig().to_config_dict()
