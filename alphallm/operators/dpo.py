"""Step-level DPO from the search tree (MCTS-DPO; "From r to Q*"), and its implicit-reward critic.

A pair is (state = prompt + prefix, chosen step y_w, rejected step y_l): two
sibling options of one expanded node whose Q values differ by at least
``min_gap`` (``pairs_from_groups``). With ``pi`` the policy being trained
and ``pi_ref`` the reference (the previous round's policy), the loss is

  L = -log sigmoid(beta * ((log pi(y_w|s) - log pi_ref(y_w|s))
                           - (log pi(y_l|s) - log pi_ref(y_l|s))))

averaged over pairs (``dpo_loss``). With ``pi == pi_ref`` every pair's margin
is 0 and the loss is ``log 2``. Its gradient raises ``log pi(y_w|s)`` and
lowers ``log pi(y_l|s)``, each with weight ``beta * sigmoid(-margin)``.

"From r to Q*" reads DPO's policy as a token-level soft Q function: the
implicit reward of a completion y of state s is

  r(s, y) = beta * (log pi(y|s) - log pi_ref(y|s))      (``implicit_reward``)

and ``implicit_reward_critic`` turns it into a search critic
(``alphallm.search.nodes.CriticFn``), so MCTS or beam search can score nodes
by it.

Batch of pairs (``encode_pairs``; each side laid out like
``alphallm.data.encode_examples``'s rows, see ``base``)::

  chosen_tokens, chosen_token_mask, chosen_loss_mask        [B, T]
  rejected_tokens, rejected_token_mask, rejected_loss_mask  [B, T]
  ref_chosen_logp, ref_rejected_logp                        [B]  (optional: precomputed)
  weight                                                    [B]  (1 on real pairs, 0 padding)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from alphallm import data
from alphallm import model as model_lib
from alphallm.operators import base
from alphallm.operators import tree as tree_lib
from alphallm.search.nodes import CriticFn

SIDES = ("chosen", "rejected")


# ---------------------------------------------------------------------------
# The objective.


def implicit_reward(logp: Float[Array, "..."], ref_logp: Float[Array, "..."],
                    beta: float) -> Float[Array, "..."]:
  """``beta * (log pi(y|s) - log pi_ref(y|s))``, elementwise."""
  return beta * (logp - ref_logp)


def dpo_loss(policy_chosen: Float[Array, "B"], policy_rejected: Float[Array, "B"],
             ref_chosen: Float[Array, "B"], ref_rejected: Float[Array, "B"], beta: float,
             weight: Float[Array, "B"] | None = None, axis_name: str | None = None
             ) -> tuple[Float[Array, ""], dict[str, Float[Array, ""]]]:
  """The DPO loss of the module doc from sequence log-probs ``[B]``; ``(loss, metrics)``.

  ``weight [B]`` (default 1) weighs pairs (0 drops padding rows); the loss is
  the weighted mean (global over ``axis_name``). ``-log sigmoid(m)`` is
  computed as ``softplus(-m)``. Metrics: ``loss``, ``margin`` (mean of m),
  ``reward_accuracy`` (fraction with m > 0), ``chosen_reward``,
  ``rejected_reward`` (mean implicit rewards), ``pairs``.
  """
  w = jnp.ones_like(policy_chosen) if weight is None else weight
  chosen_r = implicit_reward(policy_chosen, ref_chosen, beta)
  rejected_r = implicit_reward(policy_rejected, ref_rejected, beta)
  margin = chosen_r - rejected_r
  loss = base.masked_mean(jax.nn.softplus(-margin), w, axis_name)
  mean = lambda x: base.masked_mean(x, w, axis_name)  # noqa: E731
  metrics = {"loss": loss, "margin": mean(margin),
             "reward_accuracy": mean((margin > 0).astype(jnp.float32)),
             "chosen_reward": mean(chosen_r), "rejected_reward": mean(rejected_r),
             "pairs": base.global_sum(w, axis_name)}
  return loss, metrics


def side_logprobs(params: Any, model_cfg: model_lib.TransformerConfig, batch: dict, side: str
                  ) -> Float[Array, "B"]:
  """``[B]`` sequence log-probs of one side (``"chosen"``/``"rejected"``) of a pair batch."""
  return base.sequence_logprobs(params, model_cfg, batch[f"{side}_tokens"],
                                batch[f"{side}_token_mask"], batch[f"{side}_loss_mask"])


def reference_logprobs(ref_params: Any, model_cfg: model_lib.TransformerConfig, batch: dict
                       ) -> dict[str, Float[Array, "B"]]:
  """``{"ref_chosen_logp", "ref_rejected_logp"}`` under the reference (add them to the batch)."""
  return {f"ref_{side}_logp": jax.lax.stop_gradient(
      side_logprobs(ref_params, model_cfg, batch, side)) for side in SIDES}


def dpo_batch_loss(params: Any, model_cfg: model_lib.TransformerConfig, batch: dict,
                   beta: float, ref_params: Any = None, axis_name: str | None = None
                   ) -> tuple[Float[Array, ""], dict]:
  """``dpo_loss`` of a pair batch under ``params``.

  The reference log-probs are the batch's ``ref_*_logp`` when present (the
  loop precomputes them with ``reference_logprobs``), else computed from
  ``ref_params`` (gradient stopped). Jit with ``model_cfg``/``beta`` static.
  """
  ref = ({k: batch[k] for k in ("ref_chosen_logp", "ref_rejected_logp")}
         if "ref_chosen_logp" in batch else reference_logprobs(ref_params, model_cfg, batch))
  return dpo_loss(side_logprobs(params, model_cfg, batch, "chosen"),
                  side_logprobs(params, model_cfg, batch, "rejected"),
                  ref["ref_chosen_logp"], ref["ref_rejected_logp"], beta,
                  batch.get("weight"), axis_name)


def make_dpo_loss(model_cfg: model_lib.TransformerConfig, beta: float,
                  axis_name: str | None = "data"):
  """A ``train.make_step`` loss ``(trainable, frozen, batch) -> (loss, metrics)``.

  ``trainable`` is the policy's parameters, ``frozen`` the reference's (used
  when the batch has no precomputed ``ref_*_logp``); build the step with
  ``make_step(loss, optimizer, mesh, metrics_fn=lambda sums, grads: sums)``
  (the metrics are already global means).
  """

  def loss_fn(trainable, frozen, batch):
    return dpo_batch_loss(trainable, model_cfg, batch, beta, frozen, axis_name)

  return loss_fn


# ---------------------------------------------------------------------------
# Pairs from the tree.


@dataclasses.dataclass(frozen=True)
class PreferencePair:
  """One step-level pair: ``prompt`` (the policy's prompt + the node's prefix) and two steps."""

  prompt: str
  chosen: str
  rejected: str
  gap: float                 # Q(chosen) - Q(rejected) >= the threshold
  chosen_terminal: bool      # the step ends the solution (its row gets EOS)
  rejected_terminal: bool
  node: int = 0              # the expanded node both are children of


def pairs_from_groups(prompt: str, groups: Sequence[tree_lib.SiblingGroup], min_gap: float,
                      max_pairs_per_node: int = 1) -> list[PreferencePair]:
  """Sibling pairs with a value gap ``>= min_gap``, the largest gaps first at each node.

  Only distinct siblings are paired (never an option with itself, nor two
  siblings with the same text). ``max_pairs_per_node`` (>= 1) caps the pairs
  of one node; 1 gives MCTS-DPO's best-vs-worst pair.
  """
  if min_gap < 0 or max_pairs_per_node < 1:
    raise ValueError(f"pairs_from_groups: min_gap must be >= 0 and max_pairs_per_node >= 1, "
                     f"got {min_gap!r}, {max_pairs_per_node!r}")
  out = []
  for g in groups:
    cands = [(g.values[i] - g.values[j], i, j) for i in range(len(g.options))
             for j in range(len(g.options))
             if i != j and g.options[i] != g.options[j] and g.values[i] - g.values[j] >= min_gap
             and g.values[i] > g.values[j]]
    cands.sort(key=lambda c: (-c[0], c[1], c[2]))
    for gap, i, j in cands[:max_pairs_per_node]:
      out.append(PreferencePair(prompt + g.prefix, g.options[i], g.options[j], float(gap),
                                g.terminal[i], g.terminal[j], g.node))
  return out


def pairs_from_tree(tree: Any, b: int, prompt: str, tokenizer: Any, min_gap: float,
                    max_pairs_per_node: int = 1, min_visits: int = 1) -> list[PreferencePair]:
  """``pairs_from_groups`` of problem ``b`` of a finished search (``selection.TreeArrays``)."""
  groups = tree_lib.sibling_groups(tree, b, tokenizer, min_visits)
  return pairs_from_groups(prompt, groups, min_gap, max_pairs_per_node)


def pairs_from_record(record: dict, min_gap: float, max_pairs_per_node: int = 1
                      ) -> list[PreferencePair]:
  """Pairs of a trajectory record whose ``extra["sibling_groups"]`` holds its tree's groups.

  A record without them (the loop does not write them yet) gives no pairs.
  """
  items = record.get("extra", {}).get("sibling_groups")
  if items is None:
    return []
  groups = tree_lib.groups_from_json(items, "record extra.sibling_groups")
  return pairs_from_groups(record["prompt"], groups, min_gap, max_pairs_per_node)


def _encode_side(tokenizer, prompts, steps, terminal, seq_len) -> dict[str, np.ndarray]:
  rows = [data.encode_examples(tokenizer, [p], [s], seq_len, append_eos=bool(t))
          for p, s, t in zip(prompts, steps, terminal)]
  return {k: np.concatenate([r[k] for r in rows]) for k in ("tokens", "token_mask", "loss_mask")}


def encode_pairs(tokenizer: Any, pairs: Sequence[PreferencePair], seq_len: int
                 ) -> dict[str, np.ndarray]:
  """The pair batch of the module doc (numpy); a terminal step's row ends with EOS."""
  if not pairs:
    raise ValueError("encode_pairs: no pairs (no sibling value gap reached the threshold?)")
  out = {}
  for side in SIDES:
    enc = _encode_side(tokenizer, [p.prompt for p in pairs], [getattr(p, side) for p in pairs],
                       [getattr(p, f"{side}_terminal") for p in pairs], seq_len)
    out.update({f"{side}_{k}": v for k, v in enc.items()})
  out["weight"] = np.ones((len(pairs),), np.float32)
  return out


