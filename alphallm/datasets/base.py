"""What the dataset modules share: errors, source directories, bounded JSON.

Every module of ``alphallm.datasets`` may import this one; it imports none of
them. ``alphallm.datasets`` re-exports its names (``datasets.DatasetError``).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator
from typing import BinaryIO

# The repository root (this file is ``<root>/alphallm/datasets/base.py``).
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Shared data sits next to the repository: ``<root>/../shared/data/<name>``.
SHARED_DATA_DIR = os.path.join(_REPO_ROOT, "..", "shared", "data")

_log = logging.getLogger("alphallm.datasets")


class DatasetError(ValueError):
  """A dataset's files are missing, malformed or empty."""


class MalformedRecordError(DatasetError):
  """One record of a source file is malformed.

  Attributes:
    path: the source file.
    line: the 1-based line of the record (None for one-record-per-file data
      and for Parquet rows).
    row: the 0-based row of a Parquet record (None otherwise).
  """

  def __init__(self, path: str, line: int | None, reason: str, *, row: int | None = None):
    self.path = path
    self.line = line
    self.row = row
    if row is not None:
      where = f"{path}: row {row} (0-based)"
    else:
      where = path if line is None else f"{path}:{line}"
    super().__init__(f"{where}: malformed record: {reason}")


class EmptySplitError(DatasetError):
  """A split has no (well-formed) examples."""


# Builds the error for one record from a reason (and, for JSON errors, the
# 1-based line of the error inside the record's text).
BadRecord = Callable[..., MalformedRecordError]


def default_source_dir(name: str, env_var: str) -> str:
  """Where dataset ``name``'s source files are: ``$env_var``, else the shared data dir."""
  return os.environ.get(env_var) or os.path.normpath(os.path.join(SHARED_DATA_DIR, name))


def resolve_source_dir(data_dir: str | os.PathLike | None, name: str, env_var: str) -> str:
  """``data_dir`` (or the default for ``name``), checked to be a directory.

  Raises:
    DatasetError: the directory does not exist; the message says how to
      point at the data.
  """
  path = os.fspath(data_dir) if data_dir is not None else default_source_dir(name, env_var)
  if not os.path.isdir(path):
    raise DatasetError(
        f"{name} source directory {path!r} does not exist: pass it (source_dir=..., or the "
        f"task knob data_dir=...) or set ${env_var}; files are read locally, never "
        f"downloaded (docs/data.md says where to get them)")
  return path


def decode_json(raw: bytes, bad: BadRecord) -> object:
  """``raw`` (UTF-8 JSON text) decoded.

  Raises:
    MalformedRecordError: built by ``bad(reason)`` for bytes that are not
      UTF-8, by ``bad(reason, json_line)`` for invalid JSON.
  """
  try:
    return json.loads(raw.decode("utf-8"))
  except UnicodeDecodeError as e:
    raise bad(f"not UTF-8 ({e.reason} at byte {e.start})") from e
  except json.JSONDecodeError as e:
    raise bad(f"invalid JSON: {e.msg} at column {e.colno}", e.lineno) from e
  except RecursionError as e:
    raise bad("invalid JSON: nested too deeply") from e


def bounded_lines(f: BinaryIO, max_bytes: int) -> Iterator[tuple[int, bytes, int]]:
  """``(line, raw, size)`` for each line of ``f``: 1-based number, bytes, full length.

  A line longer than ``max_bytes`` is never held in memory whole: ``raw`` is
  then its first ``max_bytes + 1`` bytes and ``size`` counts the rest too.
  """
  line = 0
  while True:
    raw = f.readline(max_bytes + 1)
    if not raw:
      return
    line += 1
    size = len(raw)
    if size > max_bytes and not raw.endswith(b"\n"):
      while True:
        rest = f.readline(1 << 16)
        size += len(rest)
        if not rest or rest.endswith(b"\n"):
          break
    yield line, raw, size


def check_string_fields(obj: object, keys: tuple[str, ...], bad: BadRecord) -> dict[str, str]:
  """``{key: obj[key]}`` for ``keys``, each checked to be a non-empty string.

  Raises:
    MalformedRecordError: ``obj`` is not a dict, or a field is missing,
      not a string or blank.
  """
  if not isinstance(obj, dict):
    raise bad(f"expected a JSON object, got {type(obj).__name__}")
  for key in keys:
    if not isinstance(obj.get(key), str) or not obj[key].strip():
      raise bad(f"field {key!r} is missing or not a non-empty string")
  return {key: obj[key] for key in keys}


def handle_malformed(error: MalformedRecordError, skip_malformed: bool,
                     skipped: list[MalformedRecordError]) -> None:
  """Raises ``error``, or records it in ``skipped`` when ``skip_malformed``."""
  if not skip_malformed:
    raise error
  skipped.append(error)


def log_skipped(what: str, skipped: list[MalformedRecordError]) -> None:
  """Logs how many malformed records were skipped, and the first one."""
  if skipped:
    _log.warning("%s: skipped %d malformed record(s); first: %s", what, len(skipped),
                 skipped[0])


def check_not_empty(examples: list, what: str, skipped: list[MalformedRecordError]) -> None:
  """Raises ``EmptySplitError`` when ``examples`` is empty."""
  if not examples:
    extra = f" ({len(skipped)} malformed record(s) skipped)" if skipped else ""
    raise EmptySplitError(f"{what} has no examples{extra}")
