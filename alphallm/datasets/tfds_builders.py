"""TFDS builders for the local datasets, written and read without TensorFlow.

``GSM8KBuilder`` and ``MATHBuilder`` are ``tfds.core.GeneratorBasedBuilder``s
over local source files (``source_dir=...`` or TFDS's ``manual_dir``; nothing
is ever downloaded). ``prepare`` builds one with ``file_format="array_record"``
and ``load_split`` reads a split back with ``builder.as_data_source()``: random
access through ``ArrayRecordDataSource``, with features decoded by numpy.
tensorflow-datasets >= 4.9 runs this path without TensorFlow installed (its
``tf`` import is lazy and only ``as_dataset`` / tfrecord need it).

Examples are written in source order (``disable_shuffling``), so index ``i``
of the data source is example ``i`` of ``read_split``. Every field of the
example dataclass is one feature (``str`` -> ``Text``, ``int`` -> int64).

The prepared dataset records a fingerprint of its source files (and of
``skip_malformed``) in its metadata; preparing again from different files
into the same ``tfds_dir`` is an error rather than a silent reuse of stale
data. Prepared data whose source directory is gone is read as is.

Code outside this package reads a dataset with ``loader.load(name, split,
tfds_dir=...)``, the one place that chooses between this path and a direct
read of the source files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Iterator, Sequence
from types import ModuleType
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds

from alphallm.datasets import base, gsm8k_format, math_format

FILE_FORMAT = "array_record"
_FEATURE_OF_TYPE = {"str": tfds.features.Text, "int": lambda: tfds.features.Scalar(np.int64)}


def _type_name(field: dataclasses.Field) -> str:
  """``"str"`` or ``"int"``, whether or not annotations are postponed."""
  return field.type if isinstance(field.type, str) else field.type.__name__


def _features(example_cls: type) -> tfds.features.FeaturesDict:
  return tfds.features.FeaturesDict(
      {f.name: _FEATURE_OF_TYPE[_type_name(f)]() for f in dataclasses.fields(example_cls)})


def _decode(example_cls: type, record: dict[str, Any]) -> Any:
  """A decoded TFDS record (bytes, numpy scalars) as an example dataclass."""
  values = {}
  for f in dataclasses.fields(example_cls):
    v = record[f.name]
    values[f.name] = v.decode("utf-8") if _type_name(f) == "str" else int(v)
  return example_cls(**values)


def source_fingerprint(module: ModuleType, source_dir: str, skip_malformed: bool) -> str:
  """A hash of the source files (relative paths and bytes) and of ``skip_malformed``."""
  h = hashlib.sha256(f"skip_malformed={skip_malformed}\n".encode())
  for split, paths in sorted(module.source_files(source_dir).items()):
    for path in paths:
      h.update(f"{split}\0{os.path.relpath(path, source_dir)}\0".encode())
      with open(path, "rb") as f:
        h.update(hashlib.sha256(f.read()).digest())
  return h.hexdigest()


class _LocalBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A dataset built from local source files (the dataset module's ``read_split``)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  # The dataset module: NAME, SPLITS, source_files(dir), read_split(dir, split, skip).
  module: ClassVar[ModuleType]
  example_cls: ClassVar[type]
  homepage: ClassVar[str] = ""
  # TFDS finds a builder's code path only to look up the checksums of the URLs
  # it downloads; these builders download nothing. (For a builder in a package,
  # tfds 4.9.10 looks it up with the ``importlib_resources`` backport, which is
  # not installed on Python >= 3.9.)
  code_path = None

  def __init__(self, *, source_dir: str | os.PathLike | None = None,
               skip_malformed: bool = False, **kwargs):
    """Builder over ``source_dir`` (else TFDS's ``manual_dir``); kwargs go to TFDS."""
    self._source_dir = None if source_dir is None else os.fspath(source_dir)
    self._skip_malformed = skip_malformed
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self, features=_features(self.example_cls), homepage=self.homepage,
        disable_shuffling=True, metadata=tfds.core.MetadataDict())

  def _split_generators(self, dl_manager):
    source = self._source_dir or os.fspath(dl_manager.manual_dir)
    present = self.module.source_files(source)
    if not present:
      raise base.DatasetError(
          f"{self.module.NAME}: no split of {self.module.SPLITS} found in {source}")
    splits = {split: self.module.read_split(source, split, self._skip_malformed)
              for split in present}
    self.info.metadata["fingerprint"] = source_fingerprint(self.module, source,
                                                           self._skip_malformed)
    return {split: self._generate_examples(examples) for split, examples in splits.items()}

  def _generate_examples(self, examples: Sequence[Any]) -> Iterator[tuple[int, dict[str, Any]]]:
    for i, example in enumerate(examples):
      yield i, dataclasses.asdict(example)


