"""The config schema: one place for every key, checked before any work, docs generated."""

import dataclasses
import os
import subprocess
import sys
import time

import ml_collections
import pytest

from alphallm import config_files
from alphallm import critics
from alphallm import experiment
from alphallm import schema
from alphallm import validation
from alphallm.search import mcts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICKSTART = os.path.join(ROOT, "experiments", "quickstart.py")


def _tiny():
  c = config_files.load(QUICKSTART).get_config("tiny")
  c.num_devices = 2  # the data-parallel step across devices
  return c


def _set(config, key, value):
  *parents, leaf = key.split(".")
  node = config
  for part in parents:
    node = node[part]
  with node.unlocked():
    node[leaf] = value


def test_docs_are_generated_from_the_schema():
  with open(os.path.join(ROOT, "docs", "configuration.md"), encoding="utf-8") as f:
    assert f.read() == schema.markdown(), (
        "docs/configuration.md is stale: python -m alphallm.schema > docs/configuration.md")


def test_every_key_is_documented_once():
  paths = [k.path for k in schema.keys()]
  assert len(paths) == len(set(paths))
  for key in schema.keys():
    assert key.doc and "|" not in key.doc, key.path
  md = schema.markdown()
  for path in paths:
    assert f"| `{path}` |" in md, path


def test_default_config_holds_every_key_and_validates_with_a_task():
  c = schema.default_config()
  c.task.name = "arithmetic"
  validation.validate_config(c)
  with pytest.raises(schema.ConfigError, match=r"config.task.name='': must name a registered"):
    validation.validate_config(schema.default_config())


def test_search_and_critic_sections_are_the_settings_structs():
  """The typed views of ``search`` and ``critics.critic`` read exactly the schema's keys."""
  c = schema.default_config()
  cfg = mcts.SearchConfig.from_config(c.search)
  assert cfg.num_simulations == c.search.num_simulations
  search_keys = {k.path[len("search."):] for k in schema.keys() if k.path.startswith("search.")}
  flat = set()
  for f in dataclasses.fields(mcts.SearchConfig):
    value = getattr(cfg, f.name)
    if dataclasses.is_dataclass(value):
      flat |= {f"{f.name}.{g.name}" for g in dataclasses.fields(value)}
    else:
      flat.add(f.name)
  assert flat == search_keys
  critic = critics.CriticConfig.from_config(c.critics.critic)
  assert critic.train.policy_coef == "auto" and critic.seq_len == c.critics.critic.seq_len


BAD = [
    # Names.
    ("eval.methods", ("greedy", "mctz"), "unknown method 'mctz'"),
    ("eval.methods", ("greedy", "best_of@0"), "N in NAME@N must be an int > 0"),
    ("eval.methods", ("greedy", "best_of@x"), "N in NAME@N"),
    ("eval.methods", (), "non-empty"),
    ("eval.methods", ("greedy", "greedy"), "listed twice"),
    ("search.policy", "puctt", "unknown value"),
    ("search.granularity", "word", "unknown value"),
    ("search.prior", "uniform", "unknown value"),
    ("search.answer_selection", "best", "unknown value"),
    ("critics.kinds", ("valu",), "unknown critic kind"),
    ("critics.critic.prm_label", "medium", "unknown value"),
    ("loop.select", "best", "unknown value"),
    ("loop.filter_by", "oracle", "unknown value"),
    ("task.name", "arithmetik", "unknown task 'arithmetik'"),
    ("task.knobs.foo", 1, "not a knob of task 'arithmetic'"),
    ("model.dtype", "float13", "unknown dtype"),
    ("model.param_dtype", "int8", "unknown dtype"),
    ("model.search_dtype", "float8", "unknown dtype"),
    ("sharding.strategy", "dp", "unknown value"),
    ("loop.imagination_mix.rewrite", 1.0, "unknown source"),
    ("model.prompt_wrapper", "llama9", "prompt_wrapper"),
    # Ranges.
    ("search.num_simulations", 0, "must be >= 1"),
    ("search.num_actions", -2, "must be >= 1"),
    ("search.temperature", -1.0, "must be >= 0"),
    ("search.dirichlet_fraction", 1.5, "must be in [0, 1]"),
    ("loop.gamma", 1.5, "must be in [0, 1]"),
    ("loop.rounds", -1, "must be >= 0"),
    ("sft.steps", 0, "must be >= 1"),
    ("sft.learning_rate", 0.0, "must be > 0"),
    ("sft.max_to_keep", 0, "must be >= 1"),
    ("loop.sft.max_to_keep", 0, "must be >= 1"),
    ("critics.critic.train.max_to_keep", 0, "must be >= 1"),
    ("critics.critic.prm_threshold", 2.0, "must be in [0, 1]"),
    ("data.num_eval", 0, "must be >= 1"),
    ("eval.batch_size", 0, "must be >= 1"),
    ("loop.imagination_mix.perturb", -1.0, "must be a number >= 0"),
    # Finiteness.
    ("search.temperature", float("nan"), "must be finite"),
    ("eval.temperature", float("inf"), "must be finite"),
    ("loop.imagination_temperature", float("nan"), "must be finite"),
    ("sft.learning_rate", float("inf"), "must be finite"),
    ("search.weights.prm", float("nan"), "must be finite"),
    ("search.rollout.num_rollouts", 0, "must be >= 1"),
    ("search.adaptive_branching.alpha", -1.0, "must be >= 0"),
    ("critics.critic.collect.num_samples", 0, "must be >= 1"),
    # Devices and cross-key consistency.
    ("sft.batch_size", 7, "must be divisible by the 2 devices"),
    ("loop.sft.batch_size", 7, "must be divisible by the 2 devices"),
    ("critics.critic.train.batch_size", 3, "must be divisible by the 2 devices"),
    ("num_devices", 99, "local devices are available"),
    ("loop.round_prompts", (0,), "every entry must be an int > 0"),
    ("search.max_option_len", 99, "must be <= search.max_completion_len"),
    ("model.num_kv_heads", 3, "must divide model.num_heads"),
    ("model.head_dim", 7, "must be even"),
    ("model.checkpoint", "/nonexistent/ckpt", "does not exist"),
    ("model.rollout_checkpoint", "/x", "not supported"),
    ("critics.tool_orm", True, "not supported"),
    # Unknown keys.
    ("sft.stepz", 3, "unknown key"),
    ("search.num_simulation", 8, "did you mean search.num_simulations"),
    ("loop.shuffle", True, "unknown key"),
]


