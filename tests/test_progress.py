"""Progress when stdout is not a terminal: a heartbeat line at least every interval."""

import io
import os
import re
import subprocess
import sys
import time

from alphallm import progress

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_status_line_names_phase_done_total_and_eta():
  with progress.bar(total=10, desc="search round 1") as b:
    b.update(4)
    line = progress.status_line("round 1", now=b._state.start + 8.0)  # pylint: disable=protected-access
  assert line == ("[alphallm] round 1 | search round 1: 4/10 (40%), ETA 12 s, 8 s elapsed")
  assert progress.status_line("idle") == "[alphallm] idle"  # closed bars leave it


def test_bar_iterates_and_counts_like_tqdm():
  seen = []
  b = progress.bar([1, 2, 3], desc="x")
  for x in b:
    seen.append(x)
    assert "x: " in progress.status_line("p")
  assert seen == [1, 2, 3]
  assert progress.status_line("p") == "[alphallm] p"


def test_heartbeat_prints_every_interval():
  out = io.StringIO()
  with progress.heartbeat("phase", interval=0.05, stream=out, force=True):
    with progress.bar(total=3, desc="work") as b:
      for _ in range(3):
        time.sleep(0.06)
        b.update()
  lines = out.getvalue().splitlines()
  assert len(lines) >= 3, lines
  assert all(line.startswith("[alphallm] phase, ") for line in lines)
  assert any(re.search(r"work: \d/3", line) for line in lines)


def test_redirected_run_prints_a_line_at_least_every_interval(tmp_path):
  """The tiny quickstart with stdout to a file: no gap between lines above the interval."""
  log = tmp_path / "log.txt"
  with open(log, "w", encoding="utf-8") as f:
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-u", "-c", "import sys, time\n"
         "from alphallm import main\n"
         "from absl import app\n"
         "sys.argv = ['main', '--config=experiments/quickstart.py:tiny', "
         f"'--workdir={tmp_path / 'run'}', '--config.loop.rounds=0', "
         "\"--config.eval.methods=('greedy',)\"]\n"
         "app.run(main.main)\n"],
        stdout=subprocess.PIPE, stderr=f, cwd=ROOT, text=True,
        env={**os.environ, "PYTHONPATH": ROOT, "ALPHALLM_PROGRESS_S": "2"})
    stamps = []
    for line in proc.stdout:
      if line.startswith("[alphallm]"):
        stamps.append(time.monotonic() - t0)
    assert proc.wait(timeout=600) == 0, log.read_text()[-2000:]
  assert stamps, "no heartbeat line"
  gaps = [b - a for a, b in zip(stamps, stamps[1:])]
  assert max(gaps, default=0) < 2 * 2 + 1, gaps  # every ~2 s (loaded machines: some slack)
