"""Crash, corruption and concurrency faults of the resumable loop (issue 7).

The full loop runs in a subprocess (``tests/fault_harness.py``: a tiny
config, round 0 + two rounds, a value critic, eta-MCTS evaluation) that
SIGKILLs itself at a chosen point: inside a trajectory shard write, during
SFT, inside an orbax checkpoint write, after a results row (two kills per
workdir, the second in the resumed run, to keep the test time down).
Rerunning the same command on the same workdir must then finish with exactly
the outputs of an uninterrupted run: the same ``results.json`` rows (bit for
bit: every random choice is seeded by phase), the same trajectory records per
round (none lost, none duplicated), and the same ``metrics.jsonl`` records,
one per ``(tag, step)``.

The subprocesses share a persistent JAX compilation cache, so only the
reference run pays for compilation.
"""

import collections
import errno
import json
import os
import select
import shutil
import signal
import subprocess
import sys

import pytest

import fault_harness
from alphallm import builders
from alphallm import experiment
from alphallm import io_utils
from alphallm import metrics as metrics_lib
from alphallm import results as results_lib
from alphallm import trajectories as traj_lib
from alphallm import workdir as workdir_lib
from alphallm.tasks import Problem

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HARNESS = os.path.join(ROOT, "tests", "fault_harness.py")
TIMEOUT_S = 300


@pytest.fixture(scope="module")
def env(tmp_path_factory):
  cache = tmp_path_factory.mktemp("jax_cache")
  out = {**os.environ, "PYTHONPATH": ROOT, "JAX_COMPILATION_CACHE_DIR": str(cache),
         "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
         "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1"}
  return out


def _run(env, workdir, kill=None):
  args = [sys.executable, HARNESS, str(workdir)] + ([kill] if kill else [])
  return subprocess.run(args, capture_output=True, text=True, timeout=TIMEOUT_S, env=env,
                        cwd=ROOT)


def _tail(proc) -> str:
  return f"rc={proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-5000:]}"


def _assert_completed(proc):
  assert proc.returncode == 0 and "fault_harness: completed" in proc.stdout, _tail(proc)


def _assert_killed(proc):
  assert proc.returncode == -signal.SIGKILL and "fault_harness: SIGKILL" in proc.stdout, \
      _tail(proc)


def _outputs(workdir) -> dict:
  store = traj_lib.TrajectoryStore(os.path.join(workdir, "trajectories"))
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    metrics = [json.loads(line) for line in f if line.strip()]
  with open(os.path.join(workdir, "results.md"), encoding="utf-8") as f:
    markdown = f.read()
  return {"rows": io_utils.read_json(os.path.join(workdir, "results.json"))["rows"],
          "markdown": markdown,
          "critics": io_utils.read_json(os.path.join(workdir, "critics.json")),
          "records": {r: store.records(r) for r in store.rounds()},
          "metrics": metrics}


@pytest.fixture(scope="module")
def reference(env, tmp_path_factory):
  """One uninterrupted run, shared by every test that compares against it."""
  workdir = tmp_path_factory.mktemp("reference") / "run"
  _assert_completed(_run(env, workdir))
  out = _outputs(workdir)
  assert sorted(out["records"]) == [1, 2]
  methods = tuple(fault_harness.tiny_config().eval.methods)
  assert "greedy" in methods and "mcts" in methods
  assert {(r["round"], r["decoding"]) for r in out["rows"]} == {
      (k, m) for k in range(3) for m in methods}
  out["workdir"] = workdir
  return out


