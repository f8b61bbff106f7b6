"""The notebooks install themselves and run top to bottom; they are committed without outputs.

``test_notebooks_execute_in_a_fresh_venv`` creates a plain virtual environment
(no system site-packages, so a dependency the install cell forgets fails
here), installs only ``ipykernel`` into it, registers it as a kernel (a
kernelspec in a temporary ``JUPYTER_PATH``) and runs each notebook with
nbclient in it, with ``ALPHALLM_REPO=<this checkout>``: the notebook's own
install cell does ``pip install -e <checkout>``. The rest runs with
``ALPHALLM_NB_SMALL=1`` (the quickstart's ``tiny`` variant) on one CPU device,
sharing a persistent JAX compilation cache. pip reuses its wheel cache; every
pip call has ``--timeout``, so an unreachable package index fails with a
message instead of hanging. The three notebooks share one venv and run one
after another.
"""

import ast
import json
import os
import re
import subprocess
import sys
import time

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS_DIR = os.path.join(ROOT, "notebooks")
# Execution order: quickstart fills the compilation cache that paper_tables reuses.
NOTEBOOKS = ("quickstart.ipynb", "paper_tables.ipynb", "search_anatomy.ipynb")
KERNEL = "alphallm-fresh-venv"
PLACEHOLDER_URL = "https://github.com/YOUR_ORG/alphallm"
CELL_TIMEOUT_S = 900     # the install cell of the first notebook installs every dependency
PIP_TIMEOUT_S = 30       # pip's per-connection timeout
VENV_SETUP_LIMIT_S = 900
_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # colours in tracebacks


def _read(name):
  return nbformat.read(os.path.join(NOTEBOOKS_DIR, name), as_version=4)


def _code(nb):
  return [c.source for c in nb.cells if c.cell_type == "code"]


def test_every_notebook_is_listed():
  found = sorted(n for n in os.listdir(NOTEBOOKS_DIR) if n.endswith(".ipynb"))
  assert found == sorted(NOTEBOOKS)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_without_outputs(name):
  nb = _read(name)
  nbformat.validate(nb)
  code = [c for c in nb.cells if c.cell_type == "code"]
  assert code, name
  for i, cell in enumerate(code):
    assert cell.get("outputs") == [], f"{name}: code cell {i} has outputs"
    assert cell.get("execution_count") is None, f"{name}: code cell {i} has an execution count"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_install_cell_badge_and_accelerator(name):
  """One install cell (the first code cell) from one URL variable; the badge uses the same
  placeholder; the second code cell reports the accelerator."""
  nb = _read(name)
  intro = nb.cells[0].source
  assert nb.cells[0].cell_type == "markdown"
  badge = f"https://colab.research.google.com/github/YOUR_ORG/alphallm/blob/main/notebooks/{name}"
  assert badge in intro, f"{name}: the Colab badge does not link {badge}"
  assert "YOUR_ORG" in intro and "REPO_URL" in intro and "ALPHALLM_REPO_URL" in intro
  assert "OWNER" not in json.dumps(nb), f"{name}: an old OWNER placeholder is left"
  code = _code(nb)
  setup = code[0]
  assert f'os.environ.get("ALPHALLM_REPO_URL", "{PLACEHOLDER_URL}")' in setup
  assert setup.count("github.com") == 1, f"{name}: the URL is held in one variable"
  for needle in ('os.environ.get("ALPHALLM_REPO"', "../pyproject.toml", "%pip install",
                 "--timeout", "[cuda]", "[tpu]", "git clone"):
    assert needle in setup, f"{name}: the install cell lacks {needle!r}"
  assert sum("%pip install" in c or "!pip" in c for c in code) == 1, f"{name}: one install cell"
  assert "notebook.accelerator_report()" in code[1], f"{name}: no accelerator cell"


def test_install_cells_are_identical():
  cells = {name: _code(_read(name))[0] for name in NOTEBOOKS}
  assert len(set(cells.values())) == 1, "the install cells differ between notebooks"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_cells_parse_and_share_the_setup(name):
  """Every cell is valid (IPython) Python; no copied config loader or small-settings block;
  nothing turns the progress bars off."""
  inputtransformer = pytest.importorskip("IPython.core.inputtransformer2")
  tm = inputtransformer.TransformerManager()
  code = _code(_read(name))
  for i, src in enumerate(code):
    try:
      ast.parse(tm.transform_cell(src))
    except SyntaxError as e:
      pytest.fail(f"{name}: code cell {i}: {e}")
  text = "\n".join(code)
  assert "notebook.small_mode()" in text and "notebook.notebook_config(REPO, SMALL)" in text
  for banned in ("spec_from_file_location", "def load_config", "ALPHALLM_NB_SMALL\", \"\")",
                 "config.model.update(", "TQDM_DISABLE", "disable=True", "decoding_methods"):
    assert banned not in text, f"{name}: {banned!r} (the shared setup lives in alphallm.notebook)"


