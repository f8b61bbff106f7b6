"""eta-MCTS: option-level (or token-level) tree search as one jitted function.

``make_search(...)`` builds ``search(params, prompt [B, P], prompt_mask [B, P],
rng) -> SearchOutput``: a batched Monte Carlo tree search over B problems on
top of ``mctx`` (Gumbel MuZero by default, PUCT optionally). There is no
Python per node or per simulation: mctx runs the simulations in a
``lax.fori_loop`` and every node expansion is a fixed-shape batched model call.

Actions. Option level (default): an action is one reasoning step, a token
sequence ended by a delimiter token, EOS, or ``max_option_len``. When a node is
created, ``A`` candidate options are sampled from the policy (``B * A`` rows
decoded incrementally) and kept in its embedding; action ``i`` continues with
candidate ``i``. Token level: an action is one of the node's top-k next tokens
(never PAD or BOS, see ``never_proposed``).

Memory. The prompt's KV cache ``[L, B, P, K, H]`` is computed once per problem
and closed over by the recurrent function; it is never stored per node. A node
embedding stores only its completion path: the keys/values of the generated
tokens ``[L, C, K, H]`` (``C = max_completion_len``), the tokens ``[C]`` and
their count, and its candidate options ``[A, O]``; so a node costs
``O(C)``, independent of the prompt length (``bytes_per_node``).

Expanding child ``i`` of node ``p`` concatenates the shared prompt KV with
``p``'s path KV into one cache (the model's own cache API), writes candidate
``i``'s tokens in one model call of ``O`` tokens (giving the child's value at
its last token), and then samples the child's candidates (``O`` decode steps
on ``B * A`` rows). With ``recompute_prefix`` the child's whole prefix
(prompt + path) is re-encoded instead; that mode exists to measure the gain
of KV reuse and stores no KV in the nodes.

Terminal nodes (EOS, an answer line, or the completion limit) get reward =
their score and discount 0; expanding a child of a terminal node returns an
absorbing dummy (reward 0, discount 0, value 0, the same embedding) that costs
nothing in the accounting. Non-terminal nodes get reward 0, discount 1 and
value = their score.

eta-MCTS features (each a config knob): importance-based adaptive branching,
state merge by edit distance, fast rollouts scored by the ORM, and the node
score ``s`` combining value, PRM and ORM (see ``node_score``).

Compute accounting per problem follows ``alphallm.decoding``: each node
records the forward passes and generated tokens it cost, and the search sums
them (``SearchOutput``):

* root: 1 (prompt prefill) + the tokens of its sampled candidates;
* a real expansion: the option's tokens re-encoded (``prompt_len +
  child_len`` with ``recompute_prefix``) + its candidates' tokens (one pass
  per decode step per row) + fast rollouts' tokens (+ the path re-encoded by a
  separate rollout policy) + tokens scored by external critics (a pluggable
  PRM / ORM re-encodes its input);
* an absorbing dummy: 0.

``tokens`` counts sampled candidate and rollout tokens (token level: the
node's one token). ``rollouts`` counts real expanded nodes (root excluded).

Axis letters: B problems, N nodes (``num_simulations + 1``), A actions per
node, O option length, C completion slots, P prompt slots, L layers, K kv
heads, H head dim, V vocabulary, R rows.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax
import jax
import jax.numpy as jnp
import mctx
import ml_collections
from jaxtyping import Array, Bool, Float, Int

from alphallm import model as model_lib
from alphallm.search import options as opt_lib
from alphallm.tokenizer import BOS_ID, PAD_ID

# ---------------------------------------------------------------------------
# Configuration.


@dataclasses.dataclass(frozen=True)
class AdaptiveBranchingConfig:
  """n(s) = max(c_min(t), min(floor(alpha * I(s)) + 1, c_max(t))); t = 0 is the root.

  When enabled, the root samples ``c_max_root`` candidates and other nodes
  ``c_max``; children beyond n(s) are masked.
  """

  enabled: bool = False
  alpha: float = 1.0
  c_min_root: int = 2
  c_max_root: int = 4
  c_min: int = 1
  c_max: int = 4


@dataclasses.dataclass(frozen=True)
class MergeConfig:
  """Siblings within edit distance ``threshold`` (tokens) are merged."""

  enabled: bool = False
  threshold: int = 2


@dataclasses.dataclass(frozen=True)
class RolloutConfig:
  """Fast rollouts from each new non-terminal node, scored by the ORM."""

  enabled: bool = False
  num_rollouts: int = 4
  max_len: int = 32
  temperature: float = 1.0


@dataclasses.dataclass(frozen=True)
class WeightsConfig:
  """Weights of the node score ``s`` (value head, PRM, mean ORM of rollouts)."""

  value: float = 1.0
  prm: float = 1.0
  orm: float = 1.0


POLICIES = ("gumbel", "puct")
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
  recompute_prefix: bool = False
  adaptive_branching: AdaptiveBranchingConfig = AdaptiveBranchingConfig()
  merge: MergeConfig = MergeConfig()
  rollout: RolloutConfig = RolloutConfig()
  weights: WeightsConfig = WeightsConfig()
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
                 "max_num_considered_actions"):
      check(isinstance(getattr(self, name), int) and getattr(self, name) >= 1,
            f"{name} must be a positive int, got {getattr(self, name)!r}")
    check(self.temperature >= 0, f"temperature must be >= 0, got {self.temperature}")
    ab = self.adaptive_branching
    if ab.enabled:
      check(1 <= ab.c_min_root <= ab.c_max_root,
            f"need 1 <= c_min_root <= c_max_root, got {ab.c_min_root}, {ab.c_max_root}")
      check(1 <= ab.c_min <= ab.c_max, f"need 1 <= c_min <= c_max, got {ab.c_min}, {ab.c_max}")
      check(ab.alpha >= 0, f"adaptive_branching.alpha must be >= 0, got {ab.alpha}")
    check(not (self.merge.enabled and self.granularity == "token"),
          "merge needs option granularity (top-k tokens are already distinct)")
    check(self.merge.threshold >= 0, f"merge.threshold must be >= 0, got {self.merge.threshold}")
    if self.rollout.enabled:
      check(self.rollout.num_rollouts >= 1 and self.rollout.max_len >= 1,
            "rollout.num_rollouts and rollout.max_len must be >= 1")
    w = self.weights
    check(min(w.value, w.prm, w.orm) >= 0, f"weights must be >= 0, got {w}")
    check(w.value + w.prm + w.orm > 0, "at least one weight must be positive")

  @property
  def option_len(self) -> int:
    """O: the token length of an action (1 at token level)."""
    return 1 if self.granularity == "token" else self.max_option_len

  @property
  def root_candidates(self) -> int:
    ab = self.adaptive_branching
    return ab.c_max_root if ab.enabled else self.num_actions

  @property
  def interior_candidates(self) -> int:
    ab = self.adaptive_branching
    return ab.c_max if ab.enabled else self.num_actions

  @property
  def tree_actions(self) -> int:
    """A: the action dimension of the mctx tree."""
    return max(self.root_candidates, self.interior_candidates)

  @classmethod
  def from_config(cls, config: Any) -> "SearchConfig":
    """From a ConfigDict / mapping like ``default_search_config()`` (or a SearchConfig)."""
    if isinstance(config, SearchConfig):
      return config
    d = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else dict(config)
    nested = dict(adaptive_branching=AdaptiveBranchingConfig, merge=MergeConfig,
                  rollout=RolloutConfig, weights=WeightsConfig)
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
  """All knobs of the search, with CPU-friendly defaults.

  * ``policy``: "gumbel" (Gumbel MuZero: sequential halving at the root) or
    "puct" (MuZero's PUCT with ``pb_c_init``/``pb_c_base`` and Dirichlet
    noise ``dirichlet_fraction``/``dirichlet_alpha`` at the root).
  * ``granularity``: "option" (an action is a reasoning step) or "token".
  * ``num_simulations``; ``num_actions``: candidates sampled per node (the
    tree's action dimension when adaptive branching is off).
  * ``max_option_len``: O, the longest option; ``max_completion_len``: C,
    the longest completion (a node reaching it is terminal).
  * ``temperature``: sampling temperature of candidate options.
  * ``prior``: "count" (Sampled MuZero: log multiplicity of identical /
    merged samples) or "logprob" (length-normalised option log-prob).
  * ``gumbel_scale``, ``max_num_considered_actions``: Gumbel MuZero's.
  * ``recompute_prefix``: re-encode the whole prefix at each expansion
    instead of reusing the path KV (for measuring the KV reuse gain).
  * ``adaptive_branching``: {enabled, alpha, c_min_root, c_max_root, c_min,
    c_max} (the paper's Table 5 uses alpha 1, c_max 60/10, c_min 10-40/2-3;
    the defaults here are small for CPU).
  * ``merge``: {enabled, threshold}: edit-distance state merge.
  * ``rollout``: {enabled, num_rollouts, max_len, temperature}.
  * ``weights``: {value, prm, orm}: the node score's weights (paper: all 1).
  * ``answer_selection``: "most_visited" | "best_leaf" | "orm_rerank" |
    "orm_vote" (see ``alphallm.search.selection``).
  """
  return SearchConfig().to_config_dict()


# ---------------------------------------------------------------------------
# Critics.

# critic(params, tokens [N, S], mask [N, S]) -> [N] scores. The real tokens of
# each row form one contiguous run: a left-padded prompt followed by its
# completion, PAD after; RoPE positions are ``model.default_positions(mask)``.
CriticFn = Callable[[Any, Int[Array, "N S"], Bool[Array, "N S"]], Float[Array, "N"]]


@dataclasses.dataclass(frozen=True)
class Critics:
  """Pluggable PRM and ORM. They see only token sequences, never an answer key.

  ``None`` (the default) means the policy's own value head at the last token,
  read for free from the search's forward passes: PRM(s) = v(s), ORM of a
  rollout = the value head after its last token, ORM of a finished node =
  v(node). A function is called on full sequences (prompt + completion) with
  the ``critic_params`` given to ``search`` (the policy params by default),
  and its re-encoded tokens are counted as forward passes.
  """

  prm: CriticFn | None = None
  orm: CriticFn | None = None


def value_head_critic(model_config: model_lib.TransformerConfig) -> CriticFn:
  """A critic that re-encodes the sequence and reads the value head at its last token."""

  def critic(params, tokens, mask):
    out = model_lib.Transformer(model_config).apply(
        {"params": params}, tokens, model_lib.default_positions(mask), mask)
    last = last_real_index(mask)
    return jnp.take_along_axis(out.values, last[:, None], axis=1)[:, 0]

  return critic


def last_real_index(mask: Bool[Array, "N S"]) -> Int[Array, "N"]:
  """Index of the last True of each row (0 if none)."""
  s = mask.shape[1]
  idx = jnp.where(mask, jnp.arange(s)[None, :], -1)
  return jnp.maximum(jnp.max(idx, axis=1), 0)


def node_score(weights: WeightsConfig, value: Float[Array, "..."], prm: Float[Array, "..."],
               orm: Float[Array, "..."], has_orm: Bool[Array, "..."]) -> Float[Array, "..."]:
  """s = (b_v v + b_prm PRM + b_orm ORM) / (b_v + b_prm + b_orm [ORM present]).

  The paper sums the three terms with all weights 1. Dividing by the weights
  of the terms present keeps nodes with and without an ORM term (no rollouts,
  or a finished solution scored by the ORM) on the critics' scale; with every
  term present it only rescales s. 0 when no weighted term is present.
  """
  orm_w = jnp.where(has_orm, weights.orm, 0.0)
  num = weights.value * value + weights.prm * prm + orm_w * jnp.where(has_orm, orm, 0.0)
  den = weights.value + weights.prm + orm_w
  return jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 0.0)


# ---------------------------------------------------------------------------
# Node embedding and search output.


@flax.struct.dataclass
class NodeEmbedding:
  """One node's state (in the tree: a leading ``[B, N]``; here per batch row).

  Attributes:
    path_k, path_v: ``[B, L, C, K, H]`` keys/values of the completion path
      (slots ``>= length`` are garbage); None with ``recompute_prefix``.
    tokens: ``[B, C]`` completion ids, ``pad_id`` after ``length``.
    length: ``[B]`` completion tokens.
    cand_tokens: ``[B, A, O]`` the node's candidate options (``pad_id``-padded).
    cand_len: ``[B, A]`` their lengths (0 for unsampled slots).
    cand_value: ``[B, A]`` value head at each candidate's last token (0 at
      token level without adaptive branching, which is what needs it).
    child_valid: ``[B, A]`` False for masked children (merged, beyond n(s),
      unsampled; a terminal node has one absorbing action, 0).
    terminal: ``[B]`` the node ends a solution.
    absorbing: ``[B]`` a dummy below a terminal node (not a real node).
    depth: ``[B]`` edges from the root.
    value, prm, orm: ``[B]`` value head v(s), PRM(s), ORM term (mean ORM of
      fast rollouts, or a terminal node's own ORM); ``has_orm`` says whether
      the ORM term is present.
    score: ``[B]`` the node score s (``node_score``).
    forward_passes, gen_tokens: ``[B]`` compute this node cost (see module doc).
    fast_rollouts: ``[B]`` fast rollouts sampled from this node.
    model_calls: ``[B]`` sequential model calls made to create it (batch-wide).
  """

  path_k: Any
  path_v: Any
  tokens: Int[Array, "B C"]
  length: Int[Array, "B"]
  cand_tokens: Int[Array, "B A O"]
  cand_len: Int[Array, "B A"]
  cand_value: Float[Array, "B A"]
  child_valid: Bool[Array, "B A"]
  terminal: Bool[Array, "B"]
  absorbing: Bool[Array, "B"]
  depth: Int[Array, "B"]
  value: Float[Array, "B"]
  prm: Float[Array, "B"]
  orm: Float[Array, "B"]
  has_orm: Bool[Array, "B"]
  score: Float[Array, "B"]
  forward_passes: Float[Array, "B"]
  gen_tokens: Float[Array, "B"]
  fast_rollouts: Float[Array, "B"]
  model_calls: Int[Array, "B"]


@flax.struct.dataclass
class SearchOutput:
  """A finished search over B problems.

  Attributes:
    tree: the mctx ``Tree`` (visits, Q, priors, node values, ...) whose
      ``embeddings`` is a ``NodeEmbedding`` with leading ``[B, N]``.
    action: ``[B]`` mctx's proposed root action.
    action_weights: ``[B, A]`` mctx's improved policy at the root (Gumbel:
      softmax(prior + completed Q); PUCT: visit frequencies), for distillation.
    prompt, prompt_mask: ``[B, P]`` the search's input.
    forward_passes, tokens, rollouts: ``[B]`` per-problem accounting.
    fast_rollouts: ``[B]`` fast rollouts sampled per problem.
    model_calls: ``[]`` sequential model calls of the whole batched search.
  """

  tree: mctx.Tree
  action: Int[Array, "B"]
  action_weights: Float[Array, "B A"]
  prompt: Int[Array, "B P"]
  prompt_mask: Bool[Array, "B P"]
  forward_passes: Float[Array, "B"]
  tokens: Float[Array, "B"]
  rollouts: Float[Array, "B"]
  fast_rollouts: Float[Array, "B"]
  model_calls: Int[Array, ""]


def bytes_per_node(model_config: model_lib.TransformerConfig, search_config: Any) -> dict:
  """Bytes one tree node costs: its embedding and mctx's per-node arrays.

  Returns ``{"path_kv": ..., "embedding": ..., "tree_arrays": ..., "total": ...}``.
  None of it depends on the prompt length.
  """
  cfg = SearchConfig.from_config(search_config)
  c, a, o = cfg.max_completion_len, cfg.tree_actions, cfg.option_len
  kv_item = jnp.dtype(model_config.dtype).itemsize
  path_kv = 0 if cfg.recompute_prefix else (
      2 * model_config.num_layers * c * model_config.num_kv_heads * model_config.head_dim
      * kv_item)
  emb = path_kv + 4 * c + 4 + 4 * a * o + 4 * a + 4 * a + a + 1 + 1 + 4 + 4 * 4 + 1 + 4 * 3 + 4
  # mctx: node_visits, raw_values, node_values, parents, action_from_parent
  # (5 x 4 bytes) and six [A] arrays of 4 bytes.
  tree = 5 * 4 + 6 * 4 * a
  return {"path_kv": path_kv, "embedding": emb, "tree_arrays": tree, "total": emb + tree}


# ---------------------------------------------------------------------------
# Action selection with masked children (mctx only masks at the root).


def _masked_argmax(scores: Float[Array, "A"], invalid: Bool[Array, "A"]) -> Int[Array, ""]:
  return jnp.argmax(jnp.where(invalid, -jnp.inf, scores)).astype(jnp.int32)


def _node_invalid(tree: mctx.Tree, node_index) -> Bool[Array, "A"]:
  return ~tree.embeddings.child_valid[node_index]


def puct_action_selection(rng_key, tree: mctx.Tree, node_index, depth, *, pb_c_init: float,
                          pb_c_base: float) -> Int[Array, ""]:
  """mctx's ``muzero_action_selection`` that never picks a masked child.

  mctx masks only the root's invalid actions; at interior nodes a masked
  child (prior 0) scores 0 + tie-break noise, which can beat a valid child
  whose normalised Q is 0 and whose prior is tiny, so the mask is applied
  here at every node.
  """
  del depth
  visit_counts = tree.children_visits[node_index]
  node_visit = tree.node_visits[node_index]
  pb_c = pb_c_init + jnp.log((node_visit + pb_c_base + 1.0) / pb_c_base)
  prior_probs = jax.nn.softmax(tree.children_prior_logits[node_index])
  policy_score = jnp.sqrt(node_visit) * pb_c * prior_probs / (visit_counts + 1)
  value_score = mctx.qtransform_by_parent_and_siblings(tree, node_index)
  noise = 1e-7 * jax.random.uniform(rng_key, (tree.num_actions,))
  return _masked_argmax(value_score + policy_score + noise, _node_invalid(tree, node_index))


def gumbel_interior_action_selection(rng_key, tree: mctx.Tree, node_index, depth
                                     ) -> Int[Array, ""]:
  """mctx's ``gumbel_muzero_interior_action_selection`` with the node's mask applied."""
  del rng_key, depth
  visit_counts = tree.children_visits[node_index]
  prior_logits = tree.children_prior_logits[node_index]
  completed_q = mctx.qtransform_completed_by_mix_value(tree, node_index)
  probs = jax.nn.softmax(prior_logits + completed_q)
  to_argmax = probs - visit_counts / (1 + jnp.sum(visit_counts, keepdims=True))
  return _masked_argmax(to_argmax, _node_invalid(tree, node_index))


def _mask_logits(logits: Float[Array, "B A"], invalid: Bool[Array, "B A"]) -> Float[Array, "B A"]:
  logits = logits - jnp.max(jnp.where(invalid, -jnp.inf, logits), axis=-1, keepdims=True)
  return jnp.where(invalid, opt_lib.MASKED_LOGIT, logits)


def _score_considered(considered_visit, gumbel, logits, normalized_q, visit_counts):
  """mctx's sequential-halving score (``seq_halving.score_considered``)."""
  logits = logits - jnp.max(logits, keepdims=True, axis=-1)
  penalty = jnp.where(visit_counts == considered_visit, 0, -jnp.inf)
  return jnp.maximum(-1e9, gumbel + logits + normalized_q) + penalty


