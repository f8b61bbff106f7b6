"""``train_and_evaluate(config, workdir)``: the experiment behind ``alphallm.main``.

It validates the config, locks the workdir and runs the self-improvement loop
(``alphallm.loop``). This module also holds the pieces the loop builds on:
config validation, the tokenizer, task, model, mesh and initial policy
(built from scratch, or from an HF checkpoint directory), SFT (``run_sft``)
and the baseline decoding methods named in ``config.eval.methods``.

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
import logging
import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm

from alphallm import decoding
from alphallm import evaluation
from alphallm import hf_import
from alphallm import hf_tokenizer
from alphallm import imagination
from alphallm import io_utils
from alphallm import metrics as metrics_lib
from alphallm import model as model_lib
from alphallm import prompts
from alphallm import sharding
from alphallm import train
from alphallm import workdir as workdir_lib
from alphallm.tasks import Problem, Task, get_task
from alphallm.tokenizer import CharTokenizer, Tokenizer

log = logging.getLogger(__name__)


def report(msg: str, *args) -> None:
  """A line the user should see whatever the log verbosity (progress-bar safe)."""
  text = msg % args if args else msg
  log.info(text)
  tqdm.tqdm.write(text)


# ---------------------------------------------------------------------------
# Config validation.

# Imagination source of tasks without rule-based rewrites (GSM8K, MATH): the
# round's prompts are train-split problems held out from the demonstrations,
# the critic data and the eval split (``loop.imagine_round``).
HELD_OUT_SOURCE = "held_out"
IMAGINATION_SOURCES = imagination.SOURCES + (HELD_OUT_SOURCE,)

_SFT_KEYS = ("steps", "batch_size", "learning_rate", "warmup_steps", "weight_decay",
             "grad_clip", "value_coef", "checkpoint_every", "max_to_keep", "log_every",
             "end_learning_rate", "epochs")
# config.model keys besides the TransformerConfig fields.
_MODEL_EXTRA_KEYS = ("checkpoint", "tokenizer", "search_dtype", "rollout_checkpoint",
                     "prompt_wrapper")
# Keys of TransformerConfig that come from elsewhere (the tokenizer, data.seq_len).
_MODEL_DERIVED_KEYS = ("vocab_size", "max_len")
# The keys every section may hold: the ones the loop reads. ``search``,
# ``critics.critic`` and ``task.knobs`` are checked by their own builders.
_SECTION_KEYS = {
    "": ("seed", "num_devices", "task", "data", "model", "sft", "critics", "search", "eval",
         "loop", "sharding"),
    "task": ("name", "knobs", "eval_knobs"),
    "data": ("num_demos", "num_eval", "seq_len", "prompt_loss_weight"),
    "sft": _SFT_KEYS + ("enabled",),
    "critics": ("kinds", "num_problems", "num_calibration_problems", "critic", "calculator",
                "checkpoint", "tool_orm"),
    "eval": ("methods", "batch_size", "search_batch_size", "max_new_tokens", "temperature"),
    "loop": ("rounds", "prompts_per_round", "round_prompts", "imagination_mix",
             "imagination_temperature",
             "search_batch_size", "select", "filter_by", "gamma", "cumulative", "include_demos",
             "distill", "distill_weight", "sft"),
    "loop.sft": _SFT_KEYS,
    "sharding": ("strategy", "mesh_shape", "min_size"),
}
# Keys of the paper configs that name a feature the loop does not have: an
# error whenever they are set (a false / empty value is accepted and inert).
_UNSUPPORTED = {
    "model.rollout_checkpoint": (
        "eta-MCTS's fast rollouts use the policy itself: alphallm.search.mcts has no "
        "separate rollout model; set it to ''"),
    "critics.tool_orm": (
        "the host-side tool ORM (critics.tool_orm_score) is not wired into the search; "
        "config.critics.calculator is the in-graph step calculator"),
}


def _get(config, path: str, default: Any = None) -> Any:
  """``config.<path>`` or ``default`` when a section or key on the way is absent."""
  node = config
  for part in path.split("."):
    if node is None or not hasattr(node, "keys") or part not in node:
      return default
    node = node[part]
  return node


def _model_keys(config) -> tuple[str, ...]:
  """The keys config.model may hold (architecture keys only without a checkpoint)."""
  arch = tuple(f.name for f in dataclasses.fields(model_lib.TransformerConfig)
               if f.name not in _MODEL_DERIVED_KEYS)
  if not _get(config, "model.checkpoint"):
    return arch + _MODEL_EXTRA_KEYS
  return ("dtype", "param_dtype", "remat") + _MODEL_EXTRA_KEYS


def _check_keys(config) -> None:
  """Every key is one the loop reads: a key no code reads is an error, not ignored."""
  sections = {**_SECTION_KEYS, "model": _model_keys(config)}
  for section, known in sections.items():
    node = _get(config, section) if section else config
    if node is None:
      continue
    unknown = sorted(set(node.keys()) - set(known))
    if not unknown:
      continue
    where = f"config.{section}" if section else "config"
    if section == "model" and _get(config, "model.checkpoint"):
      raise ValueError(
          f"{where} has architecture key(s) {unknown}, but config.model.checkpoint="
          f"{config.model.checkpoint!r} is set: the architecture comes from its "
          f"{hf_import.CONFIG_FILE}; remove them (known keys with a checkpoint: "
          f"{sorted(known)})")
    raise ValueError(f"{where} has unknown key(s) {unknown}: no code reads them; known: "
                     f"{sorted(known)}")
  for path, reason in _UNSUPPORTED.items():
    value = _get(config, path)
    if value:
      raise ValueError(f"config.{path}={value!r:.100} is not supported: {reason}")


def sharding_strategy(config) -> str:
  """``config.sharding.strategy``; ``"data_parallel"`` when there is no sharding section."""
  return _get(config, "sharding.strategy", "data_parallel")


def fsdp_min_size(config) -> int:
  """The FSDP rule's replication threshold (``config.sharding.min_size``)."""
  return int(_get(config, "sharding.min_size", sharding.DEFAULT_MIN_SIZE))