def _assert_same_as_reference(workdir, ref, ordered_rows: bool = True):
  out = _outputs(workdir)
  key = lambda r: (r["round"], r["decoding"])  # noqa: E731
  if ordered_rows:
    assert out["rows"] == ref["rows"]  # exact float equality: bit-identical
    assert out["markdown"] == ref["markdown"]
  else:
    assert sorted(out["rows"], key=key) == sorted(ref["rows"], key=key)
  assert out["critics"] == ref["critics"]
  # Trajectories: per round, the same problems, none lost, none duplicated.
  assert sorted(out["records"]) == sorted(ref["records"])
  for r, want in ref["records"].items():
    got = out["records"][r]
    got_uids = collections.Counter(rec["problem"]["uid"] for rec in got)
    want_uids = collections.Counter(rec["problem"]["uid"] for rec in want)
    assert got_uids == want_uids, f"round {r}: lost {want_uids - got_uids}, extra " \
                                  f"{got_uids - want_uids}"
    assert len(got) == len(want)
    assert got == want  # and the very same records
  # Metrics: one record per (tag, step), and the same ones as the reference.
  keys = [(m["tag"], m["step"]) for m in out["metrics"]]
  duplicates = [k for k, n in collections.Counter(keys).items() if n > 1]
  assert not duplicates
  as_dict = lambda ms: {(m["tag"], m["step"]): m for m in ms}  # noqa: E731
  got_m, want_m = as_dict(out["metrics"]), as_dict(ref["metrics"])
  assert sorted(got_m) == sorted(want_m), (f"missing {sorted(set(want_m) - set(got_m))}, "
                                           f"extra {sorted(set(got_m) - set(want_m))}")
  assert got_m == want_m


def _rows(workdir):
  return {(r["round"], r["decoding"]) for r in
          io_utils.read_json(os.path.join(workdir, "results.json"))["rows"]}


def _ckpt_entries(workdir, name):
  return sorted(os.listdir(os.path.join(workdir, "checkpoints", name)))


# ---------------------------------------------------------------------------
# SIGKILL, then rerun the same command.


@pytest.mark.slow
def test_kill_during_search_then_checkpoint_write_resumes_to_identical_outputs(
    env, reference, tmp_path):
  workdir = tmp_path / "run"
  # Killed while writing round 1's second shard: its temporary file is
  # complete but not yet renamed; the first shard is done.
  _assert_killed(_run(env, workdir, kill="search-write:1:1"))
  store = traj_lib.TrajectoryStore(str(workdir / "trajectories"))
  assert store.completed_shards(1) == [0] and store.completed_shards(2) == []
  assert any(n.startswith(".round1-shard00001.array_record.") for n in
             os.listdir(store.directory))
  assert {r for r, _ in _rows(workdir)} == {0}
  done = os.stat(store.shard_path(1, 0))

  # The resumed run is killed inside orbax's save of round 1's last SFT
  # checkpoint: fully written to the temporary directory, never committed.
  _assert_killed(_run(env, workdir, kill="ckpt:sft_round1:4"))
  assert store.completed_shards(1) == [0, 1]
  again = os.stat(store.shard_path(1, 0))
  assert (again.st_ino, again.st_mtime_ns) == (done.st_ino, done.st_mtime_ns), \
      "a complete shard was searched again"
  entries = _ckpt_entries(workdir, "sft_round1")
  assert "4" not in entries and "2" in entries
  assert any(e.startswith("4.orbax-checkpoint-tmp") for e in entries), entries

  _assert_completed(_run(env, workdir))
  assert _ckpt_entries(workdir, "sft_round1") == ["2", "4"]  # the temporary is gone
  _assert_same_as_reference(workdir, reference)


@pytest.mark.slow
def test_kill_during_training_then_evaluation_resumes_to_identical_outputs(
    env, reference, tmp_path):
  workdir = tmp_path / "run"
  _assert_killed(_run(env, workdir, kill="train:sft_round1:3"))
  # Killed one step after the step-2 checkpoint: step 3 is lost and redone.
  assert _ckpt_entries(workdir, "sft_round1") == ["2"]
  assert {r for r, _ in _rows(workdir)} == {0}

  # The resumed run crashes too, right after its first row of round 1.
  _assert_killed(_run(env, workdir, kill="eval:1:greedy"))
  assert _ckpt_entries(workdir, "sft_round1") == ["2", "4"]
  assert (1, "greedy") in _rows(workdir) and (1, "mcts") not in _rows(workdir)

  _assert_completed(_run(env, workdir))
  _assert_same_as_reference(workdir, reference)


# ---------------------------------------------------------------------------
# Corrupt state.


