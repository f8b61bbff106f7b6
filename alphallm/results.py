"""``results.json`` and ``results.md``: every number a run reports.

``results.json`` is ``{"rows": [row, ...]}`` with rows of at least::

    {"task": str, "round": int, "decoding": str, "accuracy": float,
     "num_problems": int, "forward_passes_per_problem": float,
     "tokens_per_problem": float}

Round 0 is before any self-improvement. A row is identified by
``(task, round, decoding, seed)``; adding a row with the same identity
replaces the old one, so a resumed run never duplicates rows.

``results.md`` (and the plots) are derived from ``results.json``:
``plots.rebuild_side_files(workdir)`` regenerates them, e.g. on start after a kill
that landed between writing ``results.json`` and ``results.md``. A bad row
in ``results.json`` is an error naming the file and the row.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from alphallm import io_utils

REQUIRED = {"task": str, "round": int, "decoding": str, "accuracy": float,
            "num_problems": int, "forward_passes_per_problem": float,
            "tokens_per_problem": float}
_KEY = ("task", "round", "decoding", "seed")


def validate_row(row: Mapping[str, Any], where: str = "results row") -> dict[str, Any]:
  """``row`` with int accuracies etc. as floats; ``ValueError`` naming ``where`` and the field."""
  if not isinstance(row, Mapping):
    raise ValueError(f"{where} must be an object, got {type(row).__name__} {row!r:.60}")
  out = dict(row)
  for key, typ in REQUIRED.items():
    if key not in out:
      raise ValueError(f"{where} is missing {key!r}: {out}")
    if typ is float and isinstance(out[key], int):
      out[key] = float(out[key])
    if not isinstance(out[key], typ) or isinstance(out[key], bool):
      raise ValueError(f"{where} field {key!r} must be {typ.__name__}, got {out[key]!r}")
  return out


def read_rows(json_path: str) -> list[dict[str, Any]]:
  """The validated rows of a ``results.json``; errors name the file (and row)."""
  obj = io_utils.read_json(json_path)
  if not isinstance(obj, dict) or not isinstance(obj.get("rows"), list):
    raise ValueError(f"{json_path}: expected an object with a 'rows' list")
  return [validate_row(r, f"{json_path}: results row {i}") for i, r in enumerate(obj["rows"])]


class Results:
  """The rows of one workdir, persisted atomically after every change."""

  def __init__(self, workdir: str):
    self.json_path = os.path.join(workdir, "results.json")
    self.md_path = os.path.join(workdir, "results.md")
    self.rows: list[dict[str, Any]] = []
    if os.path.exists(self.json_path):
      self.rows = read_rows(self.json_path)

  def add(self, row: Mapping[str, Any]) -> None:
    row = validate_row(row)
    key = tuple(row.get(k) for k in _KEY)
    self.rows = [r for r in self.rows if tuple(r.get(k) for k in _KEY) != key] + [row]
    self.write()

  def write(self) -> None:
    io_utils.atomic_write_json(self.json_path, {"rows": self.rows})
    io_utils.atomic_write_text(self.md_path, to_markdown(self.rows))


def to_markdown(rows: list[Mapping[str, Any]]) -> str:
  lines = ["# Results", "",
           "| task | round | decoding | accuracy | problems | fwd passes / problem "
           "| tokens / problem | seed |",
           "|---|---:|---|---:|---:|---:|---:|---:|"]
  for r in sorted(rows, key=lambda r: (r["task"], r["round"], r["decoding"], r.get("seed", 0))):
    lines.append(
        f"| {r['task']} | {r['round']} | {r['decoding']} | {100 * r['accuracy']:.1f}% "
        f"| {r['num_problems']} | {r['forward_passes_per_problem']:.1f} "
        f"| {r['tokens_per_problem']:.1f} | {r.get('seed', '')} |")
  return "\n".join(lines) + "\n"
