"""The config schema: every key, its default, its type, its allowed values, one line of doc.

This is the one place a config key is declared (the flax ``configs/default.py``
manner). ``default_config()`` builds the full ``ConfigDict``; an experiment
file (``experiments/*.py``) starts from it and overrides only what differs;
the code reads attributes and never writes a default at the call site.

``validate(config)`` checks a config before any work (``alphallm.experiment``
calls it before the workdir is touched): unknown keys, types, names (methods,
policies, critic kinds, selections, tasks, dtypes, task knobs), ranges, the
finiteness of every float, batch sizes against the devices and cross-key
consistency. Every error is one ``ConfigError`` line::

    config.<full.key>=<value>: <why>; allowed: ...

``docs/configuration.md`` is generated from this module
(``python -m alphallm.schema > docs/configuration.md``; a test fails when they
differ).

The defaults are task-agnostic and CPU-sized: ``task.name`` has no default,
and everything a task needs beyond them (its knobs, a step checker) is set by
the experiment file.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import ml_collections

from alphallm import model as model_lib

AUTO = "auto"

# Names the loop accepts (the modules that implement them import these).
CRITIC_KINDS = ("value", "prm", "orm")
PRM_LABELS = ("soft", "hard")
SEARCH_POLICIES = ("gumbel", "puct", "uct")
GRANULARITIES = ("option", "token")
PRIORS = ("count", "logprob")
ANSWER_SELECTIONS = ("most_visited", "best_leaf", "orm_rerank", "orm_vote")
TRAJECTORY_SELECTIONS = ("best_leaf", "most_visited", "best_finished")
FILTERS = ("verifier", "orm")
IMAGINATION_SOURCES = ("perturb", "backward", "policy", "held_out")
SHARDING_STRATEGIES = ("data_parallel", "fsdp")
FLOAT_DTYPES = ("float32", "bfloat16", "float16")
# Decoding methods by name (alphallm.decoding builds them): plain names, and NAME@N.
PLAIN_METHODS = ("greedy", "sampling", "mcts")
SAMPLE_METHODS = ("self_consistency", "best_of", "weighted_vote")

# Keys whose value is a free-form mapping checked elsewhere (task constructor
# arguments, imagination weights, critic architecture): no schema below them.
MAPPING_KEYS = ("task.knobs", "task.eval_knobs", "loop.imagination_mix", "critics.critic.model")


class ConfigError(ValueError):
  """A config value that cannot run: one line naming the full key."""


@dataclasses.dataclass(frozen=True)
class Key:
  """One config key.

  Attributes:
    path: the full dotted key below ``config``.
    default: its default value (its type is the key's type).
    doc: one line for ``docs/configuration.md``.
    check: ``value -> why not`` (None when the value is fine).
    allowed: text of the allowed values for the error message and the docs.
    auto: the key also takes ``"auto"`` (resolved by the code that reads it).
  """

  path: str
  default: Any
  doc: str
  check: Callable[[Any], str | None] | None = None
  allowed: str = ""
  auto: bool = False


# ---------------------------------------------------------------------------
# Checks: each returns why a value is not allowed, or None.


def _is_num(x: Any) -> bool:
  return isinstance(x, (int, float)) and not isinstance(x, bool)


def _is_int(x: Any) -> bool:
  return isinstance(x, int) and not isinstance(x, bool)


def at_least(lo: float, integer: bool = False) -> Callable[[Any], str | None]:
  def check(x):
    if not (_is_int(x) if integer else _is_num(x)):
      return f"must be {'an int' if integer else 'a number'}"
    if not math.isfinite(x):
      return "must be finite"
    return None if x >= lo else f"must be >= {lo}"
  check.text = f"{'int' if integer else 'number'} >= {lo}"
  return check


def above(lo: float) -> Callable[[Any], str | None]:
  def check(x):
    if not _is_num(x) or not math.isfinite(x):
      return "must be a finite number"
    return None if x > lo else f"must be > {lo}"
  check.text = f"number > {lo}"
  return check


def in_range(lo: float, hi: float) -> Callable[[Any], str | None]:
  def check(x):
    if not _is_num(x) or not math.isfinite(x):
      return "must be a finite number"
    return None if lo <= x <= hi else f"must be in [{lo}, {hi}]"
  check.text = f"[{lo}, {hi}]"
  return check


def one_of(*choices: Any) -> Callable[[Any], str | None]:
  def check(x):
    return None if x in choices else "unknown value"
  check.text = ", ".join(repr(c) for c in choices)
  return check


def not_supported(inert: Any, why: str) -> Callable[[Any], str | None]:
  """A key naming a feature the loop does not have: only its inert value is accepted."""
  def check(x):
    return None if x == inert else f"not supported: {why}"
  check.text = repr(inert)
  return check


def is_bool(x: Any) -> str | None:
  return None if isinstance(x, bool) else "must be True or False"


def is_str(x: Any) -> str | None:
  """a string"""
  return None if isinstance(x, str) else "must be a string"


def _method_problem(name: Any) -> str | None:
  if not isinstance(name, str):
    return "a method name must be a string"
  base, sep, n = name.partition("@")
  if not sep:
    return None if name in PLAIN_METHODS else f"unknown method {name!r}"
  if base not in SAMPLE_METHODS:
    return f"unknown method {name!r}"
  return None if n.isdigit() and int(n) > 0 else f"{name!r}: N in NAME@N must be an int > 0"


def methods_check(x: Any) -> str | None:
  """method names: greedy, sampling, mcts, self_consistency@N, best_of@N, weighted_vote@N"""
  if not isinstance(x, (tuple, list)) or not x:
    return "must be a non-empty tuple of method names"
  for name in x:
    why = _method_problem(name)
    if why:
      return why
  return "a method is listed twice" if len(set(x)) != len(x) else None


def kinds_check(x: Any) -> str | None:
  """a tuple of 'value', 'prm', 'orm'"""
  if not isinstance(x, (tuple, list)):
    return "must be a tuple of critic kinds"
  bad = [k for k in x if k not in CRITIC_KINDS]
  return f"unknown critic kind(s) {bad}" if bad else None


def positive_ints_check(x: Any) -> str | None:
  """a tuple of ints > 0"""
  if not isinstance(x, (tuple, list)):
    return "must be a tuple of ints"
  return None if all(_is_int(v) and v > 0 for v in x) else "every entry must be an int > 0"


def mesh_shape_check(x: Any) -> str | None:
  """(data, fsdp): ints > 0, at most one 'auto'"""
  if not isinstance(x, (tuple, list)) or len(x) != 2:
    return "must be (data, fsdp)"
  if sum(v == AUTO for v in x) > 1:
    return "at most one axis may be 'auto'"
  ok = all(v == AUTO or (_is_int(v) and v > 0) for v in x)
  return None if ok else "each axis must be an int > 0 or 'auto'"


def dtype_check(x: Any) -> str | None:
  """'float32', 'bfloat16', 'float16'"""
  return None if x in FLOAT_DTYPES else "unknown dtype"


def optional_dtype_check(x: Any) -> str | None:
  """'', 'float32', 'bfloat16', 'float16'"""
  return None if x in ("",) + FLOAT_DTYPES else "unknown dtype"


def _sft(prefix: str, steps: int, lr: float, warmup: int, checkpoint_every: int,
         what: str) -> list[Key]:
  """The keys of one SFT phase (``sft`` and ``loop.sft``)."""
  p = prefix
  return [
      Key(f"{p}.steps", steps, f"optimizer steps of {what}", at_least(1, True)),
      Key(f"{p}.epochs", 0.0, "if > 0: cap the steps at this many passes over the data "
          "(the paper's 'up to 3 epochs')", at_least(0)),
      Key(f"{p}.batch_size", 32, "global batch (divisible by the devices)", at_least(1, True)),
      Key(f"{p}.learning_rate", lr, "peak AdamW learning rate", above(0)),
      Key(f"{p}.end_learning_rate", AUTO, "cosine decay's final rate; 'auto': 0.1 x peak",
          at_least(0), auto=True),
      Key(f"{p}.warmup_steps", warmup, "linear warm-up steps", at_least(0, True)),
      Key(f"{p}.weight_decay", 0.01, "AdamW weight decay", at_least(0)),
      Key(f"{p}.grad_clip", 1.0, "global-norm gradient clipping", at_least(0)),
      Key(f"{p}.value_coef", 0.0, "weight of the policy's own value-head loss (0: untrained "
          "value head)", at_least(0)),
      Key(f"{p}.checkpoint_every", checkpoint_every, "steps between checkpoints",
          at_least(1, True)),
      Key(f"{p}.max_to_keep", 2, "checkpoints kept", at_least(1, True)),
      Key(f"{p}.log_every", 50, "steps between metric records", at_least(1, True)),
  ]


def _model_keys() -> list[Key]:
  """``config.model``: TransformerConfig's fields (bar the derived ones) and the extras."""
  docs = {
      "num_layers": "transformer blocks", "embed_dim": "D, the residual width",
      "num_heads": "N, query heads", "num_kv_heads": "K, key/value heads (GQA when K < N)",
      "head_dim": "H, per-head width (even, for RoPE)", "mlp_dim": "F, SwiGLU hidden width",
      "rope_theta": "RoPE base", "norm_eps": "RMSNorm epsilon",
      "tie_embeddings": "the LM head is the embedding matrix",
      "qkv_bias": "biases on the q/k/v projections (Qwen2)",
      "dtype": "compute dtype", "param_dtype": "parameter (master weight) dtype",
      "remat": "rematerialise each block in the backward pass (memory for compute)",
      "rope_scaling": "'none' or 'llama3' (Llama-3.1/3.2 frequency scaling)",
      "rope_scaling_factor": "llama3 rope scaling: the low-frequency divisor",
      "rope_low_freq_factor": "llama3 rope scaling: low-frequency band edge",
      "rope_high_freq_factor": "llama3 rope scaling: high-frequency band edge",
      "rope_original_max_len": "llama3: the pretraining context "
                               "(original_max_position_embeddings)",
  }
  keys = []
  for f in dataclasses.fields(model_lib.TransformerConfig):
    if f.name in ("vocab_size", "max_len"):
      continue  # from the tokenizer and data.seq_len
    default = f.default
    if isinstance(default, bool):
      check = is_bool
    elif f.name in ("dtype", "param_dtype"):
      check = dtype_check
    elif f.name == "rope_scaling":
      check = one_of("none", "llama3")
    elif _is_int(default):
      check = at_least(1, True)
    elif _is_num(default):
      check = at_least(0)
    else:
      check = None
    doc = docs.get(f.name, f"TransformerConfig.{f.name}")
    keys.append(Key(f"model.{f.name}", default, doc + " (ignored with a checkpoint)"
                    if f.name not in ("dtype", "param_dtype", "remat") else doc, check))
  return keys + [
      Key("model.checkpoint", "", "HF checkpoint directory (config.json + safetensors); "
          "'': a random init from the keys above", is_str),
      Key("model.tokenizer", "", "tokenizer.json / tokenizer.model (file or dir); "
          "'': the character tokenizer", is_str),
      Key("model.search_dtype", "", "dtype the weights are cast to for search and decoding; "
          "'': unchanged", optional_dtype_check),
      Key("model.rollout_checkpoint", "", "a smaller fast-rollout policy: not supported, "
          "must be ''", not_supported("", "eta-MCTS's fast rollouts use the policy itself")),
      Key("model.prompt_wrapper", "", "chat template of every prompt: a preset "
          "(alphallm.prompts.PRESETS) or a '{prompt}' template; '': none", is_str),
  ]


def _search_keys(p: str = "search") -> list[Key]:
  return [
      Key(f"{p}.policy", "gumbel", "selection: Gumbel MuZero, PUCT (with prior), or UCT as "
          "printed in the paper (no prior)", one_of(*SEARCH_POLICIES)),
      Key(f"{p}.granularity", "option", "an action is a reasoning step or a token",
          one_of(*GRANULARITIES)),
      Key(f"{p}.num_simulations", 16, "simulations per search", at_least(1, True)),
      Key(f"{p}.num_actions", 4, "candidate steps per node", at_least(1, True)),
      Key(f"{p}.max_option_len", 16, "O: the longest option, in tokens", at_least(1, True)),
      Key(f"{p}.max_completion_len", 64, "C: the longest completion (a node reaching it is "
          "terminal)", at_least(1, True)),
      Key(f"{p}.temperature", 1.0, "sampling temperature of candidate options", at_least(0)),
      Key(f"{p}.prior", "count", "count (multiplicity of samples) or logprob",
          one_of(*PRIORS)),
      Key(f"{p}.gumbel_scale", 1.0, "Gumbel MuZero's noise scale", at_least(0)),
      Key(f"{p}.max_num_considered_actions", 16, "Gumbel MuZero's root actions considered "
          "(unused by the on-demand engine)",
          at_least(1, True)),
      Key(f"{p}.pb_c_init", 1.0, "PUCT's exploration constant", at_least(0)),
      Key(f"{p}.uct_c", 1.0, "UCT's exploration constant c (the paper's rule, no prior)",
          at_least(0)),
      Key(f"{p}.pb_c_base", 19652.0, "PUCT's c_base", at_least(1)),
      Key(f"{p}.dirichlet_fraction", 0.25, "PUCT root noise fraction", in_range(0, 1)),
      Key(f"{p}.dirichlet_alpha", 0.3, "PUCT root noise concentration", at_least(0)),
      Key(f"{p}.resample_tries", 4, "draws to replace a sampled step that is the same step as "
          "a sibling (state merge)", at_least(1, True)),
      Key(f"{p}.min_solutions", 0, "finished solutions per tree: the best unfinished leaves "
          "are completed after the search until there are this many", at_least(0, True)),
      Key(f"{p}.widening.c", 1.0, "progressive widening: a node with N visits may have "
          "ceil(c N^alpha) children", above(0)),
      Key(f"{p}.widening.alpha", 0.5, "progressive widening exponent", in_range(0, 1)),
      Key(f"{p}.recompute_prefix", False, "re-encode the prefix at each expansion (to "
          "measure the gain of KV reuse)", is_bool),
      Key(f"{p}.adaptive_branching.enabled", False, "importance-based child counts",
          is_bool),
      Key(f"{p}.adaptive_branching.alpha", 1.0, "n(s) = max(c_min, min(floor(alpha I(s)) + "
          "1, c_max))", at_least(0)),
      Key(f"{p}.adaptive_branching.importance_unit", 0.1, "importance per extra child, for "
          "critics in [0, 1] (1.0: the paper as printed; worked numbers in "
          "alphallm/search/settings.py)", above(0)),
      Key(f"{p}.adaptive_branching.c_min_root", 2, "c_min at the root", at_least(1, True)),
      Key(f"{p}.adaptive_branching.c_max_root", 4, "c_max at the root", at_least(1, True)),
      Key(f"{p}.adaptive_branching.c_min", 1, "c_min below the root", at_least(1, True)),
      Key(f"{p}.adaptive_branching.c_max", 4, "c_max below the root", at_least(1, True)),
      Key(f"{p}.merge.enabled", False, "state merge: a sampled step that is the same step as "
          "a sibling is resampled", is_bool),
      Key(f"{p}.merge.threshold", 2, "unused: siblings merge when the task's same-step hook "
          "says they are the same step (Task.same_step_ignored)", at_least(0, True)),
      Key(f"{p}.rollout.enabled", False, "fast rollouts from new nodes, scored by the ORM",
          is_bool),
      Key(f"{p}.rollout.num_rollouts", 4, "rollouts per new node", at_least(1, True)),
      Key(f"{p}.rollout.max_len", 32, "tokens per rollout", at_least(1, True)),
      Key(f"{p}.rollout.temperature", 1.0, "rollout temperature", at_least(0)),
      Key(f"{p}.weights.value", 1.0, "node score weight of the value critic", at_least(0)),
      Key(f"{p}.weights.prm", 1.0, "node score weight of the PRM", at_least(0)),
      Key(f"{p}.weights.orm", 1.0, "node score weight of the ORM (rollouts, finished "
          "solutions)", at_least(0)),
      Key(f"{p}.answer_selection", "most_visited", "the search's answer",
          one_of(*ANSWER_SELECTIONS)),
  ]


def _critic_keys(p: str = "critics.critic") -> list[Key]:
  return [
      Key(f"{p}.kind", "value", "overwritten per entry of critics.kinds",
          one_of(*CRITIC_KINDS)),
      Key(f"{p}.shared_trunk", False, "the critic is the policy's own value head", is_bool),
      Key(f"{p}.model", dict(num_layers=2, embed_dim=64, num_heads=4, num_kv_heads=2,
                             head_dim=16, mlp_dim=256),
          "TransformerConfig fields of a separate critic"),
      Key(f"{p}.seq_len", 128, "row length of critic batches (prompt + completion)",
          at_least(1, True)),
      Key(f"{p}.prm_label", "soft", "PRM labels: MC fraction or thresholded",
          one_of(*PRM_LABELS)),
      Key(f"{p}.prm_threshold", 0.5, "threshold of hard PRM labels", in_range(0, 1)),
      Key(f"{p}.collect.num_samples", 8, "trajectories sampled per prompt (paper: 50)",
          at_least(1, True)),
      Key(f"{p}.collect.temperature", 1.0, "trajectory sampling temperature", at_least(0)),
      Key(f"{p}.collect.top_k", 0, "top-k sampling; 0: full softmax", at_least(0, True)),
      Key(f"{p}.collect.max_new_tokens", 64, "tokens per trajectory and rollout",
          at_least(1, True)),
      Key(f"{p}.collect.mc_rollouts", 4, "rollouts per step prefix for PRM labels; 0: none",
          at_least(0, True)),
      Key(f"{p}.collect.rollout_temperature", 1.0, "PRM rollout temperature", at_least(0)),
      Key(f"{p}.collect.batch_size", 64, "rows per generate call", at_least(1, True)),
      Key(f"{p}.train.steps", 200, "critic optimizer steps", at_least(1, True)),
      Key(f"{p}.train.batch_size", 32, "critic batch", at_least(1, True)),
      Key(f"{p}.train.learning_rate", 1e-3, "critic learning rate", above(0)),
      Key(f"{p}.train.warmup_steps", 10, "critic warm-up steps", at_least(0, True)),
      Key(f"{p}.train.weight_decay", 0.0, "critic weight decay", at_least(0)),
      Key(f"{p}.train.grad_clip", 1.0, "critic gradient clipping", at_least(0)),
      Key(f"{p}.train.checkpoint_every", 50, "critic steps between checkpoints",
          at_least(1, True)),
      Key(f"{p}.train.max_to_keep", 2, "critic checkpoints kept", at_least(1, True)),
      Key(f"{p}.train.policy_coef", AUTO, "LM loss weight while training a critic; 'auto': "
          "0 for a separate critic, 0.1 for a shared trunk", at_least(0), auto=True),
  ]


def keys() -> list[Key]:
  """Every config key, in documentation order."""
  return [
      Key("seed", 0, "seed of every random choice (splits, init, sampling, search)",
          at_least(0, True)),
      Key("num_devices", AUTO, "local devices used; 'auto': all", at_least(1, True), auto=True),
      Key("task.name", "", "the task (alphallm.tasks registry); required",
          lambda x: None if isinstance(x, str) and x else "must name a registered task"),
      Key("task.knobs", {}, "keyword arguments of the task's constructor"),
      Key("task.eval_knobs", None, "if set: the eval split comes from the task built with "
          "these knobs (e.g. GSM8K's test split)"),
      Key("data.num_demos", 750, "demonstrations for the warm-start SFT", at_least(1, True)),
      Key("data.num_eval", 256, "held-out eval problems (disjoint from every train split)",
          at_least(1, True)),
      Key("data.seq_len", 64, "token slots of an SFT row (prompt + completion)",
          at_least(1, True)),
      Key("data.prompt_loss_weight", 0.0, "SFT loss weight on the prompt tokens (teaches the "
          "policy to write questions)", at_least(0)),
      *_model_keys(),
      *_sft("sft", 1000, 3e-3, 20, 250, "the round-0 warm start"),
      Key("sft.enabled", True, "False: round 0 starts from the initial weights as they are",
          is_bool),
      Key("critics.kinds", ("value",), f"critics trained after round 0, any of {CRITIC_KINDS}",
          kinds_check),
      Key("critics.num_problems", 500, "fresh prompts sampled for critic data",
          at_least(1, True)),
      Key("critics.num_calibration_problems", 128, "eval problems critics are calibrated on",
          at_least(1, True)),
      Key("critics.calculator", False, "the in-graph step checker multiplies the critics' "
          "scores (zero after a wrong step)", is_bool),
      Key("critics.checkpoint", "", "HF directory of the critics' initial trunk; '': "
          "critics.critic.model's random init", is_str),
      Key("critics.tool_orm", False, "host-side tool ORM: not wired into the search, must be "
          "False", not_supported(False, "the host-side tool ORM (critics.tool_orm_score) is not "
                                 "wired into the search; critics.calculator is the in-graph "
                                 "step checker")),
      *_critic_keys(),
      *_search_keys(),
      Key("eval.methods", ("greedy", "sampling", "mcts"), "decoding methods evaluated each "
          f"round: {PLAIN_METHODS} or NAME@N with NAME in {SAMPLE_METHODS}", methods_check),
      Key("eval.batch_size", 64, "problems per decoding batch", at_least(1, True)),
      Key("eval.search_batch_size", 64, "problems per search batch", at_least(1, True)),
      Key("eval.max_new_tokens", 64, "tokens per sampled completion", at_least(1, True)),
      Key("eval.temperature", 1.0, "temperature of the sampling methods", at_least(0)),
      Key("loop.rounds", 2, "self-improvement rounds after round 0", at_least(0, True)),
      Key("loop.prompts_per_round", 512, "prompts imagined and searched per round",
          at_least(1, True)),
      Key("loop.round_prompts", (), "per-round prompt counts (overrides prompts_per_round)",
          positive_ints_check),
      Key("loop.imagination_mix", dict(held_out=1.0),
          f"weights of the prompt sources {IMAGINATION_SOURCES}; 'held_out': problems no "
          "phase has used (new draws of the task's generator, or held-out train-split "
          "questions); the others are rule-based rewrites and policy-written questions, for "
          "tasks that register rules (alphallm.imagination.register_task_imagination)"),
      Key("loop.imagination_temperature", 1.0, "temperature of policy-written questions",
          at_least(0)),
      Key("loop.search_batch_size", 64, "prompts per search batch (one trajectory shard)",
          at_least(1, True)),
      Key("loop.select", "best_leaf", "which leaf of a tree becomes the training trajectory",
          one_of(*TRAJECTORY_SELECTIONS)),
      Key("loop.filter_by", "verifier", "a trajectory is kept if this signal >= gamma",
          one_of(*FILTERS)),
      Key("loop.gamma", 0.5, "keep threshold", in_range(0, 1)),
      Key("loop.cumulative", True, "SFT on the kept trajectories of all rounds so far",
          is_bool),
      Key("loop.include_demos", True, "the demonstrations join every round's SFT data",
          is_bool),
      Key("loop.distill", False, "+ the search's improved root policy as weighted targets",
          is_bool),
      Key("loop.distill_weight", 1.0, "loss weight of the distillation targets", at_least(0)),
      *_sft("loop.sft", 300, 1e-3, 10, 150, "each round's policy improvement"),
      Key("sharding.strategy", "data_parallel", "data_parallel (replicated) or fsdp",
          one_of(*SHARDING_STRATEGIES)),
      Key("sharding.mesh_shape", (1, AUTO), "(data, fsdp) axes of the FSDP mesh",
          mesh_shape_check),
      Key("sharding.min_size", 2 ** 16, "FSDP: smaller tensors are replicated",
          at_least(0, True)),
  ]


KEYS: dict[str, Key] = {k.path: k for k in keys()}


def _field(key: Key) -> Any:
  """A ConfigDict leaf: ``"auto"`` keys take numbers too; mappings stay ConfigDicts."""
  if key.auto:
    return ml_collections.FieldReference(key.default, field_type=object)
  if key.path in MAPPING_KEYS:
    if key.default is None:
      return ml_collections.FieldReference(None, field_type=object)
    return ml_collections.ConfigDict(dict(key.default))
  return key.default


def default_config() -> ml_collections.ConfigDict:
  """The full config with every key at its default."""
  root = ml_collections.ConfigDict()
  for key in KEYS.values():
    *parents, leaf = key.path.split(".")
    node = root
    for part in parents:
      if part not in node:
        node[part] = ml_collections.ConfigDict()
      node = node[part]
    node[leaf] = _field(key)
  return root


def _leaf_items(node: Any, prefix: str = ""):
  items = node.items() if hasattr(node, "items") else ()
  for name, value in items:
    path = f"{prefix}{name}"
    if hasattr(value, "items") and path not in MAPPING_KEYS:
      yield from _leaf_items(value, path + ".")
    else:
      yield path, value


def overridden(overrides: Any) -> ml_collections.ConfigDict:
  """``default_config()`` with every leaf of ``overrides`` (a nested mapping) set on it.

  For experiment files that spell out a whole recipe section by section.

  Raises:
    ConfigError: naming a key of ``overrides`` the schema does not have.
  """
  config = default_config()
  for path, value in _leaf_items(overrides):
    if path not in KEYS:
      raise ConfigError(f"config.{path}={value!r:.80}: unknown key; no code reads it")
    *parents, leaf = path.split(".")
    node = config
    for part in parents:
      node = node[part]
    if path in MAPPING_KEYS and value is not None:
      value = ml_collections.ConfigDict(dict(value))
    node[leaf] = value
  return config


def shrink_to_tiny(c: ml_collections.ConfigDict) -> None:
  """Toy sizes for any task: every phase of the loop runs, each in seconds (one device).

  The ``tiny`` variant of an experiment file (``--config=FILE.py:tiny``) calls this; tests,
  the notebooks' small mode and the fault tests run it. Accuracy numbers are meaningless.
  """
  c.num_devices = 1
  c.data.num_demos, c.data.num_eval = 64, 24
  c.model.num_layers, c.model.embed_dim, c.model.mlp_dim = 1, 32, 64
  c.sft.steps, c.sft.batch_size, c.sft.checkpoint_every, c.sft.warmup_steps = 6, 8, 3, 1
  c.critics.num_problems, c.critics.num_calibration_problems = 16, 8
  c.critics.critic.collect.batch_size = 32
  c.critics.critic.train.steps, c.critics.critic.train.checkpoint_every = 4, 2
  c.critics.critic.model = ml_collections.ConfigDict(dict(
      num_layers=1, embed_dim=32, num_heads=4, num_kv_heads=2, head_dim=8, mlp_dim=64))
  c.search.num_simulations = 4
  c.search.num_actions = min(c.search.num_actions, 4)
  c.eval.batch_size = c.eval.search_batch_size = 8
  c.eval.max_new_tokens = min(c.eval.max_new_tokens, 24)
  c.loop.rounds = min(c.loop.rounds, 1)
  c.loop.prompts_per_round, c.loop.search_batch_size = 12, 8
  c.loop.sft.steps, c.loop.sft.checkpoint_every, c.loop.sft.batch_size = 4, 2, 8


def allowed_text(key: Key) -> str:
  """The allowed values of ``key``, as the docs and the errors state them."""
  text = key.allowed or getattr(key.check, "text", "") or getattr(key.check, "__doc__", "") or ""
  if key.check is is_bool:
    text = "True, False"
  return text + (" or 'auto'" if key.auto else "")


def _fmt(value: Any) -> str:
  if isinstance(value, ml_collections.ConfigDict):
    value = value.to_dict()
  return f"`{value!r}`"


def markdown() -> str:
  """``docs/configuration.md``: every key, its default, allowed values and doc."""
  lines = [
      "# Configuration",
      "",
      "Generated from `alphallm/schema.py` by `python -m alphallm.schema > "
      "docs/configuration.md`; `tests/test_schema.py` fails when the two differ. Every key",
      "is declared there once; an experiment file starts from `schema.default_config()` and",
      "overrides only what differs (`experiments/quickstart.py`). Any key can be overridden on",
      "the command line (`--config.search.num_simulations=64`). `alphallm.validation` checks",
      "every value before the workdir is touched; an error names the full key:",
      "`config.<key>=<value>: <why>; allowed: ...`. Keys marked *auto* also take `\"auto\"`.",
      "",
  ]
  section = None
  for key in KEYS.values():
    top = key.path.split(".")[0] if "." in key.path else "(top level)"
    if top != section:
      section = top
      lines += ["", f"## `{section}`", "", "| key | default | allowed | what |",
                "|---|---|---|---|"]
    allowed = allowed_text(key).replace("|", "/")
    doc = key.doc.replace("|", "/")
    lines.append(f"| `{key.path}` | {_fmt(key.default)} | {allowed} | {doc} |")
  return "\n".join(lines) + "\n"


if __name__ == "__main__":
  print(markdown(), end="")
