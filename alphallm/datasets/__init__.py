"""Real reasoning datasets (GSM8K, MATH), read from local files, never downloaded.

Each dataset module (``gsm8k``, ``math_dataset``) reads its source files
directly (``read_split``) and through TFDS (``load(..., tfds_dir=...)``): the
builders in ``tfds_builders`` write ``array_record`` files that are read back
with ``builder.as_data_source()``, random access without TensorFlow. Both
paths give the same examples in the same (source) order.

This module holds what the dataset modules share: the errors and the lookup
of a dataset's source directory.
"""

from __future__ import annotations

import logging
import os

# The repository root (this file is ``<root>/alphallm/datasets/__init__.py``).
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Shared data sits next to the repository: ``<root>/../shared/data/<name>``.
SHARED_DATA_DIR = os.path.join(_REPO_ROOT, "..", "shared", "data")

_log = logging.getLogger(__name__)


class DatasetError(ValueError):
  """A dataset's files are missing, malformed or empty."""


class MalformedRecordError(DatasetError):
  """One record of a source file is malformed.

  Attributes:
    path: the source file.
    line: the 1-based line of the record (None for one-record-per-file data).
  """

  def __init__(self, path: str, line: int | None, reason: str):
    self.path = path
    self.line = line
    where = path if line is None else f"{path}:{line}"
    super().__init__(f"{where}: malformed record: {reason}")


class EmptySplitError(DatasetError):
  """A split has no (well-formed) examples."""


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
        f"{name} source directory {path!r} does not exist: pass data_dir=... or set "
        f"${env_var} (files are read locally, never downloaded)")
  return path


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


__all__ = ["DatasetError", "EmptySplitError", "MalformedRecordError", "SHARED_DATA_DIR",
           "default_source_dir", "resolve_source_dir"]
