"""Bad inputs stop a run with an error that names what is wrong (issue 7).

Malformed or empty datasets, malformed round files, characters the tokenizer
cannot encode, prompts longer than the context, out-of-range config values,
and a loss that turns NaN. Each goes through the entry point a user would hit
(``train_and_evaluate``, the CLI, ``run_sft``) where that is cheap; the unit
level of most of these is covered in the modules' own tests.
"""

import json
import os
import re
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest

import fault_harness
from alphallm import builders
from alphallm import schema
from alphallm import improve
from alphallm import checkpoint
from alphallm import data
from alphallm import datasets
from alphallm import experiment
from alphallm import loop
from alphallm import model as model_lib
from alphallm import testing
from alphallm import train
from alphallm.tasks import Problem, get_task
from alphallm.tokenizer import CharTokenizer, UnknownCharacterError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICKSTART = os.path.join(ROOT, "experiments", "quickstart.py")

GOOD = [{"question": f"Tom has {n} apples and buys 2 more. How many apples does he have?",
         "answer": f"{n}+2=<<{n}+2={n + 2}>>{n + 2} apples.\n#### {n + 2}"} for n in range(3, 9)]


def _gsm8k_config(data_dir) -> ml_collections.ConfigDict:
  c = fault_harness.tiny_config()
  c.task.name = "gsm8k"
  c.task.knobs = ml_collections.ConfigDict({"data_dir": str(data_dir), "split": "test"})
  c.data.num_demos, c.data.num_eval = 2, 2
  c.loop.imagination_mix = {"held_out": 1.0}  # GSM8K has no rule-based imagination
  return c


def _write_split(directory, lines) -> str:
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, "test.jsonl")
  with open(path, "w", encoding="utf-8") as f:
    f.write("".join(line + "\n" for line in lines))
  return path


# ---------------------------------------------------------------------------
# Datasets and round files.


def test_malformed_dataset_line_stops_the_run_naming_file_and_line(tmp_path):
  lines = [json.dumps(r) for r in GOOD]
  lines.insert(2, '{"question": "How many?", "answer": "no final answer line"}')
  path = _write_split(tmp_path / "gsm8k", lines)
  workdir = tmp_path / "run"
  with pytest.raises(datasets.MalformedRecordError,
                     match=re.escape(f"{path}:3:") + ".*#### N"):
    experiment.train_and_evaluate(_gsm8k_config(tmp_path / "gsm8k"), str(workdir))
  assert not (workdir / "results.json").exists()


def test_empty_split_stops_the_run(tmp_path):
  path = _write_split(tmp_path / "gsm8k", ["", "   "])
  with pytest.raises(datasets.EmptySplitError,
                     match=re.escape(f"split 'test' ({path})") + ".*no examples"):
    experiment.train_and_evaluate(_gsm8k_config(tmp_path / "gsm8k"), str(tmp_path / "run"))


def test_character_unknown_to_the_tokenizer_is_named(tmp_path):
  # GSM8K is full of "$"; the character tokenizer of the loop cannot encode it.
  lines = [json.dumps(r) for r in GOOD]
  lines[1] = json.dumps({"question": "A pen costs $3. What do 2 pens cost?",
                         "answer": "2*3=<<2*3=6>>6\n#### 6"})
  _write_split(tmp_path / "gsm8k", lines)
  config = _gsm8k_config(tmp_path / "gsm8k")
  config.data.num_demos, config.data.num_eval = 4, 2  # every problem is drawn
  with pytest.raises(UnknownCharacterError,
                     match=r"character '\$' \(U\+0024\) at position \d+ of .*costs \$3"):
    experiment.train_and_evaluate(config, str(tmp_path / "run"))


@pytest.mark.parametrize("bad_line,reason", [
    ('{"question": "1+2", "answ', "Unterminated string|Invalid control character"),
    ('{"question": "1+2"}', r"missing keys \['answer'\]"),
    ("[1, 2]", "missing keys"),
    ("3", "not iterable"),                                  # not an object
    ('{"question": "1+2", "answer": "3", "data": 5}', "not iterable"),
    ("", "Expecting value"),                                # blank line
])
def test_malformed_round_prompts_file_names_file_and_line(tmp_path, bad_line, reason):
  path = tmp_path / "round1" / "prompts.jsonl"
  builders.write_problems(str(path), [Problem("1+1", "2"), Problem("2+2", "4")])
  path.write_text(path.read_text() + bad_line + "\n")
  with pytest.raises(ValueError, match=re.escape(f"{path}:3: malformed problem record: ")
                     + f".*(?:{reason})"):
    builders.read_problems(str(path))  # pylint: disable=protected-access


