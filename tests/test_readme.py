"""The README's task example is complete and works as documented."""

import importlib.util
import json
import os
import re
import subprocess
import sys

from alphallm import data
from alphallm.tasks import get_task
from alphallm.tokenizer import CharTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_readme_task_example(tmp_path):
  readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
  block = re.search(r"```python\n(# mytask\.py\n.*?)```", readme, re.S).group(1)
  assert len(block.splitlines()) < 60
  path = tmp_path / "mytask.py"
  path.write_text(block)
  spec = importlib.util.spec_from_file_location("mytask", path)
  spec.loader.exec_module(importlib.util.module_from_spec(spec))
  task = get_task("doubling", max_start=5)
  problems = task.generate(0, 50)
  assert problems == task.generate(0, 50)
  assert all(task.verify(p, task.demonstration(p)) for p in problems)
  assert not task.verify(problems[0], "A: -1")
  data.encode_examples(CharTokenizer(), [task.prompt(p) for p in problems],
                       [task.demonstration(p) for p in problems], seq_len=64)


def test_readme_task_runs_the_loop_from_a_config_outside_the_repo(tmp_path):
  """The README's mytask.py + myconfig.py, written outside the repo, run the tiny loop."""
  readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
  task = re.search(r"```python\n(# mytask\.py\n.*?)```", readme, re.S).group(1)
  config = re.search(r"```python\n(# myconfig\.py.*?)```", readme, re.S).group(1)
  command = re.search(r"```bash\n(python -m alphallm.main --config=/path/to/myconfig.py:tiny"
                      r" --workdir=\S+)\n```", readme).group(1)
  outside = tmp_path / "elsewhere"
  outside.mkdir()
  (outside / "mytask.py").write_text(task)
  (outside / "myconfig.py").write_text(config)
  workdir = tmp_path / "run"
  argv = command.replace("/path/to/myconfig.py", str(outside / "myconfig.py")).replace(
      "/tmp/doubling_tiny", str(workdir)).split()
  proc = subprocess.run([sys.executable] + argv[1:], cwd=str(outside), capture_output=True,
                        text=True, timeout=900,
                        env={**os.environ, "PYTHONPATH": ROOT})
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = json.load(open(workdir / "results.json"))["rows"]
  assert {(r["round"], r["decoding"]) for r in rows} == {
      (k, m) for k in (0, 1) for m in ("greedy", "self_consistency@4", "mcts")}
  assert all(r["task"] == "doubling" for r in rows)
  prompts = (workdir / "round1" / "prompts.jsonl").read_text().splitlines()
  assert prompts and all(json.loads(p)["data"]["origin"]["source"] == "held_out"
                         for p in prompts)
