"""Memory planning (alphallm.memory): full and LoRA training states, fits, and the import layering."""

import ast
import os
import subprocess
import sys

import pytest

from alphallm import lora
from alphallm import memory
from alphallm import sharding

GB = 10 ** 9


def test_sharding_aliases_are_memory():
  for name in ("training_bytes", "kv_bytes_per_token", "search_memory_bytes",
               "choose_strategy", "llama2_config"):
    assert getattr(sharding, name) is getattr(memory, name)


def test_full_training_numbers():
  llama70 = memory.llama2_config("70b")
  assert memory.training_bytes(llama70.num_params()) == pytest.approx(1.1036e12, rel=1e-3)
  assert memory.choose_strategy(3_500_000_000, 80 * GB) == "data_parallel"
  assert memory.choose_strategy(3_600_000_000, 80 * GB) == "fsdp"
  with pytest.raises(ValueError, match="num_params"):
    memory.choose_strategy(0, 80 * GB)


def test_lora_70b_counts():
  llama70 = memory.llama2_config("70b")
  lc = lora.LoraConfig(rank=16, alpha=32.0)
  # Per layer: r * sum(I + O) over q, k, v, o, gate, up, down (hand-computed).
  per_layer = 16 * ((8192 + 8192) * 2 + (8192 + 1024) * 2 + (8192 + 28672) * 3)
  assert memory.lora_num_params(llama70, lc) == 80 * per_layer == 207_093_760
  plan = memory.lora_training_bytes(llama70, lc)
  full = memory.training_bytes(llama70.num_params())
  assert plan["optimizer"] == 8 * 207_093_760 and plan["optimizer"] < full / 100
  int8 = memory.lora_training_bytes(llama70, lora.LoraConfig(rank=16, base_dtype="int8"))
  bf16 = memory.lora_training_bytes(llama70, lora.LoraConfig(rank=16, base_dtype="bfloat16"))
  assert int8["base"] < bf16["base"] < plan["base"]
  assert plan["total"] == plan["total_without_merged"] + plan["merged"]


def test_plan():
  assert memory.plan(40 * GB, 8, 80 * GB).strategy == "data_parallel"
  fit = memory.plan(400 * GB, 8, 80 * GB)
  assert fit.strategy == "fsdp" and fit.per_device == 50 * GB and fit.budget == 56 * GB
  assert memory.plan(500 * GB, 8, 80 * GB).strategy == "does_not_fit"
  with pytest.raises(ValueError, match="num_devices"):
    memory.plan(GB, 0, 80 * GB)
  with pytest.raises(ValueError, match="headroom"):
    memory.plan(GB, 1, 80 * GB, headroom=1.0)


_ROOT = os.path.join(os.path.dirname(__file__), "..", "alphallm")


@pytest.mark.parametrize("name", ["train", "train_core", "sharding", "memory", "lora"])
def test_no_function_level_alphallm_imports(name):
  with open(os.path.join(_ROOT, f"{name}.py")) as fh:
    tree = ast.parse(fh.read())
  for fn in (n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef,
                                                            ast.AsyncFunctionDef))):
    for node in ast.walk(fn):
      if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("alphallm"):
        pytest.fail(f"alphallm/{name}.py:{node.lineno}: function-level import of "
                    f"{node.module}")
      if isinstance(node, ast.Import) and any(a.name.startswith("alphallm") for a in node.names):
        pytest.fail(f"alphallm/{name}.py:{node.lineno}: function-level alphallm import")


def test_sharding_does_not_import_train():
  code = ("import sys, alphallm.sharding, alphallm.memory; "
          "assert 'alphallm.train' not in sys.modules, 'sharding imports train'")
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=300)