def test_empty_round_prompts_file(tmp_path):
  path = tmp_path / "prompts.jsonl"
  path.write_text("")
  with pytest.raises(ValueError, match=re.escape(f"{path}: no problems")):
    builders.read_problems(str(path))  # pylint: disable=protected-access


# ---------------------------------------------------------------------------
# Prompts longer than the context.


def test_demonstrations_longer_than_the_context_are_named(tmp_path):
  config = fault_harness.tiny_config()
  config.data.seq_len = 16
  with pytest.raises(data.SequenceTooLongError,
                     match=r"example 0 has \d+ tokens, more than seq_len=16: 'Q: "):
    experiment.train_and_evaluate(config, str(tmp_path / "run"))


def test_search_prompt_longer_than_the_prompt_length_is_named(tmp_path):
  ctx = builders.build_context(fault_harness.tiny_config(), str(tmp_path))
  long = Problem("+".join(["1"] * ctx.prompt_len), str(ctx.prompt_len))
  problems = ctx.eval_problems[:1] + [long]
  # Raised while encoding, before the search (None here) is ever called.
  with pytest.raises(ValueError, match=rf"prompt 1 has \d+ tokens, more than the "
                     rf"{ctx.prompt_len} allowed: 'Q: 1\+1\+1"):
    loop._search_shard(ctx, 1, 0, None, None, None, problems)  # pylint: disable=protected-access


# ---------------------------------------------------------------------------
# Config values out of range.


def _cli(*overrides):
  return subprocess.run(
      [sys.executable, "-m", "alphallm.main", f"--config={QUICKSTART}",
       "--workdir=/nonexistent/never-created", *overrides], capture_output=True, text=True,
      cwd=ROOT, timeout=120, env={**os.environ, "PYTHONPATH": ROOT})


@pytest.mark.parametrize("override,expected", [
    ("--config.data.num_eval=0", "config.data.num_eval=0: must be >= 1"),  # empty split
    ("--config.eval.temperature=-1.0", "config.eval.temperature=-1.0: must be >= 0"),
])
def test_cli_range_errors(override, expected):
  proc = _cli(override)
  assert proc.returncode != 0
  assert expected in proc.stderr, proc.stderr[-2000:]
  assert not os.path.exists("/nonexistent/never-created")


