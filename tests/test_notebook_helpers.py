"""alphallm.notebook: the settings, config, device report and rows the notebooks share."""

import json
import os

import pytest

from alphallm import notebook

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("value,expected", [
    (None, False), ("", False), ("0", False), ("false", False), ("No", False), ("off", False),
    ("1", True), ("true", True), (" YES ", True), ("on", True)])
def test_small_mode(value, expected):
  env = {} if value is None else {"ALPHALLM_NB_SMALL": value}
  assert notebook.small_mode(env) is expected


def test_small_mode_rejects_other_values():
  with pytest.raises(ValueError, match="ALPHALLM_NB_SMALL='maybe'"):
    notebook.small_mode({"ALPHALLM_NB_SMALL": "maybe"})


def test_workdir():
  assert notebook.workdir("qs", False, {}) == "/tmp/alphallm_nb/qs"
  assert notebook.workdir("qs", True, {}) == "/tmp/alphallm_nb/qs_small"
  assert notebook.workdir("qs", True, {"ALPHALLM_NB_WORKDIR": "/x/y"}) == "/x/y"


def test_notebook_config_small_is_the_quickstart_tiny_variant():
  from alphallm import config_files
  path = os.path.join(ROOT, "experiments", "quickstart.py")
  tiny = config_files.load(path).get_config("tiny")
  full = config_files.load(path).get_config()
  small = notebook.notebook_config(ROOT, True)
  assert small.to_dict() == tiny.to_dict()
  assert notebook.notebook_config(ROOT, False).to_dict() == full.to_dict()
  assert small.to_dict() != full.to_dict()
  assert notebook.load_experiment(path, "tiny").to_dict() == tiny.to_dict()


def test_experiment_errors_name_the_path(tmp_path):
  with pytest.raises(FileNotFoundError, match="experiments/nope.py"):
    notebook.experiment_path(str(tmp_path), "nope")
  bad = tmp_path / "noconfig.py"
  bad.write_text("X = 1\n")
  with pytest.raises(ValueError, match="noconfig.py: no get_config"):
    notebook.load_experiment(str(bad))


class _Dev:
  def __init__(self, i, platform="gpu", kind="H100", stats=None, raises=False):
    self.id, self.platform, self.device_kind = i, platform, kind
    self._stats, self._raises = stats, raises

  def memory_stats(self):
    if self._raises:
      raise RuntimeError("not supported")
    return self._stats


def test_accelerator_report_gpu_memory():
  devs = [_Dev(0, stats={"bytes_limit": 80 * 2**30, "bytes_in_use": 2**30}), _Dev(1, raises=True)]
  text = notebook.accelerator_report(devs)
  assert "backend gpu: 2 device(s), kind H100" in text
  assert "0: H100, memory in use 1.0 / 80.0 GiB" in text
  assert "1: H100\n" in text + "\n" and "CPU only" not in text


def test_accelerator_report_cpu_says_how_to_get_an_accelerator():
  import jax
  text = notebook.accelerator_report()
  assert f"backend {jax.devices()[0].platform}" in text
  assert f"{len(jax.devices())} device(s)" in text
  if jax.devices()[0].platform == "cpu":
    assert "Change runtime type" in text and '".[cuda]"' in text and '".[tpu]"' in text


def _row(decoding, seed=0, acc=0.5):
  return {"task": "arithmetic", "round": 0, "decoding": decoding, "seed": seed, "accuracy": acc,
          "num_problems": 4, "forward_passes_per_problem": 10.0, "tokens_per_problem": 10.0,
          "rollouts_per_problem": 1.0}


def _write_results(path, rows):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  from alphallm import results as results_lib
  results = results_lib.Results(os.path.dirname(path))
  for row in rows:
    results.add(row)


def test_load_rows_merges_seed_runs(tmp_path):
  _write_results(str(tmp_path / "seed0" / "results.json"), [_row("greedy", 0), _row("mcts", 0)])
  _write_results(str(tmp_path / "seed1" / "results.json"), [_row("greedy", 1)])
  rows = notebook.load_rows(str(tmp_path))
  assert sorted((r["decoding"], r["seed"]) for r in rows) == [
      ("greedy", 0), ("greedy", 1), ("mcts", 0)]
  # The top-level file wins over the per-seed ones for the same identity.
  _write_results(str(tmp_path / "results.json"), [_row("greedy", 0, acc=0.25)])
  rows = notebook.load_rows(str(tmp_path))
  assert len(rows) == 3
  assert [r["accuracy"] for r in rows if (r["decoding"], r["seed"]) == ("greedy", 0)] == [0.25]
  assert notebook.load_rows(str(tmp_path / "empty")) == []


def test_load_rows_bad_file_names_it(tmp_path):
  (tmp_path / "results.json").write_text("{not json")
  with pytest.raises(ValueError, match="results.json: not a results.json"):
    notebook.load_rows(str(tmp_path))
  (tmp_path / "results.json").write_text(json.dumps({"rows": [{"task": "x"}]}))
  with pytest.raises(ValueError, match="results.json: row 0"):
    notebook.load_rows(str(tmp_path))


def test_critic_reports(tmp_path):
  cal = {"precision": 0.8, "recall": 0.7, "ece": 0.05, "n": 12}
  (tmp_path / "critics.json").write_text(json.dumps({"value": cal}))
  (tmp_path / "seed1").mkdir()
  (tmp_path / "seed1" / "critics.json").write_text(json.dumps({"value": cal, "orm": cal}))
  got = [(run, kind) for run, kind, _ in notebook.critic_reports(str(tmp_path))]
  assert got == [(".", "value"), ("seed1", "value"), ("seed1", "orm")]
  (tmp_path / "critics.json").write_text(json.dumps({"value": {"precision": 1}}))
  with pytest.raises(ValueError, match="critic 'value' lacks recall, ece, n"):
    notebook.critic_reports(str(tmp_path))


def test_markdown_table_escapes_cells():
  text = notebook.markdown_table(["a", "b"], [["x|y", 1], ["p\nq", 2.5]], "lr")
  assert text.split("\n") == ["| a | b |", "|---|---:|", "| x\\|y | 1 |", "| p\\nq | 2.5 |"]
  with pytest.raises(ValueError, match="one of 'l'/'r' per column"):
    notebook.markdown_table(["a"], [], "lr")
  with pytest.raises(ValueError, match="a row has 1 cells, the header 2"):
    notebook.markdown_table(["a", "b"], [[1]])