def _check_paper_keys(config, n: int) -> None:
  """Values of the HF-checkpoint, sharding, eval-split and schedule keys."""
  strategy = sharding_strategy(config)
  if strategy not in sharding.STRATEGIES:
    raise ValueError(f"config.sharding.strategy must be one of {sharding.STRATEGIES}, "
                     f"got {strategy!r}")
  if strategy == "fsdp":
    shape = tuple(_get(config, "sharding.mesh_shape", (1, -1)))
    try:
      sharding.make_mesh(shape, jax.local_devices()[:n])
    except ValueError as e:
      raise ValueError(f"config.sharding.mesh_shape={shape!r} does not fit the {n} devices "
                       f"used (config.num_devices={config.num_devices}): {e}") from e
    min_size = _get(config, "sharding.min_size", 0)
    if not isinstance(min_size, int) or min_size < 0:
      raise ValueError(f"config.sharding.min_size must be an int >= 0, got {min_size!r}")
  wrapper = _get(config, "model.prompt_wrapper")
  if wrapper:
    prompts.resolve_template(wrapper)
  search_dtype = _get(config, "model.search_dtype")
  if search_dtype:
    try:
      ok = jnp.issubdtype(jnp.dtype(search_dtype), jnp.floating)
    except TypeError:
      ok = False
    if not ok:
      raise ValueError(f"config.model.search_dtype must be a float dtype name such as "
                       f"'bfloat16' or 'float32', got {search_dtype!r}")
  for path in ("model.checkpoint", "model.tokenizer", "critics.checkpoint"):
    value = _get(config, path)
    if value and not os.path.exists(value):
      raise FileNotFoundError(f"config.{path}={value!r} does not exist (checkpoints and "
                              "tokenizers are read from local paths, never downloaded)")
  if _get(config, "critics.checkpoint") and _get(config, "critics.critic.shared_trunk"):
    raise ValueError("config.critics.checkpoint is set but config.critics.critic.shared_trunk "
                     "is True: a shared-trunk critic is the policy itself; set one of them")
  enabled = _get(config, "sft.enabled", True)
  if not isinstance(enabled, bool):
    raise ValueError(f"config.sft.enabled must be True or False, got {enabled!r}")
  for section in ("sft", "loop.sft"):
    epochs = _get(config, f"{section}.epochs")
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, (int, float))
                               or epochs <= 0):
      raise ValueError(f"config.{section}.epochs must be > 0, got {epochs!r}")
    end_lr = _get(config, f"{section}.end_learning_rate")
    if end_lr is not None and (not isinstance(end_lr, (int, float)) or end_lr < 0):
      raise ValueError(f"config.{section}.end_learning_rate must be >= 0, got {end_lr!r}")


