"""The one entry point that reads a dataset: directly, or through TFDS.

``load(name, split)`` reads ``name``'s source files (the layout its format
module documents and ``python -m alphallm.datasets.prepare`` writes) straight
from disk; ``load(name, split, tfds_dir=...)`` prepares the dataset there once
as ``array_record`` (``tfds_builders``) and reads it back with random access,
without TensorFlow. Both give the same examples in the same (source) order.

The format modules (``gsm8k_format``, ``math_format``) only read and validate
their source files; this module and ``tfds_builders`` import them, never the
other way round.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from alphallm.datasets import base, gsm8k_format, math_format, tfds_builders


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """How to read one dataset.

  Attributes:
    format: the format module (``NAME``, ``ENV_VAR``, ``SPLITS``,
      ``read_split(dir, split, skip_malformed)``, ``source_files(dir)``).
    builder: its TFDS builder class.
  """

  format: ModuleType
  builder: type

  @property
  def env_var(self) -> str:
    return self.format.ENV_VAR

  @property
  def splits(self) -> tuple[str, ...]:
    return self.format.SPLITS


DATASETS: dict[str, DatasetSpec] = {
    gsm8k_format.NAME: DatasetSpec(gsm8k_format, tfds_builders.GSM8KBuilder),
    math_format.NAME: DatasetSpec(math_format, tfds_builders.MATHBuilder),
}


def names() -> list[str]:
  """The datasets ``load`` reads, sorted."""
  return sorted(DATASETS)


def spec(name: str) -> DatasetSpec:
  """The spec of dataset ``name``.

  Raises:
    DatasetError: ``name`` is not a known dataset.
  """
  if name not in DATASETS:
    raise base.DatasetError(f"unknown dataset {name!r}; known datasets: {names()}")
  return DATASETS[name]


def default_source_dir(name: str) -> str:
  """``name``'s source directory: ``$ALPHALLM_<NAME>_DIR``, else ``<repo>/../shared/data/<name>``."""
  return base.default_source_dir(name, spec(name).env_var)


def load(name: str, split: str, *, source_dir: str | os.PathLike | None = None,
         tfds_dir: str | os.PathLike | None = None,
         skip_malformed: bool = False) -> Sequence[Any]:
  """The examples of ``split`` of dataset ``name``, in source order.

  Args:
    name: ``"gsm8k"`` or ``"math"``.
    split: ``"train"`` or ``"test"``.
    source_dir: the source directory (default: ``default_source_dir(name)``).
    tfds_dir: if given, read through TFDS: the dataset is prepared there once
      (``array_record`` files) and read back with ``as_data_source`` (random
      access, no TensorFlow); prepared data is read even when the source
      directory is gone. If None, the source files are read directly.
    skip_malformed: skip (count and log) malformed records instead of raising.

  Returns:
    A list (direct read) or a ``tfds_builders.ExampleSource`` (random access,
    decoded on access) of the format's example dataclass.

  Raises:
    DatasetError: unknown dataset or split, missing source directory or
      split file, a malformed record (``MalformedRecordError``, naming file
      and line, unless ``skip_malformed``), an empty split
      (``EmptySplitError``), or stale TFDS data in ``tfds_dir``.
  """
  s = spec(name)
  if tfds_dir is None:
    directory = base.resolve_source_dir(source_dir, name, s.env_var)
    return s.format.read_split(directory, split, skip_malformed)
  source = os.fspath(source_dir) if source_dir is not None else default_source_dir(name)
  return tfds_builders.load_split(s.builder, split, source, tfds_dir, skip_malformed)