@pytest.mark.parametrize("key,value,expected", [
    ("data.num_demos", 0, "config.data.num_demos=0: must be >= 1"),
    ("data.seq_len", 0, "config.data.seq_len=0: must be >= 1"),
    ("sft.learning_rate", -1e-3, "config.sft.learning_rate=-0.001: must be > 0"),
    ("sft.warmup_steps", -1, "config.sft.warmup_steps=-1: must be >= 0"),
    ("sft.batch_size", 3, "config.sft.batch_size=3: must be divisible by the 2 devices"),
    ("eval.max_new_tokens", 0, "config.eval.max_new_tokens=0: must be >= 1"),
    ("num_devices", 99, "config.num_devices=99: only"),
])
def test_validated_ranges(tmp_path, key, value, expected):
  config = fault_harness.tiny_config()
  section, _, name = key.rpartition(".")
  (config[section] if section else config)[name] = value
  with pytest.raises(ValueError, match=re.escape(expected)):
    experiment.train_and_evaluate(config, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()  # checked before the workdir is touched


# Ranges that would otherwise be found late (after round 0's work), as an
# unrelated error, or never.
@pytest.mark.parametrize("key,value", [
    ("loop.gamma", -0.5),               # keeps every finished trajectory, silently
    ("loop.gamma", 1.5),                # keeps nothing, silently
    ("loop.rounds", -1),                # zero rounds, silently
    ("loop.prompts_per_round", 0),      # RuntimeError after round 0
    ("loop.search_batch_size", 0),      # "range() arg 3 must not be zero" after round 0
    ("loop.sft.steps", 0),              # optimizer error after round 0
    ("loop.sft.learning_rate", -1e-3),  # gradient ascent, silently
    ("sft.checkpoint_every", 0),        # ZeroDivisionError at the first SFT step
    ("eval.search_batch_size", 0),      # "range() arg 3 must not be zero"
])
def test_loop_ranges_are_validated(key, value):
  config = fault_harness.tiny_config()
  section, _, name = key.rpartition(".")
  node = config
  for part in section.split("."):
    node = node[part]
  node[name] = value
  with pytest.raises(ValueError, match=re.escape(f"config.{key}")):
    experiment.validate_config(config)


# ---------------------------------------------------------------------------
# A loss that becomes NaN or Inf.


def _sft_setup(tmp_path, **overrides):
  model_cfg = testing.tiny_config(num_layers=1, embed_dim=16, num_heads=2, num_kv_heads=1,
                                  head_dim=8, mlp_dim=32, max_len=32)
  task = get_task("arithmetic", min_ops=1, max_ops=1)
  problems = task.generate(0, 16)
  dataset = data.encode_examples(CharTokenizer(), [task.prompt(p) for p in problems],
                                 [task.demonstration(p) for p in problems], seq_len=32)
  sft_cfg = schema.default_config().sft
  sft_cfg.update(dict(steps=4, batch_size=8, learning_rate=3e-3, warmup_steps=1,
                      weight_decay=0.0, grad_clip=1.0, value_coef=0.0, checkpoint_every=2,
                      max_to_keep=5, log_every=1))
  sft_cfg.update(overrides)
  init = model_lib.init_params(model_cfg, jax.random.key(0))
  mesh = train.data_mesh(jax.devices()[:2])
  return sft_cfg, model_cfg, dataset, init, mesh, str(tmp_path / "ckpt")


def _restore_latest(sft_cfg, init, ckpt_dir):
  optimizer = train.make_optimizer(sft_cfg.learning_rate, sft_cfg.steps, sft_cfg.warmup_steps,
                                   weight_decay=sft_cfg.weight_decay, grad_clip=sft_cfg.grad_clip)
  ckpt = checkpoint.Checkpointer(ckpt_dir)
  try:
    return ckpt.all_steps(), ckpt.restore_latest(train.init_train_state(init, optimizer, 0))
  finally:
    ckpt.close()


def _all_finite(tree) -> bool:
  return all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(tree))


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
  sft_cfg, model_cfg, dataset, init, mesh, ckpt_dir = _sft_setup(tmp_path)
  batch_at = data.batch_at

  def poisoned(ds, batch_size, step, seed):  # a corrupt batch from step index 2 on
    batch = batch_at(ds, batch_size, step, seed)
    if step >= 2:
      batch["loss_mask"] = np.full_like(batch["loss_mask"], np.nan)
    return batch

  monkeypatch.setattr(data, "batch_at", poisoned)
  with pytest.raises(train.NonFiniteLossError, match="loss is nan at training step 2; "
                     "stopping before the state is checkpointed"):
    improve.run_sft(sft_cfg, model_cfg, dataset, init, mesh, ckpt_dir, seed=0)
  monkeypatch.undo()
  steps, (step, state, meta) = _restore_latest(sft_cfg, init, ckpt_dir)
  assert steps == [2] and step == 2 and int(state.step) == 2 and meta == {"phase": "sft"}
  assert _all_finite(state)


def test_huge_learning_rate_stops_with_the_step(tmp_path):
  sft_cfg, model_cfg, dataset, init, mesh, ckpt_dir = _sft_setup(
      tmp_path, learning_rate=1e30, warmup_steps=0, checkpoint_every=1)
  with pytest.raises(train.NonFiniteLossError,
                     match=r"(loss|grad_norm) is (nan|inf|-inf) at training step 1;"):
    improve.run_sft(sft_cfg, model_cfg, dataset, init, mesh, ckpt_dir, seed=0)
  steps, (step, state, _) = _restore_latest(sft_cfg, init, ckpt_dir)
  assert steps == [1] and step == 1 and _all_finite(state)