def run_policy(cfg: SearchConfig, params, rng: jax.Array, root: mctx.RootFnOutput,
               recurrent_fn: mctx.RecurrentFn, invalid: Bool[Array, "B A"]
               ) -> mctx.PolicyOutput:
  """Runs ``mctx.search`` like ``gumbel_muzero_policy`` / ``muzero_policy``.

  The same root treatment, search and ``action_weights`` as those policies,
  but with interior selection functions that respect each node's
  ``child_valid`` mask.
  """
  if cfg.policy == "gumbel":
    prior = _mask_logits(root.prior_logits, invalid)
    root = root.replace(prior_logits=prior)
    rng, gumbel_rng = jax.random.split(rng)
    gumbel = cfg.gumbel_scale * jax.random.gumbel(gumbel_rng, prior.shape, prior.dtype)
    tree = mctx.search(
        params=params, rng_key=rng, root=root, recurrent_fn=recurrent_fn,
        root_action_selection_fn=functools.partial(
            mctx.gumbel_muzero_root_action_selection, num_simulations=cfg.num_simulations,
            max_num_considered_actions=cfg.max_num_considered_actions,
            qtransform=mctx.qtransform_completed_by_mix_value),
        interior_action_selection_fn=gumbel_interior_action_selection,
        num_simulations=cfg.num_simulations, invalid_actions=invalid.astype(jnp.float32),
        extra_data=mctx.GumbelMuZeroExtraData(root_gumbel=gumbel))
    summary = tree.summary()
    considered_visit = jnp.max(summary.visit_counts, axis=-1, keepdims=True)
    completed_q = jax.vmap(mctx.qtransform_completed_by_mix_value, in_axes=[0, None])(
        tree, tree.ROOT_INDEX)
    to_argmax = _score_considered(considered_visit, gumbel, prior, completed_q,
                                  summary.visit_counts)
    action = jax.vmap(_masked_argmax)(to_argmax, invalid)
    weights = jax.nn.softmax(_mask_logits(prior + completed_q, invalid))
    return mctx.PolicyOutput(action=action, action_weights=weights, search_tree=tree)

  rng, noise_rng, search_rng = jax.random.split(rng, 3)
  probs = jax.nn.softmax(root.prior_logits)
  if cfg.dirichlet_fraction > 0:
    noise = jax.random.dirichlet(noise_rng, jnp.full((probs.shape[-1],), cfg.dirichlet_alpha),
                                 shape=probs.shape[:1])
    probs = (1 - cfg.dirichlet_fraction) * probs + cfg.dirichlet_fraction * noise
  prior = _mask_logits(jnp.log(jnp.maximum(probs, jnp.finfo(probs.dtype).tiny)), invalid)
  root = root.replace(prior_logits=prior)
  select = functools.partial(puct_action_selection, pb_c_init=cfg.pb_c_init,
                             pb_c_base=cfg.pb_c_base)
  tree = mctx.search(
      params=params, rng_key=search_rng, root=root, recurrent_fn=recurrent_fn,
      root_action_selection_fn=functools.partial(select, depth=0),
      interior_action_selection_fn=select, num_simulations=cfg.num_simulations,
      invalid_actions=invalid.astype(jnp.float32))
  weights = tree.summary().visit_probs
  logits = jnp.where(invalid, -jnp.inf, jnp.log(jnp.maximum(weights, 1e-30)))
  action = jax.random.categorical(rng, logits).astype(jnp.int32)
  return mctx.PolicyOutput(action=action, action_weights=weights, search_tree=tree)