def _check_imagination(config) -> None:
  """The round-prompt sizes and imagination sources are ones the task supports."""
  lc = config.loop
  sizes = tuple(lc.get("round_prompts", ()) or ())
  if sizes and (len(sizes) < lc.rounds or any(
      isinstance(s, bool) or not isinstance(s, int) or s <= 0 for s in sizes)):
    raise ValueError(f"config.loop.round_prompts={sizes!r} must hold a positive int for each "
                     f"of the config.loop.rounds={lc.rounds} rounds")
  mix = dict(lc.imagination_mix)
  unknown = sorted(set(mix) - set(IMAGINATION_SOURCES))
  if unknown:
    raise ValueError(f"config.loop.imagination_mix={mix}: unknown source(s) {unknown}; "
                     f"known: {list(IMAGINATION_SOURCES)}")
  for source, weight in mix.items():
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 0:
      raise ValueError(f"config.loop.imagination_mix[{source!r}] must be a number >= 0, "
                       f"got {weight!r}")
  used = sorted(s for s, w in mix.items() if w > 0)
  if not used:
    raise ValueError(f"config.loop.imagination_mix={mix}: every weight is 0")
  if HELD_OUT_SOURCE in used and len(used) > 1:
    raise ValueError(f"config.loop.imagination_mix={mix}: {HELD_OUT_SOURCE!r} (held-out "
                     f"train problems) cannot be mixed with the rewriting sources {used}; "
                     f"give it the only non-zero weight")
  name = config.task.name
  rules = [s for s in used if s != HELD_OUT_SOURCE]
  if rules and not imagination.has_task_imagination(name):
    raise ValueError(
        f"config.loop.imagination_mix={mix}: task {name!r} has no rule-based imagination "
        f"(sources {rules} exist for the synthetic tasks only, see "
        f"alphallm.imagination.register_task_imagination); use "
        f"imagination_mix=dict({HELD_OUT_SOURCE}=1.0): each round searches train-split "
        "problems held out from the demonstrations, the critic data and the eval split")


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Keys the loop reads, and range checks that ml_collections' type checks cannot express."""
  _check_keys(config)

  def positive(path: str, allow_zero: bool = False):
    value = config
    for part in path.split("."):
      value = value[part]
    if not isinstance(value, (int, float)) or value < 0 or (value == 0 and not allow_zero):
      raise ValueError(f"config.{path} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")

  for path in ("data.num_demos", "data.num_eval", "data.seq_len", "sft.steps",
               "sft.batch_size", "sft.learning_rate", "eval.batch_size",
               "eval.max_new_tokens"):
    positive(path)
  positive("sft.warmup_steps", allow_zero=True)
  positive("sft.checkpoint_every")
  positive("eval.temperature", allow_zero=True)
  if "loop" in config:
    positive("loop.rounds", allow_zero=True)
    if config.loop.rounds:
      for path in ("loop.prompts_per_round", "loop.search_batch_size", "loop.sft.steps",
                   "loop.sft.batch_size", "loop.sft.learning_rate", "loop.sft.checkpoint_every"):
        positive(path)
      _check_imagination(config)
    if not 0.0 <= config.loop.gamma <= 1.0:
      raise ValueError(f"config.loop.gamma must be in [0, 1], got {config.loop.gamma!r}")
  if "search_batch_size" in config.eval:
    positive("eval.search_batch_size")
  n = num_devices(config)
  if config.sft.batch_size % n:
    raise ValueError(f"config.sft.batch_size={config.sft.batch_size} must be divisible by the "
                     f"{n} devices used (config.num_devices={config.num_devices})")
  _check_paper_keys(config, n)


def num_devices(config) -> int:
  available = jax.local_device_count()
  if config.num_devices < 0 or config.num_devices > available:
    raise ValueError(f"config.num_devices={config.num_devices} but {available} local devices "
                     "are available (0 means all)")
  return config.num_devices or available


