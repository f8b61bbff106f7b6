"""docs/checkpoints.md's Python API block runs as written, on a tiny random checkpoint.

The block is taken from the doc verbatim; only its ``ckpt = "..."`` line is
pointed at a Qwen2.5-shaped checkpoint + tokenizer written into ``tmp_path``
(``experiments/paper/qwen2_5_1_5b_gsm8k.py``'s writers), and the search is
shrunk through ``mcts.default_search_config`` so it runs in seconds.
"""

import importlib.util
import os
import re

import pytest

from alphallm import config_files
from alphallm.search import mcts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "docs", "checkpoints.md")
CKPT_LINE = re.compile(r'^ckpt = "[^"]*"(.*)$', re.M)


def _api_block() -> str:
  """The doc's first ```python block (the API example)."""
  with open(DOC, encoding="utf-8") as f:
    text = f.read()
  match = re.search(r"```python\n(.*?)```", text, re.S)
  assert match, f"{DOC}: no ```python block"
  return match.group(1)


def test_block_is_short_and_names_the_real_functions():
  block = _api_block()
  code = [line for line in block.splitlines() if line.strip() and not line.startswith(
      ("import", "from"))]
  assert len(code) <= 12, f"{DOC}: the API example grew to {len(code)} lines"
  assert len(CKPT_LINE.findall(block)) == 1
  for name in ("hf_tokenizer.load_tokenizer", "hf_import.load_hf_checkpoint",
               "sampling.encode_prompts", "sampling.generate", "selection.make_search_decoder"):
    assert name in block, name


def test_doc_block_runs_on_a_tiny_checkpoint(tmp_path, monkeypatch, capsys):
  pytest.importorskip("tokenizers", reason="needs the hf extra (tokenizers)")
  pytest.importorskip("safetensors", reason="needs the hf extra (safetensors)")
  writers = config_files.load(os.path.join(ROOT, "experiments", "paper",
                                           "qwen2_5_1_5b_gsm8k.py"))
  texts = [f"Q: Tom has {a} pens and gets {b} more. How many now?\n{a} + {b} = {a + b}\n"
           f"The answer is {a + b}." for a in range(2, 9) for b in range(3, 9)]
  ckpt = writers.write_tiny_qwen(str(tmp_path / "qwen"), texts)
  block = CKPT_LINE.sub(lambda m: f"ckpt = {ckpt!r}{m.group(1)}", _api_block())

  small = mcts.default_search_config()
  small.num_simulations, small.num_actions = 2, 2
  small.max_option_len, small.max_completion_len = 4, 8
  monkeypatch.setattr(mcts, "default_search_config", lambda: small)

  path = tmp_path / "doc_example.py"
  path.write_text(block)
  spec = importlib.util.spec_from_file_location("doc_example", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)

  printed = capsys.readouterr().out
  assert printed.count("\n") >= 2                       # the greedy text and the search's
  assert module.config.tie_embeddings and module.config.qkv_bias
  assert module.config.vocab_size == module.tok.vocab_size  # padding rows dropped
  assert int(module.out.lengths[0]) > 0
