import os
import subprocess
import sys
import textwrap

import pytest

from alphallm.workdir import Workdir, WorkdirError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_fresh_workdir_is_marked_and_reopened(tmp_path):
  with Workdir(str(tmp_path / "w")) as w:
    assert os.path.exists(os.path.join(w.path, ".alphallm"))
  with Workdir(str(tmp_path / "w")):
    pass


def test_foreign_workdir_refused(tmp_path):
  (tmp_path / "precious.txt").write_text("not ours")
  with pytest.raises(WorkdirError, match="not an alphallm workdir.*precious.txt"):
    Workdir(str(tmp_path)).open()
  assert (tmp_path / "precious.txt").read_text() == "not ours"


def test_workdir_is_a_file(tmp_path):
  (tmp_path / "f").write_text("x")
  with pytest.raises(WorkdirError, match="not a directory"):
    Workdir(str(tmp_path / "f")).open()


def test_corrupt_marker(tmp_path):
  w = tmp_path / "w"
  w.mkdir()
  (w / ".alphallm").write_text("{not json")
  with pytest.raises(WorkdirError, match="marker .* unreadable"):
    Workdir(str(w)).open()


def test_second_run_is_refused_and_lock_dies_with_process(tmp_path):
  path = str(tmp_path / "w")
  holder = subprocess.Popen(
      [sys.executable, "-c", textwrap.dedent(f"""
          import sys, time
          sys.path.insert(0, {ROOT!r})
          from alphallm.workdir import Workdir
          held = Workdir({path!r}).open()
          print("locked", flush=True)
          time.sleep(60)
      """)], stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(WorkdirError, match=f"in use by another run \\(pid {holder.pid}\\)"):
      Workdir(path).open()
  finally:
    holder.kill()
    holder.wait()
  with Workdir(path):  # SIGKILL released the lock.
    pass


def test_config_hash_and_diff_are_pure_and_canonical():
  from alphallm import workdir as w  # pylint: disable=import-outside-toplevel
  a = {"seed": 0, "model": {"embed_dim": 32, "heads": 2}, "eval": {"methods": ["greedy"]}}
  b = {"eval": {"methods": ["greedy"]}, "model": {"heads": 2, "embed_dim": 32}, "seed": 0}
  assert w.config_hash(a) == w.config_hash(b) and len(w.config_hash(a)) == 64
  c = {"seed": 1, "model": {"embed_dim": 32}, "eval": {"methods": ["greedy", "mcts"]}}
  assert w.config_diff(a, c) == [("eval.methods", ["greedy"], ["greedy", "mcts"]),
                                 ("model.heads", 2, "<absent>"), ("seed", 0, 1)]
  assert w.format_diff(w.config_diff(a, c)) == (
      'config.eval.methods: ["greedy"] -> ["greedy", "mcts"]; '
      "config.model.heads: 2 -> <absent>; config.seed: 0 -> 1")
  long = w.format_diff([("k", "x" * 100, "y")])
  assert len(long) < 90 and long.endswith('-> "y"')


def test_lock_file_names_pid_and_token(tmp_path):
  with Workdir(str(tmp_path / "w")) as w:
    pid, token = (tmp_path / "w" / ".lock").read_text().split()
    assert pid == str(os.getpid()) and token == w.token
    w.check_owner()
  with pytest.raises(WorkdirError, match="not open"):
    w.check_owner()
