"""GSM8K (Cobbe et al. 2021, MIT license): grade-school math word problems.

This module reads and validates GSM8K's source format; ``loader.load("gsm8k",
...)`` reads it directly or through TFDS. Source layout (what
``python -m alphallm.datasets.prepare gsm8k`` writes; see docs/data.md)::

  <source_dir>/train.jsonl   7473 lines
  <source_dir>/test.jsonl    1319 lines

Each line is a JSON object with string fields ``question`` and ``answer``;
``answer`` is the reference solution: reasoning lines with calculator
annotations ``<<48/2=24>>``, then a last line ``#### N`` with the final
answer. The default source directory is ``$ALPHALLM_GSM8K_DIR``, else
``<repo>/../shared/data/gsm8k``.

A line that is not such an object (bad JSON, missing or empty fields, no
``#### N`` with a number) is a ``MalformedRecordError`` naming ``file:line``;
with ``skip_malformed`` it is skipped, counted and logged instead. Blank lines
are ignored. A split without examples is an ``EmptySplitError``.
"""

from __future__ import annotations

import dataclasses
import os
import re

from alphallm import graders
from alphallm.datasets import base

NAME = "gsm8k"
ENV_VAR = "ALPHALLM_GSM8K_DIR"
SPLITS = ("train", "test")
# The fields of a record, in the order prepare writes them.
FIELDS = ("question", "answer")
# Lines longer than this are malformed (the longest GSM8K line is ~1.5k chars).
MAX_LINE_BYTES = 1 << 16

_ANNOTATION_RE = re.compile(r"<<[^<>\n]{0,%d}>>" % graders.MAX_ANNOTATION_CHARS)


@dataclasses.dataclass(frozen=True)
class GSM8KExample:
  """One GSM8K problem.

  Attributes:
    question: the word problem.
    solution: the reference solution, verbatim (steps, then ``#### N``).
    line: the 1-based line of the record in its split's jsonl file.
  """

  question: str
  solution: str
  line: int

  @property
  def answer(self) -> str:
    """The final answer as written after ``####`` (e.g. ``"1,450,000"``)."""
    return self.solution.rpartition("####")[2].strip()

  @property
  def steps(self) -> list[str]:
    """The solution's reasoning lines (before ``####``), without blank lines."""
    body = self.solution.rpartition("####")[0]
    return [line.rstrip() for line in body.split("\n") if line.strip()]


def strip_annotations(text: str) -> str:
  """``text`` without its calculator annotations ``<<expr=result>>``."""
  return _ANNOTATION_RE.sub("", text)


def split_path(source_dir: str, split: str) -> str:
  """The jsonl file of ``split``."""
  if split not in SPLITS:
    raise base.DatasetError(f"unknown {NAME} split {split!r}; known splits: {SPLITS}")
  return os.path.join(source_dir, f"{split}.jsonl")


def source_files(source_dir: str) -> dict[str, list[str]]:
  """The source files of each split present in ``source_dir``."""
  return {split: [split_path(source_dir, split)] for split in SPLITS
          if os.path.isfile(split_path(source_dir, split))}


def check_record(obj: object, bad: base.BadRecord) -> dict[str, str]:
  """The record's ``FIELDS``, validated (non-empty strings, a ``#### N`` answer).

  Raises:
    MalformedRecordError: built by ``bad(reason)``.
  """
  fields = base.check_string_fields(obj, FIELDS, bad)
  if graders.gsm8k_reference_answer(fields["answer"]) is None:
    raise bad("the answer has no final line '#### N' with a number N")
  return fields


def check_line_size(size: int, path: str, line: int) -> None:
  """Raises ``MalformedRecordError`` (naming ``path:line``) for a line over ``MAX_LINE_BYTES``."""
  if size > MAX_LINE_BYTES:
    raise base.MalformedRecordError(path, line, f"line is {size} bytes, over {MAX_LINE_BYTES}")


def decode_line(raw: bytes, path: str, line: int) -> object:
  """One jsonl line (bytes, at most ``MAX_LINE_BYTES``) as a JSON value.

  Raises:
    MalformedRecordError: naming ``path:line``.
  """
  check_line_size(len(raw), path, line)
  return base.decode_json(raw, lambda reason, *_: base.MalformedRecordError(path, line, reason))


def parse_line(raw: bytes, path: str, line: int) -> GSM8KExample:
  """One jsonl line as an example.

  Raises:
    MalformedRecordError: naming ``path:line`` and what is wrong.
  """
  obj = decode_line(raw, path, line)
  fields = check_record(obj, lambda reason: base.MalformedRecordError(path, line, reason))
  return GSM8KExample(question=fields["question"], solution=fields["answer"], line=line)


def read_split(source_dir: str, split: str, skip_malformed: bool = False) -> list[GSM8KExample]:
  """All examples of ``split``, in file order, read straight from the jsonl file.

  Raises:
    DatasetError: the split file is missing; ``MalformedRecordError`` for a
      malformed line (unless ``skip_malformed``); ``EmptySplitError`` for a
      split without examples.
  """
  path = split_path(source_dir, split)
  if not os.path.isfile(path):
    raise base.DatasetError(f"{NAME} split {split!r}: file {path} does not exist")
  examples, skipped = [], []
  with open(path, "rb") as f:
    for line, raw, size in base.bounded_lines(f, MAX_LINE_BYTES):
      if size == len(raw) and not raw.strip():  # Blank (and not cut short).
        continue
      try:
        check_line_size(size, path, line)
        examples.append(parse_line(raw, path, line))
      except base.MalformedRecordError as e:
        base.handle_malformed(e, skip_malformed, skipped)
  base.log_skipped(path, skipped)
  base.check_not_empty(examples, f"{NAME} split {split!r} ({path})", skipped)
  return examples
