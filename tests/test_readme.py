"""The README's task example is complete and works as documented."""

import importlib.util
import os
import re

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
