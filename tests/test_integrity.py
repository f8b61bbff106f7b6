"""Integrity of the workdir (issue 15), library level: nothing fails silently.

Each test reproduces one failure of the issue with the library pieces the
loop uses (``workdir``, ``checkpoint``, ``trajectories``, ``metrics``,
``results``, ``io_utils``) and checks it is now refused or detected, with a
one-line message naming the file, key or path. The end-to-end versions
(through ``alphallm.main`` and the loop) are in ``test_integrity_e2e.py``.
"""

import contextlib
import errno
import json
import logging
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alphallm import checkpoint as ckpt_lib
from alphallm import io_utils
from alphallm import metrics as metrics_lib
from alphallm import results as results_lib
from alphallm import trajectories as traj_lib
from alphallm import workdir as workdir_lib
from alphallm.tasks import Problem
from alphallm.workdir import Workdir, WorkdirError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = {"seed": 0, "model": {"embed_dim": 32, "num_layers": 1},
          "sft": {"steps": 4, "learning_rate": 0.003},
          "task": {"name": "arithmetic", "knobs": {"min_ops": 1, "max_ops": 2}},
          "loop": {"rounds": 2}, "eval": {"methods": ["greedy", "mcts"]}}


def _config(**changes):
  c = json.loads(json.dumps(CONFIG))
  for dotted, value in changes.items():
    node = c
    *parents, leaf = dotted.split("__")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return c


# ---------------------------------------------------------------------------
# 1. A workdir bound to its config.


@pytest.mark.parametrize("change, message", [
    (dict(seed=1), "config.seed: 0 -> 1"),
    (dict(model__embed_dim=64), "config.model.embed_dim: 32 -> 64"),
    (dict(sft__steps=8), "config.sft.steps: 4 -> 8"),
    (dict(task__knobs__max_ops=3), "config.task.knobs.max_ops: 2 -> 3"),
])
def test_changed_config_is_refused_naming_the_key(tmp_path, change, message):
  with Workdir(str(tmp_path / "w")) as w:
    w.bind_config(CONFIG)
    before = {n: (tmp_path / "w" / n).read_text() for n in ("config.json", "config_history.json")}
  with Workdir(str(tmp_path / "w")) as w:
    with pytest.raises(WorkdirError) as e:
      w.bind_config(_config(**change))
  text = str(e.value)
  assert message in text and "\n" not in text, text
  assert str(tmp_path / "w") in text
  # Nothing was overwritten by the refused run.
  assert {n: (tmp_path / "w" / n).read_text() for n in before} == before


def test_same_config_rebinds_and_diff_lists_every_key(tmp_path):
  with Workdir(str(tmp_path)) as w:
    w.bind_config(CONFIG)
    history = w.bind_config(_config())
    assert len(history["configs"]) == 1
    with pytest.raises(WorkdirError) as e:
      w.bind_config(_config(seed=1, model__embed_dim=64))
  assert "config.model.embed_dim: 32 -> 64; config.seed: 0 -> 1" in str(e.value)


def test_continuing_with_an_allowed_change_keeps_both_configs(tmp_path):
  with Workdir(str(tmp_path)) as w:
    first = w.bind_config(CONFIG)["configs"][0]["hash"]
    with pytest.raises(WorkdirError, match=r"config.loop.rounds: 2 -> 4"):
      w.bind_config(_config(loop__rounds=4))  # not asked for: refused
    history = w.bind_config(_config(loop__rounds=4, eval__methods=["greedy"]),
                            allow_changes=("loop.rounds", "eval.methods"))
    assert [c["config"]["loop"]["rounds"] for c in history["configs"]] == [2, 4]
    assert history["configs"][0]["hash"] == first
    assert history["configs"][1]["allowed_changes"] == ["eval.methods", "loop.rounds"]
    assert io_utils.read_json(str(tmp_path / "config.json"))["loop"]["rounds"] == 4
    # Still refused for a key that may not change, even when asked.
    with pytest.raises(WorkdirError, match=r"allow_changes \['seed'\] may not change.*"
                                           r"loop.rounds"):
      w.bind_config(_config(seed=3), allow_changes=("seed",))
    # A later run compares against the latest config.
    with pytest.raises(WorkdirError, match=r"config.loop.rounds: 4 -> 2"):
      w.bind_config(CONFIG)
  on_disk = io_utils.read_json(str(tmp_path / "config_history.json"))
  assert [c["hash"] for c in on_disk["configs"]] == [c["hash"] for c in history["configs"]]


