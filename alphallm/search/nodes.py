"""What a search produces: node embeddings, tree statistics, the output, critic slots.

Shapes carry a leading ``[B, N]`` (problems, nodes) in a finished tree.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax
import jax.numpy as jnp
import mctx
from jaxtyping import Array, Bool, Float, Int

from alphallm import model as model_lib
from alphallm.search.settings import WeightsConfig

# critic(params, tokens [N, S], mask [N, S]) -> [N] scores. The real tokens of
# each row form one contiguous run: a left-padded prompt followed by its
# completion, PAD after; RoPE positions are ``model.default_positions(mask)``.
CriticFn = Callable[[Any, Int[Array, "N S"], Bool[Array, "N S"]], Float[Array, "N"]]


@dataclasses.dataclass(frozen=True)
class Critics:
  """The node score's critic slots. They see only token sequences, never an answer key.

  Each slot is filled by its own critic (``alphallm.search.critic_slots``):

  * ``value``: v(s), a trained value function; None: the policy's own value
    head, read for free from the search's forward passes;
  * ``prm``: PRM(s); None: v(s);
  * ``orm``: ORM of a finished node and of fast rollouts; None: v.

  A function is called on full sequences (prompt + completion) with the
  ``critic_params`` given to ``search`` (the policy params by default), and
  its re-encoded tokens are counted.
  """

  prm: CriticFn | None = None
  orm: CriticFn | None = None
  value: CriticFn | None = None


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
  """The paper's weighted sum s = b_v v + b_prm PRM + b_orm ORM, over the terms present.

  Divided by the weights of the terms present (``b_v + b_prm [+ b_orm]``):
  with every term present this is the paper's sum rescaled by a constant (to
  the critics' [0, 1] scale); a node without an ORM term (not finished, no
  rollouts) is then on the same scale as one with it. 0 when no weighted
  term is present. Example, all b = 1: v 0.6, PRM 0.8, no ORM -> 0.7; with
  ORM 0.1 -> 0.5.
  """
  orm_w = jnp.where(has_orm, weights.orm, 0.0)
  num = weights.value * value + weights.prm * prm + orm_w * jnp.where(has_orm, orm, 0.0)
  den = weights.value + weights.prm + orm_w
  return jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 0.0)


@flax.struct.dataclass
class NodeEmbedding:
  """The nodes' states, ``[B, N, ...]``.

  Attributes:
    path_k, path_v: ``[B, N, L, C, K, H]`` keys/values of the completion path
      (slots ``>= length`` garbage); None with ``recompute_prefix``.
    tokens: ``[B, N, C]`` completion ids, ``pad_id`` after ``length``.
    length: ``[B, N]`` completion tokens.
    option, option_len: ``[B, N, O]``, ``[B, N]`` the option that led here.
    logprob: ``[B, N]`` its log-probability under the (untempered) policy.
    next_logits: ``[B, N, V]`` the policy's next-token logits at the node.
    cand_tokens, cand_len, cand_value: ``[B, N, A, O]``, ``[B, N, A]``: the
      options / scores of the node's children (filled after the search).
    child_valid: ``[B, N, A]`` the slot has a child.
    terminal: the node ends a solution (answer line, EOS or the limit).
    has_answer: it ends with an answer (not cut by the completion limit).
    absorbing: an unused node slot (not a real node).
    depth: edges from the root.
    value, prm, orm, has_orm, score: the critic slots and the node score s.
    forward_passes, gen_tokens: compute its expansion cost (see ``mcts``).
    fast_rollouts: fast rollouts sampled from it.
    rollout_tokens, rollout_len, rollout_orm, rollout_finished: its best
      fast rollout (a full completion, an answer candidate).
    model_calls: sequential model calls its expansion made.
  """

  path_k: Any
  path_v: Any
  tokens: Int[Array, "B N C"]
  length: Int[Array, "B N"]
  option: Int[Array, "B N O"]
  option_len: Int[Array, "B N"]
  logprob: Float[Array, "B N"]
  next_logits: Float[Array, "B N V"]
  cand_tokens: Int[Array, "B N A O"]
  cand_len: Int[Array, "B N A"]
  cand_value: Float[Array, "B N A"]
  child_valid: Bool[Array, "B N A"]
  terminal: Bool[Array, "B N"]
  has_answer: Bool[Array, "B N"]
  absorbing: Bool[Array, "B N"]
  depth: Int[Array, "B N"]
  value: Float[Array, "B N"]
  prm: Float[Array, "B N"]
  orm: Float[Array, "B N"]
  has_orm: Bool[Array, "B N"]
  score: Float[Array, "B N"]
  forward_passes: Float[Array, "B N"]
  gen_tokens: Float[Array, "B N"]
  fast_rollouts: Float[Array, "B N"]
  rollout_tokens: Int[Array, "B N C"]
  rollout_len: Int[Array, "B N"]
  rollout_orm: Float[Array, "B N"]
  rollout_finished: Bool[Array, "B N"]
  model_calls: Int[Array, "B N"]


@flax.struct.dataclass
class TreeStats:
  """Per-problem statistics of a finished tree (``[B]`` each), for reporting.

  real_nodes: nodes created (root included); distinct_root: the root's
  children (distinct steps by construction); children_per_interior: mean
  children of non-root nodes that have any; revisit_fraction: simulations
  that added no node (the tree was closed, or every draw repeated a sibling);
  finished: finished solutions (terminal nodes with an answer); max_depth.
  """

  real_nodes: Float[Array, "B"]
  distinct_root: Float[Array, "B"]
  children_per_interior: Float[Array, "B"]
  revisit_fraction: Float[Array, "B"]
  finished: Float[Array, "B"]
  max_depth: Float[Array, "B"]


@flax.struct.dataclass
class SearchOutput:
  """A finished search over B problems.

  Attributes:
    tree: an ``mctx.Tree`` (visits, Q, priors, ...) whose ``embeddings`` is a
      ``NodeEmbedding``; unused node slots are ``absorbing``.
    action: ``[B]`` the most visited root action.
    action_weights: ``[B, A]`` the root's visit distribution (distillation).
    prompt, prompt_mask: ``[B, P]`` the search's input.
    forward_passes, tokens, rollouts: ``[B]`` per-problem accounting
      (``alphallm.decoding``: a prefill counts 1 pass).
    fast_rollouts: ``[B]`` fast rollouts sampled per problem.
    model_calls: ``[]`` sequential model calls of the whole batched search.
    policy_tokens: ``[B]`` token positions the policy processed (prompt
      prefill counted as its tokens); critic_tokens: ``{slot: [B]}`` tokens
      each external critic re-encoded; rollout_tokens: ``[B]`` tokens of a
      separate rollout policy. ``alphallm.decoding.flops`` turns them into FLOPs.
    stats: ``TreeStats``.
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
  policy_tokens: Float[Array, "B"]
  critic_tokens: dict
  rollout_tokens: Float[Array, "B"]
  stats: TreeStats