# ---------------------------------------------------------------------------
# The search.

_TRACES: collections.Counter = collections.Counter()


def num_traces(search_config: Any = None) -> int:
  """How many times search functions (of ``search_config``, or any) have been traced."""
  if search_config is None:
    return sum(_TRACES.values())
  return _TRACES[SearchConfig.from_config(search_config)]


@flax.struct.dataclass
class _Children:
  """A node's sampled candidates, after merge / branching (per batch row)."""

  tokens: Int[Array, "B A O"]
  lengths: Int[Array, "B A"]
  values: Float[Array, "B A"]
  valid: Bool[Array, "B A"]
  prior: Float[Array, "B A"]
  forward_passes: Float[Array, "B"]
  gen_tokens: Float[Array, "B"]
  steps: Int[Array, ""]


def make_search(model_config: model_lib.TransformerConfig, search_config: Any, eos_id: int,
                delimiter_ids: Sequence[int], critics: Critics | None = None, *,
                answer_prefix_ids: Sequence[int] | None = None,
                rollout_model_config: model_lib.TransformerConfig | None = None,
                pad_id: int = PAD_ID, bos_id: int = BOS_ID) -> Callable[..., SearchOutput]:
  """Builds the jitted ``search(params, prompt, prompt_mask, rng, critic_params=None,
  rollout_params=None) -> SearchOutput``.

  Args:
    model_config: the policy/value model.
    search_config: a ``default_search_config()``-like ConfigDict or a SearchConfig.
    eos_id: the end-of-solution token.
    delimiter_ids: tokens that end an option (e.g. the ids ending with "\\n").
    critics: PRM / ORM functions (default: the policy's value head).
    answer_prefix_ids: ids of the answer line's prefix (e.g. "A: "): an option
      starting with them ends the solution. None: EOS and the length limit only.
    rollout_model_config: config of a separate (smaller) fast-rollout policy;
      its params are ``search``'s ``rollout_params``. None: the policy itself.
    pad_id: the tokenizer's PAD: fills node paths and candidates beyond their
      lengths (the lengths, not this id, say which tokens are real).
    bos_id: the tokenizer's BOS. Token-level search never proposes ``pad_id``
      or ``bos_id`` as an action (``never_proposed``).

  The function is cached per arguments, so equal configurations share one
  compiled search.
  """
  cfg = SearchConfig.from_config(search_config)
  return _make_search(model_config, cfg, int(eos_id), tuple(int(i) for i in delimiter_ids),
                      critics or Critics(),
                      None if answer_prefix_ids is None else tuple(answer_prefix_ids),
                      rollout_model_config, int(pad_id), int(bos_id))