class GSM8KBuilder(_LocalBuilder, skip_registration=True):
  """GSM8K from ``train.jsonl`` / ``test.jsonl`` (see ``alphallm.datasets.gsm8k_format``)."""

  name = "alphallm_gsm8k"
  module = gsm8k_format
  example_cls = gsm8k_format.GSM8KExample
  homepage = "https://github.com/openai/grade-school-math"
  MANUAL_DOWNLOAD_INSTRUCTIONS = "Place GSM8K's train.jsonl and test.jsonl in manual_dir."


class MATHBuilder(_LocalBuilder, skip_registration=True):
  """MATH in Hendrycks format (see ``alphallm.datasets.math_format``)."""

  name = "alphallm_math"
  module = math_format
  example_cls = math_format.MATHExample
  homepage = "https://github.com/hendrycks/math"
  MANUAL_DOWNLOAD_INSTRUCTIONS = ("Place MATH's train/ and test/ directories "
                                  "(<subject>/<id>.json) in manual_dir.")


def prepare(builder_cls: type[_LocalBuilder], source_dir: str | os.PathLike,
            tfds_dir: str | os.PathLike, skip_malformed: bool = False) -> _LocalBuilder:
  """The builder over ``source_dir``, prepared in ``tfds_dir`` (built once).

  Raises:
    DatasetError: ``tfds_dir`` holds this dataset prepared from other source
      files (or with another ``skip_malformed``), or the source is missing
      and nothing is prepared; the dataset modules' errors while building.
  """
  source_dir, tfds_dir = os.fspath(source_dir), os.fspath(tfds_dir)
  builder = builder_cls(source_dir=source_dir, skip_malformed=skip_malformed,
                        data_dir=tfds_dir, file_format=FILE_FORMAT)
  has_source = os.path.isdir(source_dir)
  if builder.is_prepared():
    stored = (builder.info.metadata or {}).get("fingerprint")
    if has_source and stored != source_fingerprint(builder_cls.module, source_dir,
                                                   skip_malformed):
      raise base.DatasetError(
          f"{builder.data_dir} was prepared from other source files than {source_dir} (or "
          f"with another skip_malformed): delete it or use another tfds_dir")
    return builder
  base.resolve_source_dir(source_dir, builder_cls.module.NAME, builder_cls.module.ENV_VAR)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=source_dir, try_download_gcs=False))
  return builder


class ExampleSource(Sequence):
  """A split as a random-access sequence of examples, decoded on access."""

  def __init__(self, source: Any, example_cls: type):
    self._source = source
    self._example_cls = example_cls

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index):
    if isinstance(index, slice):
      return [self[i] for i in range(*index.indices(len(self)))]
    n = len(self)
    if not -n <= index < n:
      raise IndexError(f"index {index} out of range for {n} examples")
    return _decode(self._example_cls, self._source[index % n])


def load_split(builder_cls: type[_LocalBuilder], split: str, source_dir: str | os.PathLike,
               tfds_dir: str | os.PathLike, skip_malformed: bool = False) -> ExampleSource:
  """``split`` of the dataset, prepared in ``tfds_dir`` if needed, via ``as_data_source``."""
  builder = prepare(builder_cls, source_dir, tfds_dir, skip_malformed)
  if split not in builder.info.splits:
    raise base.DatasetError(
        f"{builder.name} in {builder.data_dir} has no split {split!r}; it has "
        f"{sorted(builder.info.splits)}")
  return ExampleSource(builder.as_data_source(split=split), builder_cls.example_cls)
