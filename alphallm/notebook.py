"""What the notebooks share: settings from the environment, the experiment config, devices, rows.

The notebooks under ``notebooks/`` keep only their install cell inline (it runs
before this package exists); everything else they would otherwise copy lives
here, so that the three stay consistent and the helpers are tested
(``tests/test_notebook_helpers.py``).

Environment variables read (all optional):

* ``ALPHALLM_NB_SMALL``: ``1`` runs the quickstart's ``tiny`` variant (CI; seconds per
  phase, numbers meaningless); unset, empty or ``0``: the full settings.
* ``ALPHALLM_NB_WORKDIR``: the run's workdir (default ``/tmp/alphallm_nb/<notebook>``).
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections

from alphallm import config_files
from alphallm import results as results_lib

SMALL_ENV = "ALPHALLM_NB_SMALL"
WORKDIR_ENV = "ALPHALLM_NB_WORKDIR"
DEFAULT_WORKDIR_ROOT = "/tmp/alphallm_nb"
# The variant of an experiment file that SMALL mode runs (experiments/quickstart.py: tiny).
SMALL_VARIANT = "tiny"
_FALSE = ("", "0", "false", "no", "off")
_TRUE = ("1", "true", "yes", "on")


def small_mode(env: Mapping[str, str] | None = None) -> bool:
  """Whether ``ALPHALLM_NB_SMALL`` asks for the small (CI) settings.

  Raises:
    ValueError: a value that is neither true (1/true/yes/on) nor false (unset/0/false/no/off).
  """
  env = os.environ if env is None else env
  value = env.get(SMALL_ENV, "").strip().lower()
  if value in _FALSE:
    return False
  if value in _TRUE:
    return True
  raise ValueError(f"environment variable {SMALL_ENV}={env.get(SMALL_ENV)!r}: expected "
                   "1/true/yes/on or 0/false/no/off (or unset)")


def workdir(name: str, small: bool, env: Mapping[str, str] | None = None) -> str:
  """``ALPHALLM_NB_WORKDIR``, else ``/tmp/alphallm_nb/<name>`` (``_small`` appended if small)."""
  env = os.environ if env is None else env
  if env.get(WORKDIR_ENV):
    return env[WORKDIR_ENV]
  return os.path.join(DEFAULT_WORKDIR_ROOT, name + ("_small" if small else ""))


def experiment_path(repo: str, name: str = "quickstart") -> str:
  """``<repo>/experiments/<name>.py`` (a clear error naming the path if it is missing)."""
  path = os.path.join(repo, "experiments", name + ".py")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"experiment config {path!r} does not exist (is {repo!r} a "
                            "checkout of alphallm, with experiments/?)")
  return path


def load_experiment(path: str, variant: str = "") -> ml_collections.ConfigDict:
  """``get_config(variant)`` of the experiment file at ``path`` (every key: docs/configuration.md)."""
  module = config_files.load(path)
  if not hasattr(module, "get_config"):
    raise ValueError(f"{path}: no get_config() in this experiment file")
  return module.get_config(variant) if variant else module.get_config()


def notebook_config(repo: str, small: bool, name: str = "quickstart"
                    ) -> ml_collections.ConfigDict:
  """The experiment ``name``'s config: its ``tiny`` variant when ``small``, else as shipped."""
  return load_experiment(experiment_path(repo, name), SMALL_VARIANT if small else "")


def _device_memory(device: Any) -> str:
  """``"<used> / <limit> GiB"`` from ``device.memory_stats()``, or ``""`` when not reported."""
  try:
    stats = device.memory_stats() or {}
  except Exception:  # CPU devices and some runtimes do not report memory
    return ""
  limit = stats.get("bytes_limit")
  if not limit:
    return ""
  used = stats.get("bytes_in_use", 0)
  return f"{used / 2**30:.1f} / {limit / 2**30:.1f} GiB"


