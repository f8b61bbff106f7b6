"""MATH (Hendrycks et al. 2021, MIT license): competition mathematics problems.

Read from a local copy in the original ("Hendrycks") format, never
downloaded::

  <source_dir>/train/<subject>/<id>.json
  <source_dir>/test/<subject>/<id>.json

Each file is one JSON object with string fields ``problem``, ``level``
(``"Level 1"`` .. ``"Level 5"``; ``"Level ?"`` occurs and reads as -1),
``type`` (the subject, e.g. ``"Algebra"``) and ``solution``, whose last
``\\boxed{...}`` is the final answer. Files are read in sorted path order.
The default source directory is ``$ALPHALLM_MATH_DIR``, else
``<repo>/../shared/data/math``.

A file that is not such an object, or whose solution has no boxed answer, is a
``MalformedRecordError`` naming the file (and the line and column of a JSON
error); with ``skip_malformed`` it is skipped, counted and logged instead. A
split without examples is an ``EmptySplitError``.

(The module is not called ``math`` so that it never shadows the standard
library's ``math``.)
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Sequence

from alphallm import datasets, graders

NAME = "math"
ENV_VAR = "ALPHALLM_MATH_DIR"
SPLITS = ("train", "test")
# Files larger than this are malformed (MATH files are a few KB).
MAX_FILE_BYTES = 1 << 20
# Deepest subject directory nesting searched below a split directory.
MAX_WALK_DEPTH = 4

_LEVEL_RE = re.compile(r"Level ([0-9])", re.ASCII)


@dataclasses.dataclass(frozen=True)
class MATHExample:
  """One MATH problem.

  Attributes:
    problem: the problem statement (LaTeX).
    solution: the reference solution, verbatim, with a ``\\boxed{}`` answer.
    level: the difficulty 1..5, or -1 when the file says ``"Level ?"``.
    type: the subject, e.g. ``"Algebra"``.
    path: the file, relative to the source directory (``test/algebra/1.json``).
  """

  problem: str
  solution: str
  level: int
  type: str
  path: str

  @property
  def answer(self) -> str:
    """The reference answer: the content of the solution's last box."""
    return graders.last_boxed(self.solution) or ""


def parse_level(level: str) -> int:
  """``"Level 3"`` -> 3; anything else (``"Level ?"``) -> -1."""
  m = _LEVEL_RE.fullmatch(level.strip())
  return int(m.group(1)) if m else -1


def split_files(source_dir: str, split: str) -> list[str]:
  """The ``.json`` files of ``split``, relative to ``source_dir``, sorted."""
  if split not in SPLITS:
    raise datasets.DatasetError(f"unknown {NAME} split {split!r}; known splits: {SPLITS}")
  root = os.path.join(source_dir, split)
  files = []
  for dirpath, dirnames, filenames in os.walk(root):
    if os.path.relpath(dirpath, root).count(os.sep) >= MAX_WALK_DEPTH:
      dirnames.clear()
    files += [os.path.relpath(os.path.join(dirpath, name), source_dir)
              for name in filenames if name.endswith(".json")]
  return sorted(f.replace(os.sep, "/") for f in files)


def source_files(source_dir: str) -> dict[str, list[str]]:
  """The source files (absolute) of each split present in ``source_dir``."""
  return {split: [os.path.join(source_dir, f) for f in split_files(source_dir, split)]
          for split in SPLITS if os.path.isdir(os.path.join(source_dir, split))}


def parse_file(source_dir: str, rel_path: str) -> MATHExample:
  """One problem file as an example.

  Raises:
    MalformedRecordError: naming the file and what is wrong.
  """
  path = os.path.join(source_dir, rel_path)

  def bad(reason: str, line: int | None = None) -> datasets.MalformedRecordError:
    return datasets.MalformedRecordError(path, line, reason)

  size = os.path.getsize(path)
  if size > MAX_FILE_BYTES:
    raise bad(f"file is {size} bytes, over {MAX_FILE_BYTES}")
  with open(path, "rb") as f:
    raw = f.read()
  try:
    obj = json.loads(raw.decode("utf-8"))
  except UnicodeDecodeError as e:
    raise bad(f"not UTF-8 ({e.reason} at byte {e.start})") from e
  except json.JSONDecodeError as e:
    raise bad(f"invalid JSON: {e.msg} at column {e.colno}", e.lineno) from e
  if not isinstance(obj, dict):
    raise bad(f"expected a JSON object, got {type(obj).__name__}")
  for key in ("problem", "level", "type", "solution"):
    if not isinstance(obj.get(key), str) or not obj[key].strip():
      raise bad(f"field {key!r} is missing or not a non-empty string")
  if graders.last_boxed(obj["solution"]) is None:
    raise bad("the solution has no readable \\boxed{...} answer")
  return MATHExample(problem=obj["problem"], solution=obj["solution"],
                     level=parse_level(obj["level"]), type=obj["type"], path=rel_path)


def read_split(source_dir: str, split: str, skip_malformed: bool = False) -> list[MATHExample]:
  """All examples of ``split``, in sorted path order, read straight from the files.

  Raises:
    DatasetError: the split directory is missing; ``MalformedRecordError``
      for a malformed file (unless ``skip_malformed``); ``EmptySplitError``
      for a split without examples.
  """
  root = os.path.join(source_dir, split)
  if split in SPLITS and not os.path.isdir(root):
    raise datasets.DatasetError(f"{NAME} split {split!r}: directory {root} does not exist")
  examples, skipped = [], []
  for rel_path in split_files(source_dir, split):
    try:
      examples.append(parse_file(source_dir, rel_path))
    except datasets.MalformedRecordError as e:
      datasets.handle_malformed(e, skip_malformed, skipped)
  datasets.log_skipped(root, skipped)
  datasets.check_not_empty(examples, f"{NAME} split {split!r} ({root})", skipped)
  return examples


def load(split: str, data_dir: str | os.PathLike | None = None,
         tfds_dir: str | os.PathLike | None = None,
         skip_malformed: bool = False) -> Sequence[MATHExample]:
  """The examples of ``split``, in sorted path order.

  Args:
    split: ``"train"`` or ``"test"``.
    data_dir: the source directory (default: ``$ALPHALLM_MATH_DIR``, else
      ``<repo>/../shared/data/math``).
    tfds_dir: if given, read through TFDS (prepared there once as
      ``array_record``, read back with ``as_data_source``, no TensorFlow);
      if None, the JSON files are read directly.
    skip_malformed: skip (count and log) malformed files instead of raising.
  """
  if tfds_dir is None:
    return read_split(datasets.resolve_source_dir(data_dir, NAME, ENV_VAR), split, skip_malformed)
  from alphallm.datasets import tfds_builders  # pylint: disable=g-import-not-at-top
  source = os.fspath(data_dir) if data_dir is not None else datasets.default_source_dir(
      NAME, ENV_VAR)
  return tfds_builders.load_split(tfds_builders.MATHBuilder, split, source, tfds_dir,
                                  skip_malformed)
