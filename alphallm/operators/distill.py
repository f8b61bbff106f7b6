"""Distillation of the search's improved policy at every expanded node (AlphaZero-style).

``alphallm.improve.distillation_dataset`` distils the root only. Here every
expanded node s with real children o_1..o_k contributes a cross-entropy of
the policy's option distribution against the improved policy pi_hat(.|s)::

  H_s = -sum_i pi_hat(o_i|s) log pi(o_i|s),   log pi(o_i|s) = sum_t log pi(token_t | s, o_i,<t)

and the loss is the mean over nodes, ``L = sum_s H_s / #nodes`` (``distill_loss``:
``-sum_b w_b logp_b / sum_b w_b`` with row weights ``w = pi_hat``, which sum
to 1 per node). The target pi_hat is either

* the children's visit counts, ``N(s, o_i)^(1/tau) / sum_j N(s, o_j)^(1/tau)``
  (``visit_targets``; tau = 1 gives mctx's ``action_weights`` at the root), or
* given probabilities per node, e.g. Gumbel MuZero's completed-Q policy
  ``softmax(logits + sigma(completed Q))`` (``rows_from_groups(targets=...)``).

The rows are weighted SFT rows: prompt = the policy's prompt + the node's
prefix, completion = the option (EOS appended when it ends the solution),
``loss_mask`` scaled by the row's weight, so ``train.sft_loss`` trains on them
too (then normalised by weighted tokens rather than by nodes).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from jaxtyping import Array, Float

from alphallm import data
from alphallm import model as model_lib
from alphallm.operators import base
from alphallm.operators import tree as tree_lib


@dataclasses.dataclass(frozen=True)
class DistillRow:
  """One target option: ``prompt`` (prompt + node prefix), ``option``, weight pi_hat(o|s)."""

  prompt: str
  option: str
  weight: float
  terminal: bool
  node: int = 0


def visit_targets(visits: Sequence[int], temperature: float = 1.0) -> np.ndarray:
  """``[k]`` ``N_i^(1/tau) / sum_j N_j^(1/tau)``; all-zero visits give uniform weights."""
  if temperature <= 0:
    raise ValueError(f"visit_targets: temperature must be > 0, got {temperature!r}")
  v = np.asarray(visits, np.float64) ** (1.0 / temperature)
  total = v.sum()
  return v / total if total > 0 else np.full(v.shape, 1.0 / max(len(v), 1))


def rows_from_groups(prompt: str, groups: Sequence[tree_lib.SiblingGroup],
                     temperature: float = 1.0,
                     targets: Mapping[int, Sequence[float]] | None = None,
                     min_weight: float = 1e-3) -> list[DistillRow]:
  """Weighted rows of every group (node): visit targets, or ``targets[node]`` when given.

  ``targets`` maps a group's ``node`` to probabilities over its children (in
  the group's order; renormalised over them); rows under ``min_weight`` are
  dropped (they carry almost no gradient), and so are empty non-terminal
  options (nothing to learn); an empty terminal option is the row "EOS".
  """
  rows = []
  for g in groups:
    if targets is not None:
      if g.node not in targets:
        raise ValueError(f"rows_from_groups: no target probabilities for node {g.node}")
      p = np.asarray(targets[g.node], np.float64)
      if p.shape != (len(g.options),) or not np.all(np.isfinite(p)) or np.any(p < 0) \
          or p.sum() <= 0:
        raise ValueError(f"rows_from_groups: targets for node {g.node} must be {len(g.options)} "
                         f"non-negative finite numbers with a positive sum, got {p.tolist()!r:.80}")
      p = p / p.sum()
    else:
      p = visit_targets(g.visits, temperature)
    for option, w, term in zip(g.options, p, g.terminal):
      if (option or term) and w >= min_weight:   # an EOS-only step is a target
        rows.append(DistillRow(prompt + g.prefix, option, float(w), bool(term), g.node))
  return rows


def rows_from_tree(tree: Any, b: int, prompt: str, tokenizer: Any, temperature: float = 1.0,
                   min_visits: int = 1, min_weight: float = 1e-3) -> list[DistillRow]:
  """``rows_from_groups`` of problem ``b`` of a finished search (visit-count targets)."""
  return rows_from_groups(prompt, tree_lib.sibling_groups(tree, b, tokenizer, min_visits),
                          temperature, None, min_weight)


def encode_rows(tokenizer: Any, rows: Sequence[DistillRow], seq_len: int, scale: float = 1.0
                ) -> dict[str, np.ndarray]:
  """Weighted SFT rows: ``encode_examples``' rows, ``loss_mask *= scale * weight``, ``weight``."""
  if not rows:
    raise ValueError("encode_rows: no distillation rows")
  enc = [data.encode_examples(tokenizer, [r.prompt], [r.option], seq_len, append_eos=r.terminal)
         for r in rows]
  out = {k: np.concatenate([e[k] for e in enc]) for k in enc[0]}
  w = np.asarray([r.weight for r in rows], np.float32) * float(scale)
  out["loss_mask"] = out["loss_mask"] * w[:, None]
  out["weight"] = w
  return out


def distill_loss(seq_logp: Float[Array, "B"], weight: Float[Array, "B"],
                 axis_name: str | None = None) -> tuple[Float[Array, ""], dict]:
  """``-sum_b w_b logp_b / sum_b w_b``: the mean over nodes of H(pi_hat, pi) (module doc)."""
  loss = base.masked_mean(-seq_logp, weight, axis_name)
  return loss, {"loss": loss, "nodes": base.global_sum(weight, axis_name)}


def distill_batch_loss(params: Any, model_cfg: model_lib.TransformerConfig, batch: dict,
                       axis_name: str | None = None) -> tuple[Float[Array, ""], dict]:
  """``distill_loss`` of an ``encode_rows`` batch under ``params``."""
  logp = base.sequence_logprobs(params, model_cfg, batch["tokens"], batch["token_mask"],
                                batch["loss_mask"])
  return distill_loss(logp, batch["weight"], axis_name)
