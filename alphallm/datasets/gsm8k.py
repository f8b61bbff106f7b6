"""GSM8K (Cobbe et al. 2021, MIT license): grade-school math word problems.

Read from local jsonl files, never downloaded. Source layout::

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
import json
import os
import re
from collections.abc import Sequence

from alphallm import datasets, graders

NAME = "gsm8k"
ENV_VAR = "ALPHALLM_GSM8K_DIR"
SPLITS = ("train", "test")
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
    raise datasets.DatasetError(f"unknown {NAME} split {split!r}; known splits: {SPLITS}")
  return os.path.join(source_dir, f"{split}.jsonl")


def source_files(source_dir: str) -> dict[str, list[str]]:
  """The source files of each split present in ``source_dir``."""
  return {split: [split_path(source_dir, split)] for split in SPLITS
          if os.path.isfile(split_path(source_dir, split))}


def parse_line(raw: bytes, path: str, line: int) -> GSM8KExample:
  """One jsonl line as an example.

  Raises:
    MalformedRecordError: naming ``path:line`` and what is wrong.
  """
  def bad(reason: str) -> datasets.MalformedRecordError:
    return datasets.MalformedRecordError(path, line, reason)

  if len(raw) > MAX_LINE_BYTES:
    raise bad(f"line is {len(raw)} bytes, over {MAX_LINE_BYTES}")
  try:
    obj = json.loads(raw.decode("utf-8"))
  except UnicodeDecodeError as e:
    raise bad(f"not UTF-8 ({e.reason} at byte {e.start})") from e
  except json.JSONDecodeError as e:
    raise bad(f"invalid JSON: {e.msg} at column {e.colno}") from e
  if not isinstance(obj, dict):
    raise bad(f"expected a JSON object, got {type(obj).__name__}")
  for key in ("question", "answer"):
    if not isinstance(obj.get(key), str) or not obj[key].strip():
      raise bad(f"field {key!r} is missing or not a non-empty string")
  if graders.gsm8k_reference_answer(obj["answer"]) is None:
    raise bad("the answer has no final line '#### N' with a number N")
  return GSM8KExample(question=obj["question"], solution=obj["answer"], line=line)


def read_split(source_dir: str, split: str, skip_malformed: bool = False) -> list[GSM8KExample]:
  """All examples of ``split``, in file order, read straight from the jsonl file.

  Raises:
    DatasetError: the split file is missing; ``MalformedRecordError`` for a
      malformed line (unless ``skip_malformed``); ``EmptySplitError`` for a
      split without examples.
  """
  path = split_path(source_dir, split)
  if not os.path.isfile(path):
    raise datasets.DatasetError(f"{NAME} split {split!r}: file {path} does not exist")
  examples, skipped = [], []
  with open(path, "rb") as f:
    for line, raw in enumerate(f, start=1):
      if not raw.strip():
        continue
      try:
        examples.append(parse_line(raw, path, line))
      except datasets.MalformedRecordError as e:
        datasets.handle_malformed(e, skip_malformed, skipped)
  datasets.log_skipped(path, skipped)
  datasets.check_not_empty(examples, f"{NAME} split {split!r} ({path})", skipped)
  return examples


def load(split: str, data_dir: str | os.PathLike | None = None,
         tfds_dir: str | os.PathLike | None = None,
         skip_malformed: bool = False) -> Sequence[GSM8KExample]:
  """The examples of ``split``, in file order.

  Args:
    split: ``"train"`` or ``"test"``.
    data_dir: the source directory (default: ``$ALPHALLM_GSM8K_DIR``, else
      ``<repo>/../shared/data/gsm8k``).
    tfds_dir: if given, read through TFDS: the dataset is prepared there once
      (``array_record`` files) and read back with ``as_data_source`` (random
      access, no TensorFlow). If None, the jsonl file is read directly.
    skip_malformed: skip (count and log) malformed lines instead of raising.
  """
  if tfds_dir is None:
    return read_split(datasets.resolve_source_dir(data_dir, NAME, ENV_VAR), split, skip_malformed)
  from alphallm.datasets import tfds_builders  # pylint: disable=g-import-not-at-top
  source = os.fspath(data_dir) if data_dir is not None else datasets.default_source_dir(
      NAME, ENV_VAR)
  return tfds_builders.load_split(tfds_builders.GSM8KBuilder, split, source, tfds_dir,
                                  skip_malformed)
