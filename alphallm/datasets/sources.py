"""The files users download, found and read into validated records.

``prepare`` turns these into the layout the loader reads. Supported sources
(see docs/data.md)::

  gsm8k  <source>/{train,test}.jsonl                   openai/grade-school-math
         (also under grade_school_math/data/, main/ or data/)
         <source>/{train,test}-*.parquet (or .parquet)  the HF hub copy, main/
  math   <source>/{train,test}/<subject>/<id>.json      the MATH tarball
         (also under MATH/)
         **/{train,test}-*.parquet, **/*-{train,test}.parquet, **/{train,test}/0000.parquet
                                                        HF hub copies (depth <= 3)

Every record is validated by the format module's ``check_record``; an error
names the file and line (JSONL), the file (MATH JSON) or the file and 0-based
row (Parquet). Parquet is read with pyarrow when it is importable.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Callable, Iterator

from alphallm.datasets import base, gsm8k_format, math_format

JSONL, PARQUET, JSON_TREE = "jsonl", "parquet", "json_tree"
# Subdirectories of --source searched for GSM8K files, in order.
GSM8K_SUBDIRS = ("", os.path.join("grade_school_math", "data"), "main", "data")
# Subdirectories of --source that may hold MATH's train/ and test/.
MATH_TREE_SUBDIRS = ("", "MATH")
# Deepest directory below --source searched for MATH Parquet files.
MAX_PARQUET_DEPTH = 3
# Bounds on what one Parquet file may hold.
MAX_PARQUET_BYTES = 1 << 30
MAX_ROWS_PER_SPLIT = 1_000_000
_PARQUET_BATCH_ROWS = 1024
_STRING_TYPES = ("string", "large_string")


@dataclasses.dataclass(frozen=True)
class SplitSource:
  """Where one split's records are.

  Attributes:
    split: ``"train"`` or ``"test"``.
    kind: ``JSONL``, ``PARQUET`` or ``JSON_TREE``.
    root: the directory the files were found in (for ``JSON_TREE``, the
      directory holding ``train/`` and ``test/``).
    paths: the files, sorted (for ``JSON_TREE``, relative to ``root``).
  """

  split: str
  kind: str
  root: str
  paths: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Record:
  """One validated record.

  Attributes:
    fields: the format's ``FIELDS``, as non-empty strings.
    rel_path: for a MATH JSON file, its path relative to the tree root
      (``train/algebra/1.json``); None otherwise.
  """

  fields: dict[str, str]
  rel_path: str | None = None


def _split_of_parquet(name: str, parent: str = "") -> str | None:
  """The split a Parquet file holds, from its name (and its directory's), or None.

  ``train.parquet``, ``train-00000-of-00001.parquet`` (the hub's layout),
  ``math-train.parquet`` and ``train/0000.parquet`` all hold ``"train"``.
  """
  m = (re.fullmatch(r"(train|test)(?:[-_.][^/]*)?\.parquet", name)
       or re.fullmatch(r"[^/]*[-_](train|test)\.parquet", name))
  if m:
    return m.group(1)
  if parent in ("train", "test") and re.fullmatch(r"[0-9]+\.parquet", name):
    return parent
  return None


def _gsm8k_in(directory: str) -> dict[str, SplitSource]:
  """The GSM8K splits found directly in ``directory`` (maybe none)."""
  found = {}
  names = sorted(os.listdir(directory)) if os.path.isdir(directory) else []
  for split in gsm8k_format.SPLITS:
    jsonl = [n for n in names if n == f"{split}.jsonl"]
    parquet = [n for n in names if _split_of_parquet(n) == split]
    if jsonl and parquet:
      raise base.DatasetError(
          f"{directory}: both {split}.jsonl and {split} Parquet files; keep one of them")
    if jsonl or parquet:
      kind = JSONL if jsonl else PARQUET
      paths = tuple(os.path.join(directory, n) for n in jsonl or parquet)
      found[split] = SplitSource(split, kind, directory, paths)
  return found


def find_gsm8k(source: str) -> dict[str, SplitSource]:
  """GSM8K's splits in ``source`` (or the first subdirectory of ``GSM8K_SUBDIRS`` that has any).

  Raises:
    DatasetError: ``source`` is not a directory or holds no GSM8K split.
  """
  _check_dir(source)
  for sub in GSM8K_SUBDIRS:
    found = _gsm8k_in(os.path.join(source, sub) if sub else source)
    if found:
      return found
  where = ", ".join(os.path.join(source, s) if s else source for s in GSM8K_SUBDIRS)
  raise base.DatasetError(
      f"no GSM8K split found: looked for train.jsonl/test.jsonl or train-*.parquet/"
      f"test-*.parquet in {where}")


def _parquet_files(source: str) -> dict[str, list[str]]:
  """``{split: [files]}`` of the split-named Parquet files below ``source`` (depth-bounded)."""
  found: dict[str, list[str]] = {}
  for dirpath, dirnames, filenames in os.walk(source):
    depth = 0 if dirpath == source else os.path.relpath(dirpath, source).count(os.sep) + 1
    dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
    if depth >= MAX_PARQUET_DEPTH:
      dirnames.clear()
    for name in filenames:
      split = _split_of_parquet(name, os.path.basename(dirpath))
      if split:
        found.setdefault(split, []).append(os.path.join(dirpath, name))
  return {split: sorted(paths) for split, paths in found.items()}


def find_math(source: str) -> dict[str, SplitSource]:
  """MATH's splits in ``source``: a JSON tree (also under ``MATH/``), else Parquet files.

  Raises:
    DatasetError: ``source`` is not a directory, holds both a tree and
      Parquet files, or neither.
  """
  _check_dir(source)
  parquet = _parquet_files(source)
  for sub in MATH_TREE_SUBDIRS:
    root = os.path.join(source, sub) if sub else source
    splits = [s for s in math_format.SPLITS if math_format.split_files(root, s)]
    if splits:
      if parquet:
        raise base.DatasetError(
            f"{source}: holds both a MATH JSON tree ({root}) and Parquet files "
            f"({parquet[min(parquet)][0]}); point --source at one of them")
      return {s: SplitSource(s, JSON_TREE, root, tuple(math_format.split_files(root, s)))
              for s in splits}
  if parquet:
    return {s: SplitSource(s, PARQUET, source, tuple(p)) for s, p in sorted(parquet.items())}
  raise base.DatasetError(
      f"no MATH split found in {source}: looked for train/ or test/ with <subject>/<id>.json "
      f"files, also under MATH/, and for Parquet files named by split (train-*.parquet, "
      f"*-test.parquet, train/0000.parquet) up to {MAX_PARQUET_DEPTH} directories deep")


def find(name: str, source: str) -> dict[str, SplitSource]:
  """The splits of dataset ``name`` (``"gsm8k"`` or ``"math"``) found in ``source``."""
  if name == gsm8k_format.NAME:
    return find_gsm8k(source)
  if name == math_format.NAME:
    return find_math(source)
  raise base.DatasetError(f"unknown dataset {name!r}; known datasets: ['gsm8k', 'math']")


def _check_dir(source: str) -> None:
  if not os.path.isdir(source):
    raise base.DatasetError(f"--source {source!r} is not a directory")


def _pyarrow_parquet():
  """``pyarrow.parquet``, or a one-line error saying what to install."""
  try:
    import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top  # Optional dependency.
  except ImportError as e:
    raise base.DatasetError(
        "reading Parquet needs pyarrow, which is not installed: pip install pyarrow") from e
  return pq


def _one_line(error: Exception, limit: int = 200) -> str:
  text = " ".join(str(error).split())
  return text if len(text) <= limit else text[:limit] + "..."


def parquet_rows(path: str, columns: tuple[str, ...]) -> Iterator[tuple[int, dict]]:
  """``(row, {column: value})`` for each row of ``path`` (0-based rows), read in batches.

  Raises:
    DatasetError: pyarrow is missing; the file is too large, not Parquet, or
      lacks a column of ``columns`` or has one that is not a string column.
  """
  pq = _pyarrow_parquet()
  size = os.path.getsize(path)
  if size > MAX_PARQUET_BYTES:
    raise base.DatasetError(f"{path}: file is {size} bytes, over {MAX_PARQUET_BYTES}")
  try:
    parquet = pq.ParquetFile(path)
    schema = parquet.schema_arrow
  except (OSError, ValueError) as e:
    raise base.DatasetError(f"{path}: not a readable Parquet file: {_one_line(e)}") from e
  for column in columns:
    if column not in schema.names:
      raise base.DatasetError(
          f"{path}: no column {column!r} (columns: {', '.join(schema.names)})")
    kind = str(schema.field(column).type)
    if kind not in _STRING_TYPES:
      raise base.DatasetError(f"{path}: column {column!r} has type {kind}, expected string")
  row = 0
  try:
    for batch in parquet.iter_batches(batch_size=_PARQUET_BATCH_ROWS, columns=list(columns)):
      for values in batch.to_pylist():
        yield row, values
        row += 1
  except (OSError, ValueError) as e:
    raise base.DatasetError(f"{path}: unreadable at row {row}: {_one_line(e)}") from e


def _checked_size(fields: dict[str, str], limit: int, bad: base.BadRecord) -> dict[str, str]:
  """``fields``, checked to encode (as prepare writes them) in at most ``limit`` bytes."""
  size = len(json.dumps(fields).encode("utf-8"))
  if size > limit:
    raise bad(f"record is {size} bytes as JSON, over {limit}")
  return fields


def _read_parquet(src: SplitSource, fields: tuple[str, ...],
                  check: Callable[[object, base.BadRecord], dict[str, str]], limit: int,
                  skip_malformed: bool, skipped: list) -> list[Record]:
  records = []
  for path in src.paths:
    for row, values in parquet_rows(path, fields):
      def bad(reason: str, *_, path=path, row=row) -> base.MalformedRecordError:
        return base.MalformedRecordError(path, None, reason, row=row)
      try:
        records.append(Record(_checked_size(check(values, bad), limit, bad)))
      except base.MalformedRecordError as e:
        base.handle_malformed(e, skip_malformed, skipped)
      if len(records) + len(skipped) > MAX_ROWS_PER_SPLIT:
        raise base.DatasetError(f"{src.split} split: over {MAX_ROWS_PER_SPLIT} rows in "
                                f"{', '.join(src.paths)}")
  return records


def _read_jsonl(src: SplitSource, skip_malformed: bool, skipped: list) -> list[Record]:
  """The GSM8K records of ``src.paths[0]``, in file order; blank lines are ignored."""
  (path,) = src.paths
  records = []
  with open(path, "rb") as f:
    for line, raw, size in base.bounded_lines(f, gsm8k_format.MAX_LINE_BYTES):
      if size == len(raw) and not raw.strip():  # Blank (and not cut short).
        continue
      bad = lambda reason, *_, line=line: base.MalformedRecordError(path, line, reason)  # noqa: E731
      try:
        gsm8k_format.check_line_size(size, path, line)
        fields = gsm8k_format.check_record(gsm8k_format.decode_line(raw, path, line), bad)
        records.append(Record(_checked_size(fields, gsm8k_format.MAX_LINE_BYTES, bad)))
      except base.MalformedRecordError as e:
        base.handle_malformed(e, skip_malformed, skipped)
  return records


def _read_json_tree(src: SplitSource, skip_malformed: bool, skipped: list) -> list[Record]:
  """The MATH records of the files ``src.paths`` (relative to ``src.root``), in path order."""
  records = []
  for rel_path in src.paths:
    try:
      path = os.path.join(src.root, rel_path)
      bad = lambda reason, *_, path=path: base.MalformedRecordError(path, None, reason)  # noqa: E731
      fields = _checked_size(math_format.read_record(path), math_format.MAX_FILE_BYTES, bad)
      records.append(Record(fields, rel_path))
    except base.MalformedRecordError as e:
      base.handle_malformed(e, skip_malformed, skipped)
  return records


def read_split(name: str, src: SplitSource,
               skip_malformed: bool = False) -> tuple[list[Record], list[base.MalformedRecordError]]:
  """The validated records of one split of dataset ``name``, and the skipped errors.

  Raises:
    DatasetError: a malformed record (``MalformedRecordError`` naming file
      and line or row, unless ``skip_malformed``), an unreadable Parquet
      file, or a split without records (``EmptySplitError`` naming the files).
  """
  skipped: list[base.MalformedRecordError] = []
  if src.kind == PARQUET:
    fmt = gsm8k_format if name == gsm8k_format.NAME else math_format
    limit = gsm8k_format.MAX_LINE_BYTES if fmt is gsm8k_format else math_format.MAX_FILE_BYTES
    records = _read_parquet(src, fmt.FIELDS, fmt.check_record, limit, skip_malformed, skipped)
  elif src.kind == JSONL:
    records = _read_jsonl(src, skip_malformed, skipped)
  else:
    records = _read_json_tree(src, skip_malformed, skipped)
  what = ", ".join(src.paths) if src.kind != JSON_TREE else os.path.join(src.root, src.split)
  base.log_skipped(what, skipped)
  base.check_not_empty(records, f"{name} split {src.split!r} ({what})", skipped)
  return records, skipped