def accelerator_report(devices: Sequence[Any] | None = None) -> str:
  """What JAX sees: backend, device count and kind, memory per device when reported.

  Args:
    devices: the devices to describe (default ``jax.devices()``).

  Returns:
    Several lines of text; the last says how to get a GPU/TPU when only a CPU is seen.
  """
  import jax  # here, so that importing this module stays cheap

  devices = list(jax.devices() if devices is None else devices)
  if not devices:
    return "JAX sees no devices"
  platform = devices[0].platform
  kinds = sorted({d.device_kind for d in devices})
  lines = [f"JAX {jax.__version__}, backend {platform}: {len(devices)} device(s), "
           f"kind {', '.join(kinds)}"]
  for d in devices:
    mem = _device_memory(d)
    lines.append(f"  {d.id}: {d.device_kind}" + (f", memory in use {mem}" if mem else ""))
  if platform == "cpu":
    lines.append("CPU only. For a GPU/TPU on Colab: Runtime > Change runtime type > a GPU or "
                 "TPU, then rerun the install cell, which installs alphallm with the "
                 "accelerator's JAX (pip install -e \".[cuda]\" or \".[tpu]\").")
  return "\n".join(lines)


def result_paths(workdir_: str) -> list[str]:
  """``workdir/results.json`` and ``workdir/*/results.json`` (one run per seed), existing only."""
  paths = [os.path.join(workdir_, "results.json")] + sorted(
      glob.glob(os.path.join(workdir_, "*", "results.json")))
  return [p for p in paths if os.path.isfile(p)]


def load_rows(workdir_: str) -> list[dict[str, Any]]:
  """Rows of every ``result_paths(workdir)``, validated, merged by (task, round, decoding, seed).

  The first file naming a row wins. Raises ``ValueError`` naming the file on a bad file or row.
  """
  rows: dict[tuple, dict[str, Any]] = {}
  for path in result_paths(workdir_):
    try:
      with open(path, encoding="utf-8") as f:
        data = json.load(f)
      file_rows = data["rows"]
    except (OSError, ValueError, KeyError, TypeError) as e:
      raise ValueError(f"{path}: not a results.json with a 'rows' list ({e})") from None
    for i, row in enumerate(file_rows):
      try:
        row = results_lib.validate_row(row)
      except Exception as e:
        raise ValueError(f"{path}: row {i}: {e}") from None
      key = (row["task"], row["round"], row["decoding"], row.get("seed", 0))
      rows.setdefault(key, row)
  return list(rows.values())


def critic_reports(workdir_: str) -> list[tuple[str, str, dict[str, Any]]]:
  """``(run, critic kind, calibration)`` from ``critics.json`` of the workdir and its runs.

  ``run`` is the directory relative to ``workdir`` (``"."`` for the workdir itself);
  calibration has ``precision``, ``recall``, ``ece`` and ``n``.
  """
  paths = sorted(glob.glob(os.path.join(workdir_, "critics.json"))
                 + glob.glob(os.path.join(workdir_, "*", "critics.json")))
  out = []
  for path in paths:
    try:
      with open(path, encoding="utf-8") as f:
        data = json.load(f)
    except (OSError, ValueError) as e:
      raise ValueError(f"{path}: not a critics.json ({e})") from None
    run = os.path.relpath(os.path.dirname(path), workdir_)
    for kind, c in data.items():
      missing = [k for k in ("precision", "recall", "ece", "n") if k not in c]
      if missing:
        raise ValueError(f"{path}: critic {kind!r} lacks {', '.join(missing)}")
      out.append((run, kind, c))
  return out


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]],
                   align: str = "") -> str:
  """A markdown table; ``align`` has one letter per column, ``l`` or ``r`` (default: all left).

  ``|`` and newlines inside cells are escaped so that a model's text cannot break the table.
  """
  align = align or "l" * len(header)
  if len(align) != len(header) or set(align) - {"l", "r"}:
    raise ValueError(f"align={align!r}: one of 'l'/'r' per column ({len(header)} columns)")
  cell = lambda x: str(x).replace("\\", "\\\\").replace("|", "\\|").replace("\n", "\\n")  # noqa: E731
  lines = ["| " + " | ".join(cell(h) for h in header) + " |",
           "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
  for r in rows:
    if len(r) != len(header):
      raise ValueError(f"markdown_table: a row has {len(r)} cells, the header {len(header)}")
    lines.append("| " + " | ".join(cell(x) for x in r) + " |")
  return "\n".join(lines)
