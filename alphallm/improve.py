"""Policy improvement: fine-tune the policy on what the search found (the paper's SFT step).

``run_sft`` is the resumable SFT of the policy (round 0's warm start and each
round's improvement). ``round_dataset`` gathers the kept trajectories (of
this round, or of all rounds so far with ``loop.cumulative``) with the
demonstrations (``loop.include_demos``); ``distillation_dataset`` adds the
search's improved root policy as weighted targets (``loop.distill``,
AlphaZero-style).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import ml_collections
import numpy as np

from alphallm import data
from alphallm import metrics as metrics_lib
from alphallm import model as model_lib
from alphallm import schema
from alphallm import train
from alphallm import trajectories as traj_lib
from alphallm.context import Context


def sft_steps(sft_cfg, num_examples: int) -> int:
  """``sft_cfg.steps``, capped at ``sft_cfg.epochs`` passes over the data when > 0."""
  steps = int(sft_cfg.steps)
  if sft_cfg.epochs:
    steps = min(steps, max(1, math.ceil(sft_cfg.epochs * num_examples / int(sft_cfg.batch_size))))
  return steps


def run_sft(sft_cfg, model_cfg: model_lib.TransformerConfig, dataset: dict[str, np.ndarray],
            init_params, mesh, ckpt_dir: str, seed: int, desc: str = "sft",
            writer: metrics_lib.MetricWriter | None = None, min_size: int | None = None):
  """Supervised fine-tuning of the policy (``train.fit``), resumable. Returns the parameters.

  ``sft_cfg.epochs`` (when > 0) caps the steps at that many passes over
  ``dataset`` (the paper's "up to 3 epochs"). On an FSDP mesh the step is
  ``sharding.make_fsdp_train_step`` with threshold ``min_size`` and the
  returned parameters are sharded.
  """
  resolved = ml_collections.ConfigDict(sft_cfg.to_dict())
  resolved.steps = sft_steps(sft_cfg, len(dataset["tokens"]))
  if sft_cfg.end_learning_rate == schema.AUTO:
    del resolved["end_learning_rate"]
  params, _ = train.fit(resolved, model_cfg, dataset, init_params, mesh, seed=seed,
                        ckpt_dir=ckpt_dir, value_coef=sft_cfg.value_coef, policy_coef=1.0,
                        desc=desc, writer=writer, min_size=min_size)
  return params


def round_dataset(ctx: Context, round_: int) -> dict[str, np.ndarray] | None:
  """SFT rows of round ``round_``: kept trajectories (+ demonstrations, + distillation)."""
  lc, task = ctx.config.loop, ctx.task
  rounds = range(1, round_ + 1) if lc.cumulative else [round_]
  prompts, completions = [], []
  for r in rounds:
    # Exactly the shards the round's search recorded: a missing or changed one is an
    # error naming it (trajectories.ManifestError), never less data.
    for rec in traj_lib.read_manifest_records(ctx.search_manifest(r)):
      if rec["final"]["kept"]:
        prompts.append(rec["prompt"])
        completions.append(rec["completion"])
  if lc.include_demos:
    prompts += [task.prompt(p) for p in ctx.demos]
    completions += [task.demonstration(p) for p in ctx.demos]
  if not prompts:
    return None
  dataset = data.encode_examples(ctx.tokenizer, prompts, completions, ctx.config.data.seq_len,
                                 prompt_loss_weight=ctx.config.data.prompt_loss_weight)
  if lc.distill:
    dataset = _concat(dataset, distillation_dataset(ctx, round_))
  return dataset


def distillation_dataset(ctx: Context, round_: int) -> dict[str, np.ndarray]:
  """Root options weighted by mctx's improved policy (``action_weights``).

  Each root option ``o_i`` of a searched prompt is a target whose per-token
  loss weight is ``action_weights_i``: the cross-entropy of the policy's
  option distribution against the improved policy, AlphaZero-style.
  """
  prompts, options, weights = [], [], []
  for rec in traj_lib.read_manifest_records(ctx.search_manifest(round_)):
    extra = rec.get("extra", {})
    for option, w in zip(extra.get("root_options", []), extra.get("action_weights", [])):
      if option and w > 1e-3:
        prompts.append(rec["prompt"])
        options.append(option)
        weights.append(float(w))
  if not prompts:
    return {}
  ds = data.encode_examples(ctx.tokenizer, prompts, options, ctx.config.data.seq_len,
                            append_eos=False)
  ds["loss_mask"] = ds["loss_mask"] * np.asarray(weights, np.float32)[:, None] \
      * ctx.config.loop.distill_weight
  return ds


def _concat(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  if not b:
    return a
  return {k: np.concatenate([a[k], b[k]]) for k in a}


def copy_params(params: Any) -> Any:
  """The train step donates its input; keep the caller's parameters alive."""
  return jax.tree.map(lambda x: x.copy(), params)