def _copy_reference(reference, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(reference["workdir"], workdir)
  return workdir


@pytest.mark.slow
def test_corrupt_latest_checkpoint_falls_back_and_completes(env, reference, tmp_path):
  workdir = _copy_reference(reference, tmp_path)
  step_dir = workdir / "checkpoints" / "sft_round1" / "4"
  damaged = [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
  assert damaged
  for p in damaged:  # Partial writes: every array data file cut short.
    p.write_bytes(p.read_bytes()[:7])
  # Round 1 is evaluated again, from the policy retrained from step 2.
  rows = io_utils.read_json(str(workdir / "results.json"))["rows"]
  io_utils.atomic_write_json(str(workdir / "results.json"),
                             {"rows": [r for r in rows if r["round"] != 1]})

  proc = _run(env, workdir)
  assert (f"checkpoint step 4 in {workdir / 'checkpoints' / 'sft_round1'} is unreadable"
          in proc.stderr), _tail(proc)
  assert "falling back to the previous one" in proc.stderr
  _assert_completed(proc)
  _assert_same_as_reference(workdir, reference, ordered_rows=False)


@pytest.mark.slow
def test_malformed_round_prompts_file_is_named_on_resume(env, reference, tmp_path):
  workdir = _copy_reference(reference, tmp_path)
  path = workdir / "round1" / "prompts.jsonl"
  lines = path.read_text().splitlines(keepends=True)
  lines[2] = '{"question": "1+2", "answ'  # a torn line
  path.write_text("".join(lines))
  proc = _run(env, workdir)
  assert proc.returncode == 1, _tail(proc)
  assert f"{path}:3: malformed problem record" in proc.stderr, _tail(proc)


def test_foreign_workdir_is_refused_untouched(tmp_path):
  (tmp_path / "precious.txt").write_text("not ours")
  with pytest.raises(workdir_lib.WorkdirError, match="not an alphallm workdir.*precious.txt"):
    experiment.train_and_evaluate(fault_harness.tiny_config(), str(tmp_path))
  assert os.listdir(tmp_path) == ["precious.txt"]
  assert (tmp_path / "precious.txt").read_text() == "not ours"


def test_second_run_on_a_workdir_is_refused(env, tmp_path):
  workdir = tmp_path / "run"
  holder = subprocess.Popen([sys.executable, HARNESS, str(workdir), "hold:120"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env=env, cwd=ROOT)
  try:
    ready, _, _ = select.select([holder.stdout], [], [], 120)
    line = holder.stdout.readline() if ready else "(nothing within 120 s)"
    assert line.startswith("fault_harness: holding"), line
    before = sorted(os.listdir(workdir))
    config_json = (workdir / "config.json").read_text()
    with pytest.raises(workdir_lib.WorkdirError,
                       match=rf"in use by another run \(pid {holder.pid}\)"):
      experiment.train_and_evaluate(fault_harness.tiny_config(), str(workdir))
    assert sorted(os.listdir(workdir)) == before
    assert (workdir / "config.json").read_text() == config_json
  finally:
    holder.kill()
    holder.wait()


# ---------------------------------------------------------------------------
# Atomic writes: a failed rename leaves the previous file intact.


class _ReplaceSpy:
  """Records ``os.replace`` calls; fails them once ``fail`` is set."""

  def __init__(self, monkeypatch):
    self.calls = []
    self.fail = False
    self._replace = os.replace
    monkeypatch.setattr(os, "replace", self)

  def __call__(self, src, dst):
    self.calls.append((os.fspath(src), os.fspath(dst)))
    if self.fail:
      raise OSError("simulated crash before the rename")
    self._replace(src, dst)

  def assert_temp_then_rename(self, *paths):
    """Every path was written as a hidden temporary in its directory, then renamed."""
    renamed = {dst: src for src, dst in self.calls}
    for path in map(os.fspath, paths):
      assert path in renamed, f"{path} was not written through os.replace"
      src = renamed[path]
      assert os.path.dirname(src) == os.path.dirname(path)
      assert os.path.basename(src).startswith("." + os.path.basename(path) + ".")
      assert src.endswith(".tmp")


def _record(i: int, round_: int = 1) -> dict:
  problem = Problem(question=f"{i}+1", answer=str(i + 1))
  return traj_lib.make_record(
      round_index=round_, task="arithmetic", problem=problem, prompt=f"Q: {i}+1\n",
      completion=f"A: {i + 1}", path=[], selection="best_leaf", critic_score=0.5,
      orm_score=None, verified=True, kept=True, prompt_tokens=6, completion_tokens=4,
      generated_tokens=4, forward_passes=5)


def _listing(path):
  return sorted(os.listdir(path))


def _row(decoding: str, accuracy: float) -> dict:
  return {"task": "arithmetic", "round": 0, "decoding": decoding, "accuracy": accuracy,
          "num_problems": 8, "forward_passes_per_problem": 2.0, "tokens_per_problem": 1.0,
          "seed": 0}


def test_results_survive_a_failed_write(tmp_path, monkeypatch):
  spy = _ReplaceSpy(monkeypatch)
  res = results_lib.Results(str(tmp_path))
  res.add(_row("greedy", 0.5))
  spy.assert_temp_then_rename(res.json_path, res.md_path)
  before = {p: open(p).read() for p in (res.json_path, res.md_path)}
  spy.fail = True
  with pytest.raises(OSError, match="simulated crash"):
    res.add(_row("mcts", 0.75))
  assert {p: open(p).read() for p in before} == before
  assert _listing(tmp_path) == ["results.json", "results.md"]  # no temporaries left
  spy.fail = False
  assert results_lib.Results(str(tmp_path)).rows == [_row("greedy", 0.5)]


def test_metrics_survive_a_failed_flush(tmp_path, monkeypatch):
  # metrics.jsonl is appended (issue 15: a rewrite loses records), so the
  # failure is that of the append's write: the file keeps its earlier lines,
  # no torn line is left, and the record stays pending for the next flush.
  writer = metrics_lib.MetricWriter(str(tmp_path), tensorboard=False)
  writer.write("sft_round0", 2, {"loss": 1.5})
  writer.flush()
  before = open(writer.path).read()
  real_write = os.write

  def full_disk(fd, data):
    real_write(fd, bytes(data)[:7])  # part of the line reaches the file
    raise OSError(errno.ENOSPC, "No space left on device")

  monkeypatch.setattr(os, "write", full_disk)
  writer.write("sft_round0", 4, {"loss": 1.0})
  with pytest.raises(OSError, match=f"no space left on device: {writer.path}$"):
    writer.flush()
  monkeypatch.undo()
  assert open(writer.path).read() == before
  assert _listing(tmp_path) == ["metrics.jsonl"]
  assert metrics_lib.MetricWriter(str(tmp_path), tensorboard=False).records() == [
      {"tag": "sft_round0", "step": 2, "loss": 1.5}]
  writer.flush()  # the pending record is written once the disk has room
  assert metrics_lib.MetricWriter(str(tmp_path), tensorboard=False).records() == [
      {"tag": "sft_round0", "step": 2, "loss": 1.5}, {"tag": "sft_round0", "step": 4, "loss": 1.0}]


def test_trajectory_shard_survives_a_failed_overwrite(tmp_path, monkeypatch):
  spy = _ReplaceSpy(monkeypatch)
  store = traj_lib.TrajectoryStore(str(tmp_path))
  path = store.write_shard(1, 0, [_record(0), _record(1)])
  spy.assert_temp_then_rename(path)
  spy.fail = True
  with pytest.raises(OSError, match="simulated crash"):
    store.write_shard(1, 0, [_record(2)], overwrite=True)
  with pytest.raises(OSError, match="simulated crash"):
    store.write_shard(1, 1, [_record(3)])
  spy.fail = False
  # The shard and its checksum record (issue 15), no temporary.
  assert _listing(tmp_path) == [os.path.basename(path), os.path.basename(path) + ".sha256"]
  assert store.records(1) == [_record(0), _record(1)]
  assert store.missing_shards(1, 2) == [1]


def test_problem_files_and_json_reports_survive_a_failed_write(tmp_path, monkeypatch):
  spy = _ReplaceSpy(monkeypatch)
  prompts = tmp_path / "round1" / "prompts.jsonl"
  report = tmp_path / "critics.json"
  builders.write_problems(str(prompts), [Problem("1+1", "2")])
  io_utils.atomic_write_json(str(report), {"value": {"ece": 0.1}})
  spy.assert_temp_then_rename(prompts, report)
  spy.fail = True
  with pytest.raises(OSError):
    builders.write_problems(str(prompts), [Problem("2+2", "4")])
  with pytest.raises(OSError):
    io_utils.atomic_write_json(str(report), {"value": {"ece": 0.9}})
  assert prompts.read_text() == '{"answer": "2", "data": {}, "question": "1+1"}\n'
  assert io_utils.read_json(str(report)) == {"value": {"ece": 0.1}}
  assert _listing(tmp_path) == ["critics.json", "round1"]
  assert _listing(tmp_path / "round1") == ["prompts.jsonl"]