# ---------------------------------------------------------------------------
# What the loop is built from.


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
  path = _get(config, "model.tokenizer")
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
  return prompts.wrap_task(task, _get(config, "model.prompt_wrapper"))


def build_eval_task(config, task: Task) -> Task:
  """The task eval problems come from: ``config.task.eval_knobs``, else ``task`` itself.

  Both tasks must write and read completions alike (step delimiter and
  answer prefix), since one search and one decoder serve both.
  """
  knobs = _get(config, "task.eval_knobs")
  if knobs is None:
    return task
  eval_task = prompts.wrap_task(get_task(config.task.name, **knobs.to_dict()),
                                _get(config, "model.prompt_wrapper"))
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
  ckpt = _get(config, "model.checkpoint")
  if not ckpt:
    arch = {k: v for k, v in m.to_dict().items() if k not in _MODEL_EXTRA_KEYS}
    return model_lib.TransformerConfig.from_dict(
        {**arch, "vocab_size": tokenizer.vocab_size, "max_len": config.data.seq_len})
  file = os.path.join(ckpt, hf_import.CONFIG_FILE)
  cfg = hf_import.config_from_hf(hf_import.read_hf_config(ckpt), dtype=m.get("dtype", "float32"),
                                 param_dtype=m.get("param_dtype", None))
  cfg = dataclasses.replace(cfg, remat=bool(m.get("remat", False)))
  if cfg.vocab_size < tokenizer.vocab_size:
    raise ValueError(f"{file}: vocab_size={cfg.vocab_size} is smaller than the "
                     f"{tokenizer.vocab_size} ids of config.model.tokenizer="
                     f"{_get(config, 'model.tokenizer')!r}")
  if config.data.seq_len > cfg.max_len:
    raise ValueError(f"config.data.seq_len={config.data.seq_len} exceeds {file}'s "
                     f"max_position_embeddings={cfg.max_len}")
  if cfg.vocab_size > tokenizer.vocab_size:
    report("%s: vocab_size %d padded beyond the tokenizer's %d ids: keeping the first %d rows "
           "of embed_tokens / lm_head", file, cfg.vocab_size, tokenizer.vocab_size,
           tokenizer.vocab_size)
    cfg = dataclasses.replace(cfg, vocab_size=tokenizer.vocab_size)
  return cfg


def build_mesh(config) -> jax.sharding.Mesh:
  """The training mesh: ``("data", "fsdp")`` for FSDP, else the 1-D ``data`` mesh."""
  devices = jax.local_devices()[:num_devices(config)]
  if sharding_strategy(config) == "fsdp":
    return sharding.make_mesh(tuple(config.sharding.mesh_shape), devices)
  return train.data_mesh(devices)


def initial_policy(config, model_cfg: model_lib.TransformerConfig, mesh) -> Any:
  """The policy before any SFT: the HF checkpoint's weights, else a random init.

  A checkpoint is loaded straight into its FSDP shards on an FSDP mesh (no
  device ever holds a whole tensor), onto the default device otherwise. Its
  value head is fresh (zero kernel, as ``model.init``).
  """
  ckpt = _get(config, "model.checkpoint")
  if not ckpt:
    return model_lib.init_params(model_cfg, jax.random.key(config.seed))
  placement = None
  if train.is_fsdp_mesh(mesh):
    placement = sharding.hf_param_sharding(mesh, fsdp_min_size(config))
  loaded_cfg, params = hf_import.load_hf_checkpoint(
      ckpt, dtype=model_cfg.dtype, param_dtype=model_cfg.param_dtype, sharding=placement,
      vocab_size=model_cfg.vocab_size)
  if dataclasses.replace(loaded_cfg, remat=model_cfg.remat) != model_cfg:
    raise ValueError(f"{ckpt}: the checkpoint's config changed while the run was starting "
                     f"({loaded_cfg} != {model_cfg})")
  return params


def cast_for_search(config, params) -> Any:
  """``params`` in ``config.model.search_dtype`` (unchanged when unset or equal)."""
  name = _get(config, "model.search_dtype")
  if not name:
    return params
  dtype = jnp.dtype(name)
  return jax.tree.map(lambda x: x if x.dtype == dtype else x.astype(dtype), params)


