"""Every config value checked in the first seconds, before the workdir is touched.

``validate_config(config)`` walks the config against ``alphallm.schema``:
unknown keys (with the nearest known names), each value's type and range,
finiteness of every float, names (decoding methods, search policies, critic
kinds, selections, tasks and their knobs, dtypes, prompt templates), batch
sizes against the devices, and cross-key consistency. The first problem is
raised as one ``schema.ConfigError`` line:

    config.<full.key>=<value>: <why>; allowed: ...
"""

from __future__ import annotations

import difflib
import inspect
import math
import os
from collections.abc import Iterator
from typing import Any

import jax
import ml_collections

from alphallm import imagination
from alphallm import prompts
from alphallm import schema
from alphallm import tasks as tasks_lib
from alphallm.schema import AUTO, ConfigError

def fail(path: str, value: Any, why: str, allowed: str = "") -> None:
  """Raises the one-line error for ``config.<path>``."""
  text = f"config.{path}={value!r:.120}: {why}"
  if allowed:
    text += f"; allowed: {allowed}"
  raise ConfigError(text)


def _leaves(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
  """(full key, value) of every leaf, not descending into the schema's mapping keys."""
  for name in node.keys():
    path = f"{prefix}{name}"
    value = node[name]
    if isinstance(value, ml_collections.ConfigDict) and path not in schema.MAPPING_KEYS:
      yield from _leaves(value, path + ".")
    else:
      yield path, value


def _unknown(path: str, value: Any) -> None:
  close = difflib.get_close_matches(path, list(schema.KEYS), n=3, cutoff=0.6)
  section = path.rpartition(".")[0]
  siblings = sorted(k.rpartition(".")[2] for k in schema.KEYS
                    if k.rpartition(".")[0] == section)
  hint = f"did you mean {', '.join(close)}?" if close else ""
  fail(path, value, f"unknown key; no code reads it. {hint}".strip(),
       ", ".join(siblings) if siblings else "see docs/configuration.md")


def _check_floats(path: str, value: Any) -> None:
  if isinstance(value, float) and not math.isfinite(value):
    fail(path, value, "must be finite")
  if isinstance(value, (tuple, list)):
    for v in value:
      if isinstance(v, float) and not math.isfinite(v):
        fail(path, value, "every entry must be finite")


def check_keys(config: ml_collections.ConfigDict) -> None:
  """Unknown keys, finiteness, types and per-key ranges."""
  seen = set()
  for path, value in _leaves(config):
    key = schema.KEYS.get(path)
    if key is None:
      _unknown(path, value)
    seen.add(path)
    _check_floats(path, value)
    if key.auto and value == AUTO:
      continue
    if key.check is not None:
      why = key.check(value)
      if why:
        fail(path, value, why, schema.allowed_text(key))
  missing = sorted(set(schema.KEYS) - seen)
  if missing:
    fail(missing[0], None, "missing: build configs on alphallm.schema.default_config()")


def _check_mapping(path: str, value: Any) -> dict[str, Any]:
  if value is None:
    return {}
  if not hasattr(value, "keys"):
    fail(path, value, "must be a mapping")
  d = value.to_dict() if isinstance(value, ml_collections.ConfigDict) else dict(value)
  for k, v in d.items():
    _check_floats(f"{path}.{k}", v)
  return d


def check_task(config: ml_collections.ConfigDict) -> None:
  """The task exists and its knobs are arguments of its constructor."""
  name = config.task.name
  try:
    cls = tasks_lib.task_class(name)
  except ValueError as e:
    fail("task.name", name, str(e).split("; ")[0], ", ".join(tasks_lib.task_names()))
  params = inspect.signature(cls.__init__).parameters
  accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
  allowed = [p for p in params if p != "self"]
  for section in ("task.knobs", "task.eval_knobs"):
    knobs = _check_mapping(section, config.task[section.split(".")[1]])
    for k, v in knobs.items():
      if not accepts_any and k not in allowed:
        fail(f"{section}.{k}", v, f"not a knob of task {name!r}", ", ".join(allowed))


def check_paths(config: ml_collections.ConfigDict) -> None:
  """The local files a config names exist (nothing is ever downloaded)."""
  for path in ("model.checkpoint", "model.tokenizer", "critics.checkpoint"):
    value = _get(config, path)
    if value and not os.path.exists(value):
      fail(path, value, "does not exist (checkpoints and tokenizers are read from local "
           "paths, never downloaded)")


def check_names(config: ml_collections.ConfigDict) -> None:
  """Mappings and names that depend on other keys."""
  mix = _check_mapping("loop.imagination_mix", config.loop.imagination_mix)
  for source, weight in mix.items():
    if source not in schema.IMAGINATION_SOURCES:
      fail(f"loop.imagination_mix.{source}", weight, "unknown source",
           str(schema.IMAGINATION_SOURCES))
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 0:
      fail(f"loop.imagination_mix.{source}", weight, "must be a number >= 0")
  used = sorted(s for s, w in mix.items() if w > 0)
  if config.loop.rounds and not used:
    fail("loop.imagination_mix", mix, "every weight is 0")
  if "held_out" in used and len(used) > 1:
    fail("loop.imagination_mix", mix, "'held_out' (held-out train problems) cannot be mixed "
         "with the rewriting sources; give it the only non-zero weight")
  rules = [s for s in used if s != "held_out"]
  if config.loop.rounds and rules and not imagination.has_task_imagination(config.task.name):
    fail("loop.imagination_mix", mix, f"task {config.task.name!r} has no rule-based "
         f"imagination for {rules} (alphallm.imagination.register_task_imagination)",
         "dict(held_out=1.0)")
  model = _check_mapping("critics.critic.model", config.critics.critic.model)
  arch = {f for f in schema.KEYS if f.startswith("model.")}
  for k in model:
    if f"model.{k}" not in arch:
      fail(f"critics.critic.model.{k}", model[k], "not a TransformerConfig field")
  if config.model.prompt_wrapper:
    try:
      prompts.resolve_template(config.model.prompt_wrapper)
    except ValueError as e:
      fail("model.prompt_wrapper", config.model.prompt_wrapper, str(e).split(": ", 1)[-1])
  m = config.model
  if m.checkpoint:
    for key in schema.KEYS.values():
      name = key.path.rpartition(".")[2]
      if (key.path.startswith("model.") and key.doc.endswith("(ignored with a checkpoint)")
          and m[name] != key.default):
        fail(key.path, m[name], f"an architecture key, but config.model.checkpoint="
             f"{m.checkpoint!r} is set: the architecture comes from its config.json; "
             "leave it at its default")
  else:
    if m.num_heads % m.num_kv_heads:
      fail("model.num_kv_heads", m.num_kv_heads, f"must divide model.num_heads={m.num_heads}")
    if m.head_dim % 2:
      fail("model.head_dim", m.head_dim, "must be even (RoPE)")


def num_devices(config: ml_collections.ConfigDict) -> int:
  """``config.num_devices`` resolved ('auto': every local device)."""
  available = jax.local_device_count()
  n = config.num_devices
  if n == AUTO:
    return available
  if n > available:
    fail("num_devices", n, f"only {available} local devices are available", "'auto' or "
         f"1..{available}")
  return n


def check_consistency(config: ml_collections.ConfigDict) -> None:
  """Keys that constrain each other."""
  n = num_devices(config)
  for path in ("sft.batch_size", "loop.sft.batch_size", "critics.critic.train.batch_size"):
    value = _get(config, path)
    if value % n:
      fail(path, value, f"must be divisible by the {n} devices used (config.num_devices="
           f"{config.num_devices!r})")
  lc = config.loop
  if lc.round_prompts and len(lc.round_prompts) < lc.rounds:
    fail("loop.round_prompts", tuple(lc.round_prompts), f"needs one entry per round "
         f"(config.loop.rounds={lc.rounds})")
  s = config.search
  ab = s.adaptive_branching
  if ab.enabled and not (ab.c_min_root <= ab.c_max_root and ab.c_min <= ab.c_max):
    fail("search.adaptive_branching", ab.to_dict(), "need c_min_root <= c_max_root and "
         "c_min <= c_max")
  if s.merge.enabled and s.granularity == "token":
    fail("search.merge.enabled", True, "state merge needs search.granularity='option'")
  w = s.weights
  if w.value + w.prm + w.orm <= 0:
    fail("search.weights", w.to_dict(), "at least one weight must be > 0")
  if s.max_option_len > s.max_completion_len:
    fail("search.max_option_len", s.max_option_len, "must be <= search.max_completion_len="
         f"{s.max_completion_len}")
  if config.critics.checkpoint and config.critics.critic.shared_trunk:
    fail("critics.checkpoint", config.critics.checkpoint, "a shared-trunk critic is the "
         "policy itself: set critics.checkpoint='' or critics.critic.shared_trunk=False")
  if config.loop.filter_by == "orm" and config.loop.rounds and not config.critics.kinds:
    fail("loop.filter_by", "orm", "needs a critic in config.critics.kinds to fill the ORM "
         "slot")
  if config.sharding.strategy == "fsdp":
    shape = tuple(config.sharding.mesh_shape)
    fixed = math.prod(v for v in shape if v != AUTO)
    if (AUTO in shape and n % fixed) or (AUTO not in shape and fixed != n):
      fail("sharding.mesh_shape", shape, f"does not fit the {n} devices used")


def _get(config: ml_collections.ConfigDict, path: str) -> Any:
  node = config
  for part in path.split("."):
    node = node[part]
  return node


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Raises ``ConfigError`` naming the first bad key; returns None for a config that runs."""
  check_keys(config)
  check_task(config)
  check_paths(config)
  check_names(config)
  check_consistency(config)