# ---------------------------------------------------------------------------
# DPO's implicit reward as a search critic.


def completion_mask(mask: Bool[Array, "N S"], prompt_len: int) -> Float[Array, "N S"]:
  """``[N, S]`` 1 on the real tokens at slot ``>= prompt_len`` (the completion), else 0."""
  slots = jnp.arange(mask.shape[1])[None, :]
  return (mask.astype(bool) & (slots >= prompt_len)).astype(jnp.float32)


def implicit_reward_critic(model_cfg: model_lib.TransformerConfig, beta: float,
                           prompt_len: int, squash: bool = False) -> CriticFn:
  """A search critic ``(params, tokens [N, S], mask [N, S]) -> [N]``: DPO's implicit reward.

  ``params`` is ``{"policy": ..., "reference": ...}`` (pass it as the slot's
  critic params). Rows are a search's: a (left-padded) prompt in slots
  ``[0, prompt_len)``, then the completion; the score is
  ``beta * sum_t (log pi - log pi_ref)`` over the completion's tokens, 0 when
  the policy is the reference. ``squash`` maps it to ``sigmoid(r)`` in
  (0, 1), the other critics' scale. It costs two passes of the row (count
  both models' tokens).
  """

  def critic(params, tokens: Int[Array, "N S"], mask: Bool[Array, "N S"]) -> Float[Array, "N"]:
    mask = mask.astype(bool)
    target = completion_mask(mask, prompt_len)
    logp = base.token_logprobs(params["policy"], model_cfg, tokens, mask, target)
    ref = base.token_logprobs(params["reference"], model_cfg, tokens, mask, target)
    r = implicit_reward(logp.sum(axis=1), ref.sum(axis=1), beta)
    return jax.nn.sigmoid(r) if squash else r

  return critic
