"""MATH (Hendrycks et al. 2021, MIT license): competition mathematics problems.

This module reads and validates MATH's source format, the original
("Hendrycks") JSON tree; ``loader.load("math", ...)`` reads it directly or
through TFDS. Source layout (what the MATH tarball's ``MATH/`` directory holds
and ``python -m alphallm.datasets.prepare math`` writes; see docs/data.md)::

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
"""

from __future__ import annotations

import dataclasses
import os
import re

from alphallm import graders
from alphallm.datasets import base

NAME = "math"
ENV_VAR = "ALPHALLM_MATH_DIR"
SPLITS = ("train", "test")
# The fields of a record, in the order prepare writes them.
FIELDS = ("problem", "level", "type", "solution")
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
    raise base.DatasetError(f"unknown {NAME} split {split!r}; known splits: {SPLITS}")
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


def check_record(obj: object, bad: base.BadRecord) -> dict[str, str]:
  """The record's ``FIELDS``, validated (non-empty strings, a boxed answer).

  Raises:
    MalformedRecordError: built by ``bad(reason)``.
  """
  fields = base.check_string_fields(obj, FIELDS, bad)
  if graders.last_boxed(fields["solution"]) is None:
    raise bad("the solution has no readable \\boxed{...} answer")
  return fields


def read_record(path: str) -> dict[str, str]:
  """The validated ``FIELDS`` of one problem file (at most ``MAX_FILE_BYTES``).

  Raises:
    MalformedRecordError: naming the file (and the line of a JSON error).
  """
  def bad(reason: str, line: int | None = None) -> base.MalformedRecordError:
    return base.MalformedRecordError(path, line, reason)

  size = os.path.getsize(path)
  if size > MAX_FILE_BYTES:
    raise bad(f"file is {size} bytes, over {MAX_FILE_BYTES}")
  with open(path, "rb") as f:
    raw = f.read(MAX_FILE_BYTES + 1)
  return check_record(base.decode_json(raw, bad), bad)


def parse_file(source_dir: str, rel_path: str) -> MATHExample:
  """One problem file as an example.

  Raises:
    MalformedRecordError: naming the file and what is wrong.
  """
  fields = read_record(os.path.join(source_dir, rel_path))
  return MATHExample(problem=fields["problem"], solution=fields["solution"],
                     level=parse_level(fields["level"]), type=fields["type"], path=rel_path)


def read_split(source_dir: str, split: str, skip_malformed: bool = False) -> list[MATHExample]:
  """All examples of ``split``, in sorted path order, read straight from the files.

  Raises:
    DatasetError: the split directory is missing; ``MalformedRecordError``
      for a malformed file (unless ``skip_malformed``); ``EmptySplitError``
      for a split without examples.
  """
  root = os.path.join(source_dir, split)
  if split in SPLITS and not os.path.isdir(root):
    raise base.DatasetError(f"{NAME} split {split!r}: directory {root} does not exist")
  examples, skipped = [], []
  for rel_path in split_files(source_dir, split):
    try:
      examples.append(parse_file(source_dir, rel_path))
    except base.MalformedRecordError as e:
      base.handle_malformed(e, skip_malformed, skipped)
  base.log_skipped(root, skipped)
  base.check_not_empty(examples, f"{NAME} split {split!r} ({root})", skipped)
  return examples