def sft_steps(sft_cfg, num_examples: int) -> int:
  """``sft_cfg.steps``, capped at ``sft_cfg.epochs`` passes over the data when set."""
  steps = int(sft_cfg.steps)
  epochs = sft_cfg.get("epochs", None) if hasattr(sft_cfg, "get") else None
  if epochs:
    steps = min(steps, max(1, math.ceil(epochs * num_examples / int(sft_cfg.batch_size))))
  return steps


def run_sft(sft_cfg, model_cfg: model_lib.TransformerConfig, dataset: dict[str, np.ndarray],
            init_params, mesh, ckpt_dir: str, seed: int, desc: str = "sft",
            writer: metrics_lib.MetricWriter | None = None, min_size: int | None = None):
  """Supervised fine-tuning of the policy (``train.fit``), resumable. Returns the parameters.

  ``sft_cfg.epochs`` (optional) caps the steps at that many passes over
  ``dataset`` (the paper's "up to 3 epochs"). On an FSDP mesh the step is
  ``sharding.make_fsdp_train_step`` with threshold ``min_size`` and the
  returned parameters are sharded.
  """
  steps = sft_steps(sft_cfg, len(dataset["tokens"]))
  if steps != int(sft_cfg.steps):
    sft_cfg = sft_cfg.copy_and_resolve_references()
    sft_cfg.steps = steps
  params, _ = train.fit(sft_cfg, model_cfg, dataset, init_params, mesh, seed=seed,
                        ckpt_dir=ckpt_dir, value_coef=sft_cfg.value_coef, policy_coef=1.0,
                        desc=desc, writer=writer, min_size=min_size)
  return params


# Methods named "NAME@N" draw N samples and choose one on the host with a selector.
_MULTI_SAMPLE = {"self_consistency": "majority", "best_of": "max_score",
                 "weighted_vote": "weighted_vote"}


def decoding_methods(config, model_cfg: model_lib.TransformerConfig, tokenizer: Tokenizer
                     ) -> dict[str, tuple[decoding.DecodeFn, evaluation.Selector | None]]:
  """The baseline decoding methods named in ``config.eval.methods``.

  Names: ``greedy``, ``sampling``, ``self_consistency@N`` (majority vote),
  ``best_of@N`` (value-head re-rank), ``weighted_vote@N`` (value-weighted vote).
  """
  ev = config.eval
  methods = {}
  for spec in ev.methods:
    base, _, n = spec.partition("@")
    if spec == "greedy":
      methods[spec] = (decoding.make_sampler(model_cfg, ev.max_new_tokens, tokenizer.eos_id,
                                             pad_id=tokenizer.pad_id), None)
    elif spec == "sampling":
      methods[spec] = (decoding.make_sampler(model_cfg, ev.max_new_tokens, tokenizer.eos_id,
                                             temperature=ev.temperature,
                                             pad_id=tokenizer.pad_id), None)
    elif base in _MULTI_SAMPLE and n.isdigit() and int(n) > 0:
      methods[spec] = (decoding.make_multi_sampler(model_cfg, int(n), ev.max_new_tokens,
                                                   tokenizer.eos_id, ev.temperature,
                                                   pad_id=tokenizer.pad_id),
                       decoding.SELECTORS[_MULTI_SAMPLE[base]])
    else:
      raise ValueError(
          f"config.eval.methods: unknown method {spec!r}; known: 'greedy', 'sampling', "
          + ", ".join(f"'{m}@N'" for m in _MULTI_SAMPLE))
  return methods


def write_problems(path: str, problems: list[Problem]) -> None:
  io_utils.atomic_write_text(
      path, "".join(json.dumps(p.to_json(), sort_keys=True) + "\n" for p in problems))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs the experiment in ``workdir`` (locked for the duration). Returns the rows.

  Round 0 (warm-start SFT, critics, evaluation), then ``config.loop.rounds``
  rounds of self-improvement (``alphallm.loop``).
  """
  validate_config(config)
  from alphallm import loop  # pylint: disable=import-outside-toplevel (loop imports this module)
  with workdir_lib.Workdir(workdir):
    io_utils.atomic_write_text(os.path.join(workdir, "config.json"),
                               config.to_json_best_effort(indent=2, sort_keys=True))
    return loop.run(config, workdir)
