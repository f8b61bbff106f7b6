"""The notebooks run top to bottom (CI-small settings) and are committed without outputs.

Each notebook is executed with nbclient in a kernel running this interpreter
(a kernelspec written to a temporary ``JUPYTER_PATH``), with cwd
``notebooks/`` (so its setup cell uses the checkout: no network) and
``ALPHALLM_NB_SMALL=1``. Kernels get one CPU device and share a persistent
JAX compilation cache: ``quickstart`` and ``paper_tables`` build the same
small config, so the second compiles almost nothing. The notebooks run one
after another in one test so that no two kernels write the cache at once.
"""

import json
import os
import re
import sys
import time

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS_DIR = os.path.join(ROOT, "notebooks")
# Execution order: quickstart fills the compilation cache that paper_tables reuses.
NOTEBOOKS = ("quickstart.ipynb", "paper_tables.ipynb", "search_anatomy.ipynb")
KERNEL = "alphallm-test-python"
CELL_TIMEOUT_S = 240
_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # colours in tracebacks


def test_every_notebook_is_listed():
  found = sorted(n for n in os.listdir(NOTEBOOKS_DIR) if n.endswith(".ipynb"))
  assert found == sorted(NOTEBOOKS)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_without_outputs(name):
  nb = nbformat.read(os.path.join(NOTEBOOKS_DIR, name), as_version=4)
  nbformat.validate(nb)
  code = [c for c in nb.cells if c.cell_type == "code"]
  assert code, name
  for i, cell in enumerate(code):
    assert cell.get("outputs") == [], f"{name}: code cell {i} has outputs"
    assert cell.get("execution_count") is None, f"{name}: code cell {i} has an execution count"
  # The first code cell installs the package (Colab) or uses the checkout (here).
  setup = code[0].source
  assert "pip install" in setup and "../pyproject.toml" in setup, name


def _kernel_env(tmp_path, monkeypatch) -> dict[str, str]:
  """Environment of the kernels: small settings, one CPU device, a shared JAX cache.

  The kernelspec (this interpreter) is found through ``JUPYTER_PATH`` in this process.
  """
  kernels = tmp_path / "jupyter" / "kernels" / KERNEL
  kernels.mkdir(parents=True)
  (kernels / "kernel.json").write_text(json.dumps({
      "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
      "display_name": "alphallm tests", "language": "python"}))
  monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
  env = dict(os.environ)
  flags = [f for f in env.get("XLA_FLAGS", "").split()
           if not f.startswith("--xla_force_host_platform_device_count")]
  env.update({
      "ALPHALLM_NB_SMALL": "1",
      "JAX_PLATFORMS": "cpu",
      "XLA_FLAGS": " ".join(flags),
      "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jax_cache"),
      "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
      "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
      "TF_CPP_MIN_LOG_LEVEL": "2",
      "PYTHONWARNINGS": "ignore::DeprecationWarning",
  })
  return env


def _errors(nb) -> list[str]:
  out = []
  for i, cell in enumerate(nb.cells):
    for o in cell.get("outputs", []):
      if o.get("output_type") == "error":
        out.append(f"cell {i}: {o.get('ename')}: {o.get('evalue')}")
  return out


def _run(name: str, env: dict[str, str], workdir: str):
  nb = nbformat.read(os.path.join(NOTEBOOKS_DIR, name), as_version=4)
  client = nbclient.NotebookClient(
      nb, kernel_name=KERNEL, timeout=CELL_TIMEOUT_S, startup_timeout=120,
      resources={"metadata": {"path": NOTEBOOKS_DIR}})
  client.execute(env={**env, "ALPHALLM_NB_WORKDIR": workdir})
  return nb


@pytest.mark.slow
def test_notebooks_execute(tmp_path, monkeypatch):
  env = _kernel_env(tmp_path, monkeypatch)
  failures, timings = [], {}
  for name in NOTEBOOKS:
    stem = os.path.splitext(name)[0]
    start = time.time()
    try:
      nb = _run(name, env, str(tmp_path / stem))
    except nbclient.exceptions.CellExecutionError as e:  # the first failing cell, with traceback
      failures.append(f"{name}: {_ANSI.sub('', str(e))[-3000:]}")
      continue
    timings[name] = time.time() - start
    failures += [f"{name}: {e}" for e in _errors(nb)]
    if name != "search_anatomy.ipynb":
      # The plots were written and linked from results.md.
      md = open(tmp_path / stem / "results.md", encoding="utf-8").read()
      if "![accuracy vs compute](plots/accuracy_vs_compute.png)" not in md:
        failures.append(f"{name}: results.md does not link the plots")
  print("notebook run times:", {k: f"{v:.0f}s" for k, v in timings.items()})
  assert not failures, "\n\n".join(failures)