def never_proposed(pad_id: int, bos_id: int, eos_id: int) -> tuple[int, ...]:
  """Token ids token-level search gives no action: PAD and BOS, unless either is EOS.

  A tokenizer without a PAD or BOS token falls back to its EOS
  (``alphallm.hf_tokenizer``; e.g. Qwen2's BOS), and EOS must stay reachable.
  """
  out = []
  for i in (pad_id, bos_id):
    if i != eos_id and i not in out:
      out.append(i)
  return tuple(out)


@functools.lru_cache(maxsize=64)
def _make_search(model_config, cfg: SearchConfig, eos_id: int, delimiter_ids: tuple,
                 critics: Critics, answer_prefix_ids: tuple | None, rollout_model_config,
                 pad_id: int = PAD_ID, bos_id: int = BOS_ID):
  c, o = cfg.max_completion_len, cfg.option_len
  a = cfg.tree_actions
  token_level = cfg.granularity == "token"
  ab = cfg.adaptive_branching
  rcfg = cfg.rollout
  use_prm = cfg.weights.prm > 0 and critics.prm is not None
  use_rollouts = rcfg.enabled and cfg.weights.orm > 0
  separate_rollout_model = rollout_model_config is not None
  rollout_model_config = rollout_model_config or model_config
  orm_fn = critics.orm
  if orm_fn is None and separate_rollout_model and use_rollouts:
    orm_fn = value_head_critic(model_config)   # the rollout model's value head is no critic
  model = model_lib.Transformer(model_config)
  stop_ids = jnp.asarray(sorted(set(delimiter_ids) | {eos_id}), jnp.int32)
  eos_ids = jnp.asarray([eos_id], jnp.int32)
  banned = never_proposed(pad_id, bos_id, eos_id)
  answer_ids = None if answer_prefix_ids is None else jnp.asarray(answer_prefix_ids, jnp.int32)

  def sample_children(params, rng, cache, logits, node_value, path_len, prompt_len, active,
                      num, c_min, c_max) -> _Children:
    """Candidates of B nodes whose next-token logits are ``logits``.

    ``cache`` holds prompt + path (``[B, P + C + O]`` slots); ``active`` False
    rows (terminal / absorbing) sample nothing.
    """
    b, p = prompt_len.shape[0], cache.length - c - o
    if token_level:
      logp = jax.nn.log_softmax(logits)
      for i in banned:
        logp = logp.at[:, i].set(-jnp.inf)
      top_logp, top_ids = jax.lax.top_k(logp, num)                             # [B, n]
      toks = top_ids[..., None].astype(jnp.int32)                              # [B, n, 1]
      lens = jnp.broadcast_to(active[:, None], (b, num)).astype(jnp.int32)
      valid = active[:, None] & (lens > 0)
      prior = jnp.where(valid, top_logp, opt_lib.MASKED_LOGIT)
      values = jnp.zeros((b, num), jnp.float32)
      fwd = jnp.zeros((b,), jnp.float32)
      steps = jnp.int32(0)
      if ab.enabled:   # candidate values: one call of B * n single tokens
        rows = opt_lib.repeat_cache(cache, num)
        out = model.apply({"params": params}, toks.reshape(b * num, 1),
                          jnp.repeat(prompt_len + path_len, num)[:, None],
                          valid.reshape(b * num, 1), rows, jnp.repeat(p + path_len, num))
        values = out.values[:, 0].reshape(b, num)
        fwd = valid.sum(axis=1).astype(jnp.float32)
        steps = jnp.int32(1)
      gen = jnp.zeros((b,), jnp.float32)
      keep = valid
      counts = valid.astype(jnp.int32)
    else:
      rows = opt_lib.repeat_cache(cache, num)
      limit = jnp.where(active, jnp.minimum(c - path_len, o), 0)
      sample = opt_lib.sample_options(
          model_config, params, rows, jnp.repeat(logits, num, axis=0),
          jnp.repeat(p + path_len, num), jnp.repeat(prompt_len + path_len, num),
          jnp.repeat(limit, num), stop_ids, rng, max_len=o, temperature=cfg.temperature,
          pad_id=pad_id)
      toks = sample.tokens.reshape(b, num, o)
      lens = sample.lengths.reshape(b, num)
      values = sample.last_value.reshape(b, num)
      logprob = sample.logprob.reshape(b, num)
      valid = lens > 0
      threshold = cfg.merge.threshold if cfg.merge.enabled else None
      keep, counts = jax.vmap(opt_lib.merge_candidates, in_axes=(0, 0, 0, None))(
          toks, lens, valid, threshold)
      prior = None
      fwd = lens.sum(axis=1).astype(jnp.float32)
      gen = fwd
      steps = sample.steps
    if ab.enabled:
      n = jax.vmap(opt_lib.branching_factor, in_axes=(0, 0, 0, None, None, None))(
          node_value, values, valid, ab.alpha, c_min, c_max)
      keep = jax.vmap(opt_lib.keep_first)(keep, n)
    if token_level:
      prior = jnp.where(keep, prior, opt_lib.MASKED_LOGIT)
    else:
      prior = jax.vmap(functools.partial(opt_lib.prior_logits, cfg.prior))(
          keep, counts, logprob, lens)
    pad = a - num
    padw = lambda x, v: jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2),  # noqa: E731
                                constant_values=v)
    return _Children(tokens=padw(toks, pad_id), lengths=padw(lens * keep, 0),
                     values=padw(values, 0.0), valid=padw(keep, False),
                     prior=padw(prior, opt_lib.MASKED_LOGIT), forward_passes=fwd,
                     gen_tokens=gen, steps=steps)

  def terminal_children(kids: _Children, terminal: Bool[Array, "B"]) -> _Children:
    """A terminal node has a single absorbing action 0 (prior 0)."""
    one = jnp.arange(a)[None, :] == 0
    t = terminal[:, None]
    return kids.replace(
        valid=jnp.where(t, one, kids.valid),
        prior=jnp.where(t, jnp.where(one, 0.0, opt_lib.MASKED_LOGIT), kids.prior),
        lengths=jnp.where(t, 0, kids.lengths))

  def full_sequences(prompt, prompt_mask, completion, comp_len):
    mask = jnp.concatenate(
        [prompt_mask, jnp.arange(completion.shape[1])[None, :] < comp_len[:, None]], axis=1)
    return jnp.concatenate([prompt, completion], axis=1), mask

  def search(params, prompt, prompt_mask, rng, critic_params=None, rollout_params=None):
    _TRACES[cfg] += 1
    b, p = prompt.shape
    critic_params = params if critic_params is None else critic_params
    rollout_params = params if rollout_params is None else rollout_params
    prompt_len = prompt_mask.sum(axis=1).astype(jnp.int32)
    zeros_b = jnp.zeros((b,), jnp.float32)
    false_b = jnp.zeros((b,), bool)

    # Root: prefill the prompt once; its KV is shared by every node.
    pre = model.apply({"params": params}, prompt, model_lib.default_positions(prompt_mask),
                      prompt_mask, model_lib.KVCache.init(model_config, b, p),
                      jnp.zeros((b,), jnp.int32))
    prompt_k, prompt_v = pre.cache.k, pre.cache.v                              # [L, B, P, K, H]
    root_value = pre.values[:, -1]
    if separate_rollout_model and use_rollouts:
      rpre = model_lib.Transformer(rollout_model_config).apply(
          {"params": rollout_params}, prompt, model_lib.default_positions(prompt_mask),
          prompt_mask, model_lib.KVCache.init(rollout_model_config, b, p),
          jnp.zeros((b,), jnp.int32))
      rprompt_k, rprompt_v = rpre.cache.k, rpre.cache.v
    rng, root_rng, search_rng = jax.random.split(rng, 3)
    empty = jnp.full((b, c), pad_id, jnp.int32)
    zero_len = jnp.zeros((b,), jnp.int32)
    root_cache = opt_lib.build_cache(prompt_k, prompt_v, prompt_mask, None, None, zero_len, c, o)
    root_kids = sample_children(params, root_rng, root_cache, pre.logits[:, -1], root_value,
                                zero_len, prompt_len, jnp.ones((b,), bool),
                                cfg.root_candidates, ab.c_min_root, ab.c_max_root)
    root_prm = root_value
    root_fwd = 1.0 + root_kids.forward_passes
    if use_prm:
      seq, mask = full_sequences(prompt, prompt_mask, empty, zero_len)
      root_prm = critics.prm(critic_params, seq, mask)
      root_fwd = root_fwd + prompt_len
    root_score = node_score(cfg.weights, root_value, root_prm, zeros_b, false_b)
    l, k, h = model_config.num_layers, model_config.num_kv_heads, model_config.head_dim
    if cfg.recompute_prefix:
      path_kv = None
    else:
      path_kv = jnp.zeros((b, l, c, k, h), prompt_k.dtype)
    root_emb = NodeEmbedding(
        path_k=path_kv, path_v=path_kv, tokens=empty, length=zero_len,
        cand_tokens=root_kids.tokens, cand_len=root_kids.lengths, cand_value=root_kids.values,
        child_valid=root_kids.valid, terminal=false_b, absorbing=false_b,
        depth=jnp.zeros((b,), jnp.int32), value=root_value, prm=root_prm, orm=zeros_b,
        has_orm=false_b, score=root_score, forward_passes=root_fwd,
        gen_tokens=root_kids.gen_tokens, fast_rollouts=zeros_b,
        model_calls=jnp.full((b,), 1 + root_kids.steps, jnp.int32))
    root = mctx.RootFnOutput(prior_logits=root_kids.prior, value=root_score, embedding=root_emb)

    def absorbing(parent: NodeEmbedding, calls=0):
      """Children of terminal / absorbing nodes: an absorbing copy of the parent with one
      absorbing action, reward 0, discount 0, value 0, and no cost."""
      valid = jnp.broadcast_to(jnp.arange(a)[None, :] == 0, (b, a))
      child = parent.replace(
          absorbing=jnp.ones((b,), bool), depth=parent.depth + 1, child_valid=valid,
          cand_len=jnp.zeros((b, a), jnp.int32), forward_passes=zeros_b, gen_tokens=zeros_b,
          fast_rollouts=zeros_b, model_calls=jnp.full((b,), calls, jnp.int32))
      out = mctx.RecurrentFnOutput(
          reward=zeros_b, discount=zeros_b, value=zeros_b,
          prior_logits=jnp.where(valid, 0.0, opt_lib.MASKED_LOGIT))
      return out, child

    def recurrent_fn(bundle, rng, action, parent: NodeEmbedding):
      """Expands B children; skips the model entirely when every row is absorbing."""
      dead = parent.terminal | parent.absorbing
      return jax.lax.cond(jnp.all(dead), lambda: absorbing(parent),
                          lambda: expand(bundle, rng, action, parent))

    def expand(bundle, rng, action, parent: NodeEmbedding):
      params, critic_params, rollout_params = bundle
      cand_rng, roll_rng = jax.random.split(rng)
      dead = parent.terminal | parent.absorbing                               # [B]
      option = jnp.take_along_axis(parent.cand_tokens, action[:, None, None], axis=1)[:, 0]
      opt_len = jnp.take_along_axis(parent.cand_len, action[:, None], axis=1)[:, 0]
      opt_len = jnp.where(dead, 0, opt_len)
      child_len = parent.length + opt_len
      child_tokens = opt_lib.splice(parent.tokens, option, parent.length, pad_id)
      calls = 1
      if cfg.recompute_prefix:
        seq, mask = full_sequences(prompt, prompt_mask, child_tokens, child_len)
        out = model.apply({"params": params}, seq, model_lib.default_positions(mask), mask,
                          model_lib.KVCache.init(model_config, b, p + c + o),
                          jnp.zeros((b,), jnp.int32))
        last = jnp.maximum(p + child_len - 1, 0)
        logits = jnp.take_along_axis(out.logits, last[:, None, None], axis=1)[:, 0]
        value = jnp.take_along_axis(out.values, last[:, None], axis=1)[:, 0]
        cache = out.cache
        encode_cost = (prompt_len + child_len).astype(jnp.float32)
        child_k = child_v = None
      else:
        cache = opt_lib.build_cache(
            prompt_k, prompt_v, prompt_mask, jnp.moveaxis(parent.path_k, 0, 1),
            jnp.moveaxis(parent.path_v, 0, 1), parent.length, c, o)
        logits, value, cache = opt_lib.encode(model_config, params, cache, option, opt_len,
                                              p + parent.length, prompt_len + parent.length)
        encode_cost = opt_len.astype(jnp.float32)
        child_k = jnp.moveaxis(cache.k[:, :, p:p + c], 1, 0)                    # [B, L, C, K, H]
        child_v = jnp.moveaxis(cache.v[:, :, p:p + c], 1, 0)
      if token_level:
        terminal = opt_lib.option_is_terminal(option, opt_len, eos_id)
      else:
        terminal = opt_lib.option_is_terminal(option, opt_len, eos_id, answer_ids)
      terminal = (terminal | (child_len >= c)) & ~dead
      active = ~terminal & ~dead
      kids = sample_children(params, cand_rng, cache, logits, value, child_len, prompt_len,
                             active, cfg.interior_candidates, ab.c_min, ab.c_max)
      calls = calls + kids.steps
      kids = terminal_children(kids, terminal | dead)
      fwd = encode_cost + kids.forward_passes
      gen = kids.gen_tokens + (opt_len.astype(jnp.float32) if token_level else 0.0)

      # Critics.
      seq = mask = None
      if use_prm or (orm_fn is not None and cfg.weights.orm > 0):
        seq, mask = full_sequences(prompt, prompt_mask, child_tokens, child_len)
      prm = value
      if use_prm:
        prm = critics.prm(critic_params, seq, mask)
        fwd = fwd + (prompt_len + child_len) * ~dead
        calls = calls + 1
      orm_terminal = value
      if critics.orm is not None and cfg.weights.orm > 0:
        orm_terminal = critics.orm(critic_params, seq, mask)
        fwd = fwd + (prompt_len + child_len) * terminal
        calls = calls + 1
      orm, has_orm = jnp.where(terminal, orm_terminal, 0.0), terminal
      n_roll = zeros_b
      if use_rollouts:
        roll, roll_fwd, roll_gen, roll_calls = fast_rollouts(
            rollout_params, critic_params, roll_rng, cache, logits, child_tokens, child_len,
            active)
        orm = jnp.where(active, roll, orm)
        has_orm = has_orm | active
        fwd, gen, calls = fwd + roll_fwd, gen + roll_gen, calls + roll_calls
        n_roll = jnp.where(active, float(rcfg.num_rollouts), 0.0)
      score = node_score(cfg.weights, value, prm, orm, has_orm)

      child = NodeEmbedding(
          path_k=child_k, path_v=child_v, tokens=child_tokens, length=child_len,
          cand_tokens=kids.tokens, cand_len=kids.lengths, cand_value=kids.values,
          child_valid=kids.valid, terminal=terminal, absorbing=false_b,
          depth=parent.depth + 1, value=value, prm=prm, orm=orm, has_orm=has_orm,
          score=score, forward_passes=fwd * ~dead, gen_tokens=gen * ~dead,
          fast_rollouts=n_roll, model_calls=jnp.full((b,), calls, jnp.int32))
      out = mctx.RecurrentFnOutput(
          reward=jnp.where(terminal, score, 0.0), discount=jnp.where(terminal, 0.0, 1.0),
          prior_logits=kids.prior, value=jnp.where(terminal, 0.0, score))
      # Rows below a terminal node get the absorbing dummy.
      dummy = absorbing(parent, calls)
      where = lambda x, y: jnp.where(dead.reshape((b,) + (1,) * (x.ndim - 1)), y, x)  # noqa: E731
      return jax.tree.map(where, (out, child), dummy)

    def fast_rollouts(rollout_params, critic_params, rng, cache, logits, child_tokens,
                      child_len, active):
      """Mean ORM of ``num_rollouts`` sampled completions from each active node."""
      nr, rl = rcfg.num_rollouts, rcfg.max_len
      calls = 0
      if separate_rollout_model:
        rcache = opt_lib.build_cache(rprompt_k, rprompt_v, prompt_mask, None, None,
                                     jnp.zeros((b,), jnp.int32), c, rl)
        logits, _, rcache = opt_lib.encode(rollout_model_config, rollout_params, rcache,
                                           child_tokens, child_len, jnp.full((b,), p),
                                           prompt_len)
        fwd = child_len.astype(jnp.float32)
        calls += 1
      else:
        rcache = model_lib.KVCache(
            k=_pad_slots(cache.k[:, :, :p + c], rl), v=_pad_slots(cache.v[:, :, :p + c], rl),
            mask=jnp.pad(cache.mask[:, :p + c], ((0, 0), (0, rl))))
        fwd = jnp.zeros((b,), jnp.float32)
      rows = opt_lib.repeat_cache(rcache, nr)
      limit = jnp.repeat(jnp.where(active, rl, 0), nr)
      sample = opt_lib.sample_options(
          rollout_model_config, rollout_params, rows, jnp.repeat(logits, nr, axis=0),
          jnp.repeat(p + child_len, nr), jnp.repeat(prompt_len + child_len, nr), limit,
          eos_ids, rng, max_len=rl, temperature=rcfg.temperature, pad_id=pad_id)
      calls = calls + sample.steps
      lens = sample.lengths.reshape(b, nr)
      gen = lens.sum(axis=1).astype(jnp.float32)
      fwd = fwd + gen
      if orm_fn is None:
        scores = sample.last_value.reshape(b, nr)
      else:
        comp = opt_lib.splice(
            jnp.concatenate([jnp.repeat(child_tokens, nr, axis=0),
                             jnp.full((b * nr, rl), pad_id, jnp.int32)], axis=1),
            sample.tokens, jnp.repeat(child_len, nr), pad_id)
        seq, mask = full_sequences(jnp.repeat(prompt, nr, axis=0),
                                   jnp.repeat(prompt_mask, nr, axis=0), comp,
                                   jnp.repeat(child_len, nr) + sample.lengths)
        scores = orm_fn(critic_params, seq, mask).reshape(b, nr)
        fwd = fwd + (jnp.repeat(prompt_len + child_len, nr) + sample.lengths).reshape(
            b, nr).sum(axis=1) * active
        calls = calls + 1
      return scores.mean(axis=1), fwd * active, gen * active, calls

    policy = run_policy(cfg, (params, critic_params, rollout_params), search_rng, root,
                        recurrent_fn, ~root_kids.valid)
    tree = policy.search_tree
    emb = tree.embeddings
    real = ~emb.absorbing
    return SearchOutput(
        tree=tree, action=policy.action, action_weights=policy.action_weights,
        prompt=prompt, prompt_mask=prompt_mask,
        forward_passes=jnp.sum(emb.forward_passes * real, axis=1),
        tokens=jnp.sum(emb.gen_tokens * real, axis=1),
        rollouts=jnp.sum(real[:, 1:], axis=1).astype(jnp.float32),
        fast_rollouts=jnp.sum(emb.fast_rollouts * real, axis=1),
        model_calls=jnp.sum(emb.model_calls[0]))

  return jax.jit(search)


def _pad_slots(x: Float[Array, "L R S K H"], n: int) -> Float[Array, "L R S2 K H"]:
  return jnp.pad(x, [(0, 0), (0, 0), (0, n), (0, 0), (0, 0)])
