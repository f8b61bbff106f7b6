"""What a run is built from: tokenizer, tasks, model, mesh, initial policy, the ``Context``.

Two code paths share the loop:

* the quickstart path: ``CharTokenizer``, a model built from
  ``config.model``'s dimensions with random initial parameters, the
  data-parallel SFT step;
* the paper path (``experiments/paper/*.py``): ``config.model.tokenizer``
  (``tokenizer.json`` / ``tokenizer.model``), ``config.model.checkpoint``
  (an HF Llama/Qwen2 directory: the architecture from its ``config.json``,
  the weights from its safetensors files, a fresh value head),
  ``config.sharding.strategy = "fsdp"`` (``alphallm.sharding``) and
  ``config.task.eval_knobs`` (eval problems from another split).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from alphallm import hf_import
from alphallm import io_utils
from alphallm import hf_tokenizer
from alphallm import metrics as metrics_lib
from alphallm import model as model_lib
from alphallm import progress
from alphallm import prompts
from alphallm import results as results_lib
from alphallm import schema
from alphallm import sharding
from alphallm import train
from alphallm import trajectories as traj_lib
from alphallm import validation
from alphallm.context import Context
from alphallm.tasks import Problem, Task, get_task, make_splits
from alphallm.tokenizer import CharTokenizer, Tokenizer

# config.model keys that are not TransformerConfig fields.
MODEL_EXTRA_KEYS = ("checkpoint", "tokenizer", "search_dtype", "rollout_checkpoint",
                    "prompt_wrapper")


def build_tokenizer(config) -> Tokenizer:
  """``config.model.tokenizer`` (a tokenizer.json / tokenizer.model) or ``CharTokenizer``.

  Any special ids work: sampling, search and training take PAD, BOS and EOS
  from the tokenizer (``pad_id`` / ``bos_id`` arguments, explicit masks). The
  ids are chosen as ``alphallm.hf_tokenizer`` documents: EOS is required; a
  tokenizer without a BOS uses its EOS (Qwen2), one without a PAD its UNK,
  else its EOS (Llama-3). PAD may thus equal EOS: no mask is derived from
  ``tokens != pad_id``, and token-level search keeps EOS reachable.

  Raises:
    ValueError: naming ``config.model.tokenizer``, when the tokenizer has no
      EOS token (nothing to stop at, nor for PAD / BOS to fall back on), or
      a special id that is not an id of its vocabulary.
  """
  path = config.model.tokenizer
  if not path:
    return CharTokenizer()
  try:
    tok = hf_tokenizer.load_tokenizer(path)
  except hf_tokenizer.SpecialTokenError as e:
    raise hf_tokenizer.SpecialTokenError(f"config.model.tokenizer={path!r}: {e}") from e
  for name in ("pad_id", "bos_id", "eos_id"):
    value = getattr(tok, name, None)
    if isinstance(value, bool) or not isinstance(value, int) or not (
        0 <= value < tok.vocab_size):
      raise ValueError(
          f"config.model.tokenizer={path!r}: the tokenizer's {name} is {value!r}, not an id "
          f"in [0, {tok.vocab_size}); see alphallm.hf_tokenizer for how the ids are chosen")
  return tok


def build_task(config) -> Task:
  """``config.task``'s task, its prompts in ``config.model.prompt_wrapper``'s template."""
  task = get_task(config.task.name, **config.task.knobs.to_dict())
  return prompts.wrap_task(task, config.model.prompt_wrapper or None)


def build_eval_task(config, task: Task) -> Task:
  """The task eval problems come from: ``config.task.eval_knobs``, else ``task`` itself.

  Both tasks must write and read completions alike (step delimiter and
  answer prefix), since one search and one decoder serve both.
  """
  knobs = config.task.eval_knobs
  if knobs is None:
    return task
  eval_task = prompts.wrap_task(get_task(config.task.name, **knobs.to_dict()),
                                config.model.prompt_wrapper or None)
  for attr in ("step_delimiter", "answer_prefix"):
    if getattr(eval_task, attr) != getattr(task, attr):
      raise ValueError(
          f"config.task.eval_knobs gives {attr}={getattr(eval_task, attr)!r} but "
          f"config.task.knobs gives {getattr(task, attr)!r}: the eval and train tasks must "
          "format completions alike")
  return eval_task


def build_model_config(config, tokenizer: Tokenizer) -> model_lib.TransformerConfig:
  """The policy's architecture: ``config.model``'s, or the checkpoint's config.json.

  A checkpoint vocabulary padded beyond the tokenizer's is cut to the
  tokenizer's ids (``hf_import.load_hf_checkpoint(vocab_size=...)``): the
  policy then never emits an id the tokenizer cannot decode.

  Raises:
    ValueError: naming the file, when the checkpoint's vocabulary is smaller
      than the tokenizer's or its positions fewer than ``config.data.seq_len``.
  """
  m = config.model
  ckpt = m.checkpoint
  if not ckpt:
    arch = {k: v for k, v in m.to_dict().items() if k not in MODEL_EXTRA_KEYS}
    return model_lib.TransformerConfig.from_dict(
        {**arch, "vocab_size": tokenizer.vocab_size, "max_len": config.data.seq_len})
  file = os.path.join(ckpt, hf_import.CONFIG_FILE)
  cfg = hf_import.load_hf_config(ckpt, dtype=m.dtype, param_dtype=m.param_dtype)
  cfg = dataclasses.replace(cfg, remat=bool(m.remat))
  if cfg.vocab_size < tokenizer.vocab_size:
    raise ValueError(f"{file}: vocab_size={cfg.vocab_size} is smaller than the "
                     f"{tokenizer.vocab_size} ids of config.model.tokenizer="
                     f"{m.tokenizer!r}")
  if config.data.seq_len > cfg.max_len:
    raise ValueError(f"config.data.seq_len={config.data.seq_len} exceeds {file}'s "
                     f"max_position_embeddings={cfg.max_len}")
  if cfg.vocab_size > tokenizer.vocab_size:
    progress.report("%s: vocab_size %d padded beyond the tokenizer's %d ids: keeping the first "
                    "%d rows of embed_tokens / lm_head", file, cfg.vocab_size,
                    tokenizer.vocab_size, tokenizer.vocab_size)
    cfg = dataclasses.replace(cfg, vocab_size=tokenizer.vocab_size)
  return cfg


def build_mesh(config) -> jax.sharding.Mesh:
  """The training mesh: ``("data", "fsdp")`` for FSDP, else the 1-D ``data`` mesh."""
  devices = jax.local_devices()[:validation.num_devices(config)]
  if config.sharding.strategy == "fsdp":
    shape = tuple(-1 if v == schema.AUTO else v for v in config.sharding.mesh_shape)
    return sharding.make_mesh(shape, devices)
  return train.data_mesh(devices)


def initial_policy(config, model_cfg: model_lib.TransformerConfig, mesh) -> Any:
  """The policy before any SFT: the HF checkpoint's weights, else a random init.

  A checkpoint is loaded straight into its FSDP shards on an FSDP mesh (no
  device ever holds a whole tensor), onto the default device otherwise. Its
  value head is fresh (zero kernel, as ``model.init``).
  """
  ckpt = config.model.checkpoint
  if not ckpt:
    return model_lib.init_params(model_cfg, jax.random.key(config.seed))
  placement = None
  if train.is_fsdp_mesh(mesh):
    placement = sharding.hf_param_sharding(mesh, config.sharding.min_size)
  loaded_cfg, params = hf_import.load_hf_checkpoint(
      ckpt, dtype=model_cfg.dtype, param_dtype=model_cfg.param_dtype, sharding=placement,
      vocab_size=model_cfg.vocab_size)
  if dataclasses.replace(loaded_cfg, remat=model_cfg.remat) != model_cfg:
    raise ValueError(f"{ckpt}: the checkpoint's config changed while the run was starting "
                     f"({loaded_cfg} != {model_cfg})")
  return params


def cast_for_search(config, params) -> Any:
  """``params`` in ``config.model.search_dtype`` (unchanged when unset or equal)."""
  name = config.model.search_dtype
  if not name:
    return params
  dtype = jnp.dtype(name)
  return jax.tree.map(lambda x: x if x.dtype == dtype else x.astype(dtype), params)


def write_problems(path: str, problems: list[Problem]) -> None:
  io_utils.atomic_write_text(
      path, "".join(json.dumps(p.to_json(), sort_keys=True) + "\n" for p in problems))


def read_problems(path: str) -> list[Problem]:
  """Problems of a JSONL file written by ``write_problems``; errors name file and line."""
  out = []
  with open(path, encoding="utf-8") as f:
    for lineno, line in enumerate(f, 1):
      try:
        out.append(Problem.from_json(json.loads(line)))
      except (json.JSONDecodeError, ValueError, TypeError) as e:  # TypeError: not an object
        raise ValueError(f"{path}:{lineno}: malformed problem record: {e}") from e
  if not out:
    raise ValueError(f"{path}: no problems")
  return out


def on_mesh(ctx: Context, params):
  """``params`` placed on the mesh for search and decoding, whether just trained or restored.

  Replicated on a data-parallel mesh. On an FSDP mesh they stay sharded by
  the FSDP rule (``config.sharding.min_size``), so no device holds a whole
  model: the jitted search and decoders are then partitioned by GSPMD, which
  all-gathers each weight where it is used.

  Training leaves parameters replicated on ``ctx.mesh``, a restored checkpoint
  on one device; a resumed run mixes both (e.g. restored critics, a policy
  whose SFT resumed), which jitted search rejects. One placement also keeps
  a resumed run bit-identical to an uninterrupted one.
  """
  if train.is_fsdp_mesh(ctx.mesh):
    return sharding.shard_params(params, ctx.mesh, ctx.config.sharding.min_size)
  return train.replicate(params, ctx.mesh)


def build_context(config: ml_collections.ConfigDict, workdir: str) -> Context:
  """The tokenizer, tasks, splits, model config and mesh of a run.

  With ``config.task.eval_knobs`` the eval problems come from that task (e.g.
  GSM8K's test split) and the demonstrations from ``config.task.knobs``'s.
  """
  tokenizer = build_tokenizer(config)
  task = build_task(config)
  eval_task = build_eval_task(config, task)
  demos, eval_problems = make_splits(task, config.seed, config.data.num_demos,
                                     config.data.num_eval,
                                     eval_task=None if eval_task is task else eval_task)
  write_problems(os.path.join(workdir, "eval_problems.jsonl"), eval_problems)
  model_cfg = build_model_config(config, tokenizer)
  mesh = build_mesh(config)
  # Prompts are padded to a multiple of 16 tokens so every search compiles once.
  longest = max([len(tokenizer.encode(eval_task.prompt(p))) for p in eval_problems]
                + [len(tokenizer.encode(task.prompt(p))) for p in demos]) + 1
  prompt_len = -(-(longest + 8) // 16) * 16
  return Context(config=config, workdir=workdir, task=task, eval_task=eval_task,
                 tokenizer=tokenizer, model_cfg=model_cfg, mesh=mesh, demos=demos,
                 eval_problems=eval_problems,
                 writer=metrics_lib.MetricWriter(workdir),
                 results=results_lib.Results(workdir), prompt_len=prompt_len,
                 store=traj_lib.TrajectoryStore(os.path.join(workdir, "trajectories")),
                 fsdp_min_size=(config.sharding.min_size if train.is_fsdp_mesh(mesh)
                                else None))
