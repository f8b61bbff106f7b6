"""The critics' life in the loop: collect data, train, calibrate, fill the search's slots.

``train_critics`` trains the critics named in ``config.critics.kinds`` on
trajectories sampled from the round-0 policy (fresh prompts, verifier
labels: training data only), calibrates each on held-out samples
(``critics.json``, the paper's Table 8 analog) and returns them;
``search_slots`` assembles what the search scores nodes with.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from alphallm import checkpoint
from alphallm import critic_data
from alphallm import critics as critics_lib
from alphallm import hf_import
from alphallm import io_utils
from alphallm import progress
from alphallm import sharding
from alphallm import train
from alphallm.context import Context
from alphallm import tools
from alphallm.search import critic_slots


def train_critics(ctx: Context, policy_params) -> dict[str, critics_lib.Critic]:
  """Trains (or restores) each critic of ``config.critics.kinds``; ``{kind: Critic}``."""
  ccfg = ctx.config.critics
  if not ccfg.kinds:
    return {}
  base = critics_lib.CriticConfig.from_config(ccfg.critic)
  out: dict[str, critics_lib.Critic] = {}
  report_path = ctx.path("critics.json")
  report = io_utils.read_json(report_path) if os.path.exists(report_path) else {}
  data = None
  for kind in ccfg.kinds:
    critic = initial_critic(ctx, base, kind, policy_params)
    ckpt_dir = ctx.path("checkpoints", f"critic_{kind}")
    if data is None and not _finished(ckpt_dir, base.train.steps):
      sampler = critic_data.PolicySampler.from_config(policy_params, ctx.model_cfg,
                                                      ctx.tokenizer, base.collect,
                                                      desc="critic data")
      problems = ctx.fresh_problems(ccfg.num_problems, tag="critic_data")
      data = critic_data.collect_critic_data(ctx.task, problems, sampler,
                                             ctx.rng("critic_data"), base.collect)
    if data is not None:
      dataset = critic_data.critic_dataset(
          kind, ctx.tokenizer, data, base.seq_len, delimiter=ctx.task.step_delimiter,
          prm_label=base.prm_label, prm_threshold=base.prm_threshold)
    else:
      dataset = _empty_value_dataset(base.seq_len)
    critic, _ = critics_lib.train_critic(critic, dataset, base.train, ctx.mesh, ckpt_dir=ckpt_dir,
                                         seed=ctx.config.seed, desc=f"critic_{kind}")
    out[kind] = critic
    if kind not in report:
      report[kind] = calibrate(ctx, critic, policy_params, base)
      io_utils.atomic_write_json(report_path, report)
      progress.report("critic %s: precision %.2f recall %.2f ECE %.3f", kind,
                      report[kind]["precision"], report[kind]["recall"], report[kind]["ece"])
  return out


def initial_critic(ctx: Context, base: critics_lib.CriticConfig, kind: str,
                   policy_params) -> critics_lib.Critic:
  """A fresh critic of ``kind``: from ``config.critics.checkpoint`` when set.

  With a checkpoint (an HF directory, e.g. Llama-2-13b for the 70B runs) the
  critic's trunk is that model and its value head fresh; the architecture
  comes from the checkpoint's config.json, so any key of
  ``config.critics.critic.model`` other than ``dtype``/``param_dtype`` must
  agree with it. Otherwise ``critics.init_critic`` builds it from
  ``critic.model`` (or wraps the policy with ``shared_trunk``).
  """
  ckpt = ctx.config.critics.checkpoint
  if not ckpt:
    return critics_lib.init_critic(base, ctx.tokenizer.vocab_size, ctx.rng("critic_init", kind),
                                   ctx.model_cfg, policy_params, kind=kind)
  model = dict(base.model)
  dtype = model.pop("dtype", "float32")
  param_dtype = model.pop("param_dtype", None)
  file = os.path.join(ckpt, hf_import.CONFIG_FILE)
  cfg = hf_import.load_hf_config(ckpt, dtype=dtype, param_dtype=param_dtype)
  for key, value in sorted(model.items()):
    if not hasattr(cfg, key) or getattr(cfg, key) != value:
      raise ValueError(f"config.critics.critic.model.{key}={value!r} disagrees with {file} "
                       f"(config.critics.checkpoint), which gives {getattr(cfg, key, None)!r}; "
                       "remove the key or make it match")
  if cfg.vocab_size < ctx.tokenizer.vocab_size:
    raise ValueError(f"{file}: vocab_size={cfg.vocab_size} is smaller than the "
                     f"{ctx.tokenizer.vocab_size} ids of the policy's tokenizer")
  if base.seq_len > cfg.max_len:
    raise ValueError(f"config.critics.critic.seq_len={base.seq_len} exceeds {file}'s "
                     f"max_position_embeddings={cfg.max_len}")
  # train.fit shards a critic with the default threshold on an FSDP mesh: load it so. Its
  # vocabulary is cut to the tokenizer's, as the policy's (builders.build_model_config).
  placement = sharding.hf_param_sharding(ctx.mesh) if train.is_fsdp_mesh(ctx.mesh) else None
  cfg, params = hf_import.load_hf_checkpoint(ckpt, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
                                             sharding=placement,
                                             vocab_size=ctx.tokenizer.vocab_size)
  return critics_lib.Critic(kind, cfg, params, shared_trunk=False)


def _finished(ckpt_dir: str, steps: int) -> bool:
  if not os.path.isdir(ckpt_dir):
    return False
  ckpt = checkpoint.Checkpointer(ckpt_dir)
  latest = ckpt.latest_step()
  ckpt.close()
  return latest is not None and latest >= steps


def _empty_value_dataset(seq_len: int) -> dict[str, np.ndarray]:
  """A placeholder dataset for a critic whose training already finished (never read)."""
  z = np.zeros((1, seq_len), np.float32)
  return {"tokens": np.zeros((1, seq_len), np.int32), "token_mask": z.astype(bool),
          "loss_mask": z, "value_target": z, "value_mask": z}


def calibrate(ctx: Context, critic, policy_params, base) -> dict[str, float]:
  """Precision / recall / ECE of ``critic`` on policy samples for held-out problems."""
  sampler = critic_data.PolicySampler.from_config(policy_params, ctx.model_cfg, ctx.tokenizer,
                                                  base.collect, desc="critic calibration")
  problems = ctx.eval_problems[:ctx.config.critics.num_calibration_problems]
  held_out = critic_data.collect_critic_data(
      ctx.eval_task, problems, sampler, ctx.rng("critic_calibration"),
      dataclasses.replace(base.collect, mc_rollouts=0, num_samples=2))
  # One judgement per trajectory (its final state) against the verifier's label.
  dataset = critic_data.critic_dataset("orm", ctx.tokenizer, held_out, base.seq_len)
  return critics_lib.evaluate_critic(critic, dataset)


def search_slots(ctx: Context, critics: dict[str, critics_lib.Critic]):
  """``(mcts.Critics, critic_params)``: the value, PRM and ORM slots of the node score.

  Each trained critic fills its own slot (``search.critic_slots``); a slot
  with no dedicated critic is filled by the "value" critic, so a run that
  trains only a value function still scores steps and answers with it. The
  task's step checker (``tools.make_task_checker``: the calculator when
  ``config.critics.calculator``, and the answer-format check of tasks that
  declare ``answer_charset``) multiplies every slot, so a state with a wrong
  step scores 0. No slot ever sees the answer key.
  """
  value = critics.get("value")
  checker = tools.make_task_checker(ctx.tokenizer, ctx.task, ctx.config.critics.calculator)
  return critic_slots.critic_slots(value=value, prm=critics.get("prm", value),
                                   orm=critics.get("orm", value), step_checker=checker)
