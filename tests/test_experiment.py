"""End-to-end: the CLI and ``train_and_evaluate`` on a tiny config."""

import json
import os
import subprocess
import sys

import pytest

from alphallm import config_files
from alphallm import builders
from alphallm import experiment
from alphallm import results as results_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICKSTART = os.path.join(ROOT, "experiments", "quickstart.py")


def tiny_config(rounds: int = 1):
  """The quickstart's ``tiny`` variant (every phase runs, each in seconds)."""
  c = config_files.load(QUICKSTART).get_config("tiny")
  c.num_devices = 2  # the data-parallel step across devices
  c.loop.rounds = rounds
  return c


def test_train_and_evaluate_writes_rows_and_resumes(tmp_path):
  workdir = str(tmp_path / "run")
  out = experiment.train_and_evaluate(tiny_config(), workdir)
  rows = json.load(open(os.path.join(workdir, "results.json")))["rows"]
  assert rows == out["rows"]
  methods = {"greedy", "sampling", "self_consistency@2", "mcts"}
  assert {(r["round"], r["decoding"]) for r in rows} == {(k, m) for k in (0, 1) for m in methods}
  for r in rows:
    results_lib.validate_row(r)
    assert r["num_problems"] == 24 and r["task"] == "arithmetic"
    assert 0.0 <= r["accuracy"] <= 1.0
    assert r["forward_passes_per_problem"] > 1.0
  by_name = {r["decoding"]: r for r in rows if r["round"] == 0}
  # Search costs more than one greedy decode per problem.
  assert by_name["mcts"]["forward_passes_per_problem"] > by_name["greedy"][
      "forward_passes_per_problem"]
  assert "| arithmetic | 1 | mcts |" in open(os.path.join(workdir, "results.md")).read()
  for name in ("metrics.jsonl", "critics.json", "round1/prompts.jsonl", "config.json"):
    assert os.path.exists(os.path.join(workdir, name)), name
  # Imagination drew from all three sources, the policy's questions included.
  stats = json.load(open(os.path.join(workdir, "round1", "imagination.json")))
  assert set(stats["attempts"]) == {"perturb", "backward", "policy"}
  assert stats["attempts"]["policy"] > 0
  prompts = [json.loads(line) for line in open(os.path.join(workdir, "round1", "prompts.jsonl"))]
  evals = {json.loads(line)["question"] for line in open(os.path.join(workdir,
                                                                      "eval_problems.jsonl"))}
  assert prompts and not {p["question"] for p in prompts} & evals
  # A rerun on the same workdir resumes: no retraining, no duplicate rows.
  again = experiment.train_and_evaluate(tiny_config(), workdir)
  assert again["rows"] == rows


def _cli(*overrides, workdir="/nonexistent/never-created"):
  return subprocess.run(
      [sys.executable, "-m", "alphallm.main", f"--config={QUICKSTART}", f"--workdir={workdir}",
       *overrides], capture_output=True, text=True, cwd=ROOT, timeout=120,
      env={**os.environ, "PYTHONPATH": ROOT})


@pytest.mark.parametrize("override,expected", [
    ("--config.sft.stepz=3", "stepz"),
    ("--config.sft.steps=abc", "sft.steps"),
    ("--config.sft.steps=-5", "config.sft.steps=-5: must be >= 1"),
    ("--config.task.knobs.max_opz=3", "max_opz"),
])
def test_cli_config_errors_name_the_key(override, expected):
  proc = _cli(override)
  assert proc.returncode != 0
  assert expected in proc.stderr, proc.stderr[-2000:]


def test_unknown_task_and_bad_knob_are_clear():
  c = tiny_config()
  c.task.name = "nope"
  with pytest.raises(ValueError, match="unknown task 'nope'"):
    builders.build_task(c)
  c = tiny_config()
  with c.unlocked():
    c.task.knobs.max_opz = 3
  with pytest.raises(ValueError, match="max_opz"):
    builders.build_task(c)


def test_root_options_include_unexpanded_actions():
  from alphallm import loop  # pylint: disable=import-outside-toplevel
  from alphallm.tokenizer import CharTokenizer  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  tok = CharTokenizer()
  opts = ["1+2=3\n", "1+2=4\n", "9*9=81\n"]
  cand = np.zeros((3, 8), np.int32)
  for a, text in enumerate(opts):
    cand[a, :len(text)] = tok.encode(text)
  lens = np.array([len(o) for o in opts])
  valid = np.array([True, False, True])
  # Whether a child was expanded does not matter: the text comes from the candidates.
  assert loop._root_options(cand, lens, valid, tok) == [opts[0], None, opts[2]]  # pylint: disable=protected-access