def test_legacy_config_json_is_adopted(tmp_path):
  with Workdir(str(tmp_path)):
    io_utils.atomic_write_json(str(tmp_path / "config.json"), CONFIG)
  with Workdir(str(tmp_path)) as w:
    with pytest.raises(WorkdirError, match="config.seed: 0 -> 1"):
      w.bind_config(_config(seed=1))
    assert len(w.bind_config(CONFIG)["configs"]) == 1


def test_tampered_history_is_refused(tmp_path):
  with Workdir(str(tmp_path)) as w:
    w.bind_config(CONFIG)
    path = tmp_path / "config_history.json"
    history = json.loads(path.read_text())
    history["configs"][0]["config"]["seed"] = 5  # the hash no longer matches
    path.write_text(json.dumps(history))
    with pytest.raises(WorkdirError, match="config_history.json: malformed config history"):
      w.bind_config(CONFIG)


# ---------------------------------------------------------------------------
# 4. One writer, always.


def _hold(path):
  return subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
      import sys, time
      sys.path.insert(0, {ROOT!r})
      from alphallm.workdir import Workdir
      held = Workdir({path!r}).open()
      print("locked", flush=True)
      time.sleep(60)
  """)], stdout=subprocess.PIPE, text=True)


def test_deleting_the_lock_file_does_not_release_the_lock(tmp_path):
  path = str(tmp_path / "w")
  holder = _hold(path)
  try:
    assert holder.stdout.readline().strip() == "locked"
    os.unlink(os.path.join(path, ".lock"))
    with pytest.raises(WorkdirError, match="in use by another run"):
      Workdir(path).open()
    assert not os.path.exists(os.path.join(path, ".lock"))  # the refused run wrote nothing
  finally:
    holder.kill()
    holder.wait()
  with Workdir(path):
    pass


def test_check_owner_guards_every_write(tmp_path, caplog):
  w = Workdir(str(tmp_path / "w")).open()
  try:
    target = str(tmp_path / "w" / "results.json")
    io_utils.atomic_write_json(target, {"rows": []})  # guarded, passes
    os.unlink(os.path.join(w.path, ".lock"))
    with caplog.at_level(logging.WARNING):
      io_utils.atomic_write_json(target, {"rows": []})
    assert "was deleted while this run holds the workdir" in caplog.text
    assert (tmp_path / "w" / ".lock").read_text().split()[1] == w.token
    # Another process claims the workdir: every write below it is refused.
    (tmp_path / "w" / ".lock").write_text("999999 feedfacefeedface\n")
    for write in (lambda: io_utils.atomic_write_json(target, {}),
                  lambda: io_utils.append_lines(str(tmp_path / "w" / "metrics.jsonl"), ["{}"]),
                  lambda: traj_lib.TrajectoryStore(str(tmp_path / "w" / "t")).write_shard(
                      1, 0, [])):
      with pytest.raises(WorkdirError, match=r"\.lock names another owner"):
        write()
    io_utils.atomic_write_json(str(tmp_path / "elsewhere.json"), {})  # not below it: free
  finally:
    w.close()


def test_replaced_workdir_is_detected(tmp_path):
  w = Workdir(str(tmp_path / "w")).open()
  try:
    os.rename(tmp_path / "w", tmp_path / "moved")
    os.mkdir(tmp_path / "w")
    with pytest.raises(WorkdirError, match="moved, deleted or replaced"):
      w.check_owner()
  finally:
    w.close()


def test_two_metric_writers_lose_no_record(tmp_path):
  """The lock-bypass failure: two writers, each used to rewrite the whole file."""
  a = metrics_lib.MetricWriter(str(tmp_path), tensorboard=False, flush_every=100)
  b = metrics_lib.MetricWriter(str(tmp_path), tensorboard=False, flush_every=100)
  for step in range(4):
    a.write("run_a", step, {"loss": float(step)})
    b.write("run_b", step, {"loss": float(step)})
  a.flush()
  b.flush()
  got = metrics_lib.MetricWriter(str(tmp_path), tensorboard=False).records()
  assert sorted((r["tag"], r["step"]) for r in got) == [
      (t, s) for t in ("run_a", "run_b") for s in range(4)]


def test_metrics_are_appended_and_a_torn_line_repaired(tmp_path, caplog):
  w = metrics_lib.MetricWriter(str(tmp_path), tensorboard=False)
  w.write("sft", 1, {"loss": 2.0})
  w.flush()
  inode = os.stat(w.path).st_ino
  w.write("sft", 2, {"loss": 1.0})
  w.write("sft", 1, {"loss": 2.0})  # identical: not written twice
  w.flush()
  assert os.stat(w.path).st_ino == inode  # appended in place, not replaced
  assert len(open(w.path).read().splitlines()) == 2
  with open(w.path, "a") as f:
    f.write('{"tag": "sft", "step": 3, "lo')  # a kill mid-append
  with caplog.at_level(logging.WARNING):
    again = metrics_lib.MetricWriter(str(tmp_path), tensorboard=False)
  assert "torn last line" in caplog.text
  assert [r["step"] for r in again.records()] == [1, 2]
  again.write("sft", 3, {"loss": 0.5})
  again.flush()
  assert [json.loads(l)["step"] for l in open(w.path)] == [1, 2, 3]


# ---------------------------------------------------------------------------
# 2 + 3. Checkpoints: checksums, fallback, finite state only.


def _state(scale=1.0):
  return {"params": {"w": jnp.arange(256, dtype=jnp.float32).reshape(16, 16) * scale,
                     "b": jnp.ones((16,), jnp.float32) * scale},
          "opt": {"nu": jnp.full((16, 16), 0.25 * scale, jnp.float32)},
          "step": jnp.asarray(2, jnp.int32)}


def _data_files(step_dir):
  return [f for f in ckpt_lib.step_files(step_dir) if "/d/" in f]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
  directory = tmp_path_factory.mktemp("ckpt") / "c"
  c = ckpt_lib.Checkpointer(str(directory))
  c.save(2, _state(1.0), {"phase": "x"})
  c.save(4, _state(2.0), {"phase": "x"})
  c.close()
  return directory


@pytest.mark.parametrize("nbytes", [16, 64])
def test_same_size_byte_flips_are_detected_and_fall_back(saved, tmp_path, caplog, nbytes):
  import shutil  # pylint: disable=import-outside-toplevel
  directory = tmp_path / "c"
  shutil.copytree(saved, directory)
  step_dir = directory / "4"
  target = step_dir / _data_files(str(step_dir))[0]
  data = bytearray(target.read_bytes())
  start = max(0, len(data) // 2 - nbytes // 2)
  for i in range(start, min(len(data), start + nbytes)):
    data[i] ^= 0x5A
  target.write_bytes(bytes(data))  # same size, different bytes
  c = ckpt_lib.Checkpointer(str(directory))
  with pytest.raises(ckpt_lib.CheckpointIntegrityError, match=f"{step_dir}: checksum mismatch"):
    c.restore(4, _state())
  assert c.latest_step() == 2
  with caplog.at_level(logging.WARNING):
    step, state, meta = c.restore_latest(_state())
  assert step == 2 and meta == {"phase": "x"}
  np.testing.assert_array_equal(state["params"]["w"], _state(1.0)["params"]["w"])
  lines = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
  assert len(lines) == 1 and f"checkpoint step 4 in {directory} is unreadable" in lines[0]
  assert "\n" not in lines[0]
  c.close()


def test_step_without_checksum_record_is_not_trusted(saved, tmp_path):
  import shutil  # pylint: disable=import-outside-toplevel
  directory = tmp_path / "c"
  shutil.copytree(saved, directory)
  os.unlink(directory / "4" / ckpt_lib.INTEGRITY_FILE)  # killed after orbax, before the record
  c = ckpt_lib.Checkpointer(str(directory))
  assert c.all_steps() == [2, 4] and c.latest_step() == 2
  assert "no checksum record" in c.verify(4)
  c.save(4, _state(3.0))  # redone: replaced and recorded
  assert ckpt_lib.Checkpointer(str(directory)).latest_step() == 4
  c.close()


@pytest.mark.parametrize("leaf, path", [("w", "['params']['w']"), ("nu", "['opt']['nu']")])
def test_non_finite_state_is_never_saved(tmp_path, leaf, path):
  state = _state()
  if leaf == "w":
    state["params"]["w"] = state["params"]["w"].at[3, 4].set(jnp.nan)
  else:
    state["opt"]["nu"] = state["opt"]["nu"].at[0, 0].set(jnp.inf)
  c = ckpt_lib.Checkpointer(str(tmp_path / "c"))
  c.save(2, _state())
  with pytest.raises(ckpt_lib.NonFiniteStateError) as e:
    c.save(4, state)
  assert f"state{path} has 1 non-finite value(s)" in str(e.value)
  assert "step 4" in str(e.value) and str(tmp_path / "c") in str(e.value)
  assert c.all_steps() == [2] and c.latest_step() == 2
  c.close()


def test_first_non_finite_ignores_integer_leaves():
  assert ckpt_lib.first_non_finite({"k": jnp.zeros(3, jnp.uint32), "x": jnp.ones(2)}) is None
  assert ckpt_lib.first_non_finite([jnp.ones(2), jnp.array([0.0, -jnp.inf])]) == ("[1]", 1)


def test_orbax_write_failure_is_one_line(tmp_path, monkeypatch):
  c = ckpt_lib.Checkpointer(str(tmp_path / "c"))

  def fail(*args, **kw):
    try:
      raise OSError(errno.ENOSPC, "No space left on device")
    except OSError as inner:
      raise ValueError("RESOURCE_EXHAUSTED: Error writing ... 66 times") from inner

  monkeypatch.setattr(c._manager, "save", fail)  # pylint: disable=protected-access
  with pytest.raises(ckpt_lib.CheckpointWriteError) as e:
    c.save(2, _state())
  assert str(e.value) == (f"checkpoint step 2 not saved: no space left on device: "
                          f"{tmp_path / 'c' / '2'}")
  assert e.value.__cause__ is None and e.value.__suppress_context__


@contextlib.contextmanager
def _tmpfs(path, size="160k"):
  """A small tmpfs at ``path`` (needs root); skips the test when it cannot mount."""
  os.makedirs(path, exist_ok=True)
  proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                        capture_output=True, text=True, check=False)
  if proc.returncode:
    pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()[:100]}")
  try:
    yield path
  finally:
    subprocess.run(["umount", "-l", str(path)], check=False)


def test_real_full_disk_and_read_only_filesystem(tmp_path):
  with _tmpfs(tmp_path / "fs") as fs:
    c = ckpt_lib.Checkpointer(str(fs / "c"))
    big = {f"w{i}": jax.random.normal(jax.random.key(i), (64, 64)) for i in range(20)}
    with pytest.raises(ckpt_lib.CheckpointWriteError) as e:
      c.save(2, big)
    with contextlib.suppress(Exception):
      c.close()
    assert str(e.value) == f"checkpoint step 2 not saved: no space left on device: {fs}/c/2"
    with pytest.raises(io_utils.WriteError, match=f"^no space left on device: {fs}/big.json$"):
      io_utils.atomic_write_text(str(fs / "big.json"), "x" * 400_000)
    subprocess.run(["mount", "-o", "remount,ro", str(fs)], check=True)
    with pytest.raises(io_utils.WriteError, match=f"^read-only filesystem: {fs}/r.json$"):
      io_utils.atomic_write_json(str(fs / "r.json"), {})
    with pytest.raises(WorkdirError, match=f"read-only filesystem: {fs}/c"):
      Workdir(str(fs / "c")).open()


# ---------------------------------------------------------------------------
# 2. Trajectory shards: checksums and phase manifests.


def _record(i: int, round_: int = 1) -> dict:
  problem = Problem(question=f"{i}+1", answer=str(i + 1))
  return traj_lib.make_record(
      round_index=round_, task="arithmetic", problem=problem, prompt=f"Q: {i}+1\n",
      completion=f"A: {i + 1}", path=[], selection="best_leaf", critic_score=0.5,
      orm_score=None, verified=True, kept=True, prompt_tokens=6, completion_tokens=4,
      generated_tokens=4, forward_passes=5)


def test_shard_checksum_catches_a_valid_but_different_shard(tmp_path):
  store = traj_lib.TrajectoryStore(str(tmp_path / "t"))
  a = store.write_shard(1, 0, [_record(0), _record(1)])
  b = store.write_shard(1, 1, [_record(2)])
  # A complete, valid shard put in place of another (e.g. copied from a backup).
  with open(b, "rb") as src, open(a, "wb") as dst:
    dst.write(src.read())
  with pytest.raises(traj_lib.TrajectoryFileError, match=f"{a}: checksum mismatch"):
    store.records(1)
  with pytest.raises(traj_lib.TrajectoryFileError, match="checksum mismatch"):
    store.data_source(1)
  os.unlink(traj_lib.checksum_path(b))
  with pytest.raises(traj_lib.TrajectoryFileError, match=f"{b}: no checksum record"):
    traj_lib.read_shard(b, verify=True)
  assert traj_lib.read_shard(b) == [_record(2)]  # a bare shard file, read as such


def test_manifest_names_a_deleted_or_changed_shard(tmp_path):
  store = traj_lib.TrajectoryStore(str(tmp_path / "trajectories"))
  first = store.write_shard(1, 0, [_record(0), _record(1)])
  store.write_shard(1, 1, [_record(2), _record(3)])
  manifest_path = str(tmp_path / "round2" / "sft_inputs.json")
  manifest = store.write_manifest(manifest_path, [1], phase="sft_round2")
  assert manifest["total_records"] == 4 and manifest["phase"] == "sft_round2"
  assert [e["path"] for e in manifest["shards"]] == [
      "../trajectories/round1-shard00000.array_record",
      "../trajectories/round1-shard00001.array_record"]
  assert len(traj_lib.read_manifest_records(manifest_path)) == 4
  os.unlink(first)  # deleted while round 2 runs
  assert len(store.records(1)) == 2  # the store alone sees half the data, silently
  with pytest.raises(traj_lib.ManifestError,
                     match=f"input shard {first} is missing \\(2 records"):
    traj_lib.read_manifest_records(manifest_path)
  # Regenerated with other content: a changed input, also named.
  store.write_shard(1, 0, [_record(9)])
  with pytest.raises(traj_lib.ManifestError, match=f"input shard {first} changed"):
    traj_lib.verify_manifest(manifest_path)
  # Regenerated identically (deterministic search): consistent again.
  store.write_shard(1, 0, [_record(0), _record(1)], overwrite=True)
  assert len(traj_lib.read_manifest_records(manifest_path)) == 4


def test_malformed_manifest_is_named(tmp_path):
  path = tmp_path / "m.json"
  path.write_text('{"shards": [{"path": 3}]}')
  with pytest.raises(traj_lib.ManifestError, match="m.json: malformed manifest"):
    traj_lib.verify_manifest(str(path))
  with pytest.raises(traj_lib.ManifestError, match="no such manifest"):
    traj_lib.verify_manifest(str(tmp_path / "none.json"))


# ---------------------------------------------------------------------------
# 5. Recovery on start: temporaries, side files, partly done phases.


def _row(decoding, round_=0):
  return {"task": "arithmetic", "round": round_, "decoding": decoding, "accuracy": 0.5,
          "num_problems": 8, "forward_passes_per_problem": 2.0, "tokens_per_problem": 1.0,
          "seed": 0}


def test_recover_cleans_temporaries_everywhere_and_rebuilds_results_md(tmp_path):
  w = Workdir(str(tmp_path)).open()
  try:
    res = results_lib.Results(str(tmp_path))
    res.add(_row("greedy"))
    # A kill between results.json and results.md: the markdown is a row short.
    io_utils.atomic_write_json(res.json_path, {"rows": [_row("greedy"), _row("mcts")]})
    stale = [tmp_path / ".results.json.abcd1234.tmp",
             tmp_path / "trajectories" / ".round1-shard00000.array_record.x1y2z3.tmp",
             tmp_path / "round1" / ".imagination.json.qwertyui.tmp",
             tmp_path / "checkpoints" / "sft_round1" / "4" / ".alphallm_sha256.json.a1b2c3d4.tmp"]
    for p in stale:
      p.parent.mkdir(parents=True, exist_ok=True)
      p.write_bytes(b"partial")
    keep = [tmp_path / "round1" / "notes.tmp", tmp_path / "checkpoints" / "4.orbax-checkpoint-tmp"]
    keep[0].write_text("mine")
    keep[1].mkdir(parents=True)
    out = w.recover()
    assert sorted(out["removed"]) == sorted(map(str, stale))
    assert out["rebuilt"] == [res.md_path]
    assert all(not p.exists() for p in stale) and all(p.exists() for p in keep)
    assert "| mcts |" in open(res.md_path).read()
    assert w.recover() == {"removed": [], "rebuilt": []}  # idempotent
  finally:
    w.close()


def test_rebuild_redraws_plots_when_a_run_drew_them(tmp_path):
  res = results_lib.Results(str(tmp_path))
  res.add(_row("greedy"))
  res.add(_row("greedy", 1))
  from alphallm import plots  # pylint: disable=import-outside-toplevel
  plots.write_plots(str(tmp_path))
  with_plots = open(res.md_path).read()
  io_utils.atomic_write_text(res.md_path, results_lib.to_markdown(res.rows[:1]))
  written = plots.rebuild_side_files(str(tmp_path))
  assert res.md_path in written and len(written) == 3
  assert open(res.md_path).read() == with_plots


def test_partly_present_phase_is_redone(tmp_path, caplog):
  prompts = tmp_path / "round1" / "prompts.jsonl"
  stats = tmp_path / "round1" / "imagination.json"
  prompts.parent.mkdir()
  prompts.write_text('{"question": "1+1"}\n')
  assert not workdir_lib.phase_done(str(tmp_path), "round1/imagine")  # never recorded
  stats.write_text("{}")
  workdir_lib.mark_phase_done(str(tmp_path), "round1/imagine", [str(prompts), str(stats)])
  assert workdir_lib.phase_done(str(tmp_path), "round1/imagine")
  os.unlink(stats)  # lost for good, before: the loop skipped imagination
  with caplog.at_level(logging.WARNING):
    assert not workdir_lib.phase_done(str(tmp_path), "round1/imagine")
  assert f"output {stats} is missing" in caplog.text
  with pytest.raises(ValueError, match="bad phase name"):
    workdir_lib.phase_record_path(str(tmp_path), "../x")


def test_phase_inputs_missing_or_changed_are_named(tmp_path):
  data = tmp_path / "in.jsonl"
  data.write_text("a\n")
  (tmp_path / "out").write_text("b")
  workdir_lib.mark_phase_done(str(tmp_path), "p", ["out"], inputs=["in.jsonl"])
  workdir_lib.verify_phase_inputs(str(tmp_path), "p")
  data.write_text("changed\n")
  with pytest.raises(WorkdirError, match=f"input {data} of phase p changed"):
    workdir_lib.verify_phase_inputs(str(tmp_path), "p")
  os.unlink(data)
  with pytest.raises(WorkdirError, match=f"input {data} of phase p is missing"):
    workdir_lib.verify_phase_inputs(str(tmp_path), "p")


# ---------------------------------------------------------------------------
# 6. Small messages.


def test_lone_surrogate_names_file_line_and_key(tmp_path):
  path = str(tmp_path / "prompts.jsonl")
  with pytest.raises(io_utils.WriteError) as e:
    io_utils.atomic_write_text(path, "ok\nalso ok\nbad \ud800 here\n")
  assert str(e.value) == (f"{path}:3:5: lone surrogate U+D800 in the text (not encodable "
                          "as UTF-8)")
  assert not os.listdir(tmp_path)
  with pytest.raises(ValueError, match=r"^gsm8k/train.jsonl:7:2: lone surrogate U\+DC00"):
    io_utils.check_text("x\udc00", "gsm8k/train.jsonl", first_line=7)
  record = _record(0)
  record["problem"]["data"] = {"note": "q\udfff"}
  with pytest.raises(traj_lib.SchemaError, match="record 0: key 'problem.data.note' holds a "
                                                 "lone surrogate"):
    traj_lib.write_shard(str(tmp_path / "s.array_record"), [record])


def test_bad_results_row_names_file_and_row(tmp_path):
  rows = [_row("greedy"), {**_row("mcts"), "num_problems": "8"}]
  (tmp_path / "results.json").write_text(json.dumps({"rows": rows}))
  with pytest.raises(ValueError) as e:
    results_lib.Results(str(tmp_path))
  assert str(e.value) == (f"{tmp_path / 'results.json'}: results row 1 field 'num_problems' "
                          "must be int, got '8'")
  (tmp_path / "results.json").write_text(json.dumps({"rows": [3]}))
  with pytest.raises(ValueError, match="results row 0 must be an object, got int"):
    results_lib.Results(str(tmp_path))


def test_write_errors_are_one_line(tmp_path, monkeypatch):
  def full(src, dst):
    raise OSError(errno.ENOSPC, "No space left on device")

  monkeypatch.setattr(os, "replace", full)
  path = str(tmp_path / "critics.json")
  with pytest.raises(io_utils.WriteError) as e:
    io_utils.atomic_write_json(path, {"a": 1})
  assert str(e.value) == f"no space left on device: {path}" and e.value.errno == errno.ENOSPC
  shard = str(tmp_path / "round1-shard00000.array_record")
  with pytest.raises(io_utils.WriteError, match=f"^no space left on device: {shard}"):
    traj_lib.write_shard(shard, [_record(0)])
  assert os.listdir(tmp_path) == []


def test_read_only_workdir_is_not_a_permission_problem(tmp_path, monkeypatch):
  class ReadOnly:
    f_flag = os.ST_RDONLY

  monkeypatch.setattr(os, "statvfs", lambda p: ReadOnly())
  with pytest.raises(WorkdirError) as e:
    Workdir(str(tmp_path)).open()
  assert "read-only filesystem" in str(e.value) and "not readable and writable" not in str(e.value)