@pytest.mark.parametrize("key,value,expected", BAD, ids=[f"{k}={v!r}" for k, v, _ in BAD])
def test_bad_config_fails_fast_naming_the_key(tmp_path, key, value, expected):
  assert len(BAD) >= 40
  config = _tiny()
  _set(config, key, value)
  workdir = tmp_path / "run"
  t0 = time.perf_counter()
  with pytest.raises(schema.ConfigError) as info:
    experiment.train_and_evaluate(config, str(workdir))
  assert time.perf_counter() - t0 < 10
  message = str(info.value)
  assert message.startswith("config."), message
  assert "\n" not in message
  assert expected in message, message
  assert f"config.{key.rpartition('.')[0]}" in message  # the key's section, at least
  assert not workdir.exists()  # checked before the workdir is touched


def test_cross_key_errors_name_both_keys():
  c = _tiny()
  c.loop.round_prompts = (8,)
  c.loop.rounds = 2
  with pytest.raises(schema.ConfigError, match=r"config.loop.round_prompts=\(8,\): needs one "
                     r"entry per round \(config.loop.rounds=2\)"):
    validation.validate_config(c)


def test_auto_keys_take_numbers_and_auto():
  c = _tiny()
  c.num_devices = "auto"
  validation.validate_config(c)
  c.critics.critic.train.policy_coef = 0.3
  validation.validate_config(c)
  c.sft.end_learning_rate = 1e-4
  validation.validate_config(c)
  c.sft.end_learning_rate = float("nan")
  with pytest.raises(schema.ConfigError, match="config.sft.end_learning_rate=nan: must be"):
    validation.validate_config(c)


def test_overridden_refuses_unknown_keys():
  with pytest.raises(schema.ConfigError, match="config.sft.stepz=3: unknown key"):
    schema.overridden(ml_collections.ConfigDict({"sft": {"stepz": 3}}))


def test_cli_error_is_one_line_without_traceback():
  proc = subprocess.run(
      [sys.executable, "-m", "alphallm.main", f"--config={QUICKSTART}:tiny",
       "--workdir=/nonexistent/never-created", "--config.search.policy=puctt"],
      capture_output=True, text=True, cwd=ROOT, timeout=120,
      env={**os.environ, "PYTHONPATH": ROOT})
  assert proc.returncode == 2
  assert "Traceback" not in proc.stderr
  assert "error: config.search.policy='puctt': unknown value; allowed: " in proc.stderr
  assert not os.path.exists("/nonexistent/never-created")