def _tail(text: str, n: int = 2000) -> str:
  return _ANSI.sub("", text)[-n:]


def _fresh_venv(path) -> str:
  """A plain venv at ``path`` with ipykernel only. Returns its python. Fails with pip's words."""
  subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, timeout=300)
  python = os.path.join(str(path), "bin", "python")
  cmd = [python, "-m", "pip", "install", "-q", "--timeout", str(PIP_TIMEOUT_S), "--retries", "2",
         "ipykernel"]
  try:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=VENV_SETUP_LIMIT_S)
  except subprocess.TimeoutExpired:
    pytest.fail(f"pip install ipykernel into a fresh venv took over {VENV_SETUP_LIMIT_S} s")
  if proc.returncode:
    pytest.fail("pip could not install ipykernel into a fresh venv (is the package index "
                f"reachable?): {_tail(proc.stdout + proc.stderr)}")
  return python


def _kernel_env(tmp_path, monkeypatch, python: str) -> dict[str, str]:
  """The kernelspec (the venv's python, found through ``JUPYTER_PATH``) and the kernels' env."""
  kernels = tmp_path / "jupyter" / "kernels" / KERNEL
  kernels.mkdir(parents=True)
  (kernels / "kernel.json").write_text(json.dumps({
      "argv": [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
      "display_name": "alphallm fresh venv", "language": "python"}))
  monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
  env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
  venv_bin = os.path.dirname(python)
  flags = [f for f in env.get("XLA_FLAGS", "").split()
           if not f.startswith("--xla_force_host_platform_device_count")]
  env.update({
      "VIRTUAL_ENV": os.path.dirname(venv_bin),
      "PATH": venv_bin + os.pathsep + env.get("PATH", ""),
      "ALPHALLM_REPO": ROOT,
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


def _stdout(nb, index: int) -> str:
  return "".join(o.get("text", "") for o in nb.cells[index].get("outputs", [])
                 if o.get("output_type") == "stream")


def _run(name: str, env: dict[str, str], workdir: str):
  nb = _read(name)
  client = nbclient.NotebookClient(
      nb, kernel_name=KERNEL, timeout=CELL_TIMEOUT_S, startup_timeout=180,
      resources={"metadata": {"path": NOTEBOOKS_DIR}})
  client.execute(env={**env, "ALPHALLM_NB_WORKDIR": workdir})
  return nb


@pytest.mark.slow
def test_notebooks_execute_in_a_fresh_venv(tmp_path, monkeypatch):
  start = time.time()
  python = _fresh_venv(tmp_path / "venv")
  timings = {"venv + ipykernel": time.time() - start}
  env = _kernel_env(tmp_path, monkeypatch, python)
  failures = []
  for name in NOTEBOOKS:
    stem = os.path.splitext(name)[0]
    start = time.time()
    try:
      nb = _run(name, env, str(tmp_path / stem))
    except nbclient.exceptions.CellExecutionError as e:  # the first failing cell, with traceback
      failures.append(f"{name}: {_tail(str(e), 3000)}")
      continue
    timings[name] = time.time() - start
    failures += [f"{name}: {e}" for e in _errors(nb)]
    code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    install, accel = _stdout(nb, code[0]), _stdout(nb, code[1])
    if f"alphallm from {ROOT} | installed now: True" not in install:
      failures.append(f"{name}: the install cell did not install the checkout: {install!r}")
    if "backend cpu" not in accel:
      failures.append(f"{name}: the accelerator cell printed {accel!r}")
    if name != "search_anatomy.ipynb":
      # The plots were written and linked from results.md.
      md = open(tmp_path / stem / "results.md", encoding="utf-8").read()
      if "![accuracy vs compute](plots/accuracy_vs_compute.png)" not in md:
        failures.append(f"{name}: results.md does not link the plots")
  # alphallm came from the install cell, into the venv, from this checkout.
  proc = subprocess.run([python, "-c", "import alphallm, sys; print(alphallm.__file__, sys.prefix)"],
                        capture_output=True, text=True, cwd=str(tmp_path), timeout=120)
  where = [os.path.realpath(w) for w in proc.stdout.split()]
  if proc.returncode or where != [os.path.realpath(os.path.join(ROOT, "alphallm", "__init__.py")),
                                  os.path.realpath(tmp_path / "venv")]:
    failures.append(f"alphallm in the venv: {proc.stdout!r} {_tail(proc.stderr)}")
  print("fresh-venv notebook times:", {k: f"{v:.0f}s" for k, v in timings.items()})
  assert not failures, "\n\n".join(failures)
