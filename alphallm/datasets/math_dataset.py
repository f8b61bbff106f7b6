"""MATH under its old module name: ``math_format``'s names and ``load``.

Kept so that ``from alphallm.datasets import math_dataset`` (the MATH task,
tests) keeps working. New code reads with ``loader.load("math", split, ...)``;
the format itself (layout, validation, errors) is documented in
``math_format``. (Neither module is called ``math``, so that neither shadows
the standard library's ``math``.)
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from alphallm.datasets import loader
from alphallm.datasets.math_format import (ENV_VAR, FIELDS, MAX_FILE_BYTES, MAX_WALK_DEPTH,
                                           NAME, SPLITS, MATHExample, check_record, parse_file,
                                           parse_level, read_record, read_split, source_files,
                                           split_files)


def load(split: str, data_dir: str | os.PathLike | None = None,
         tfds_dir: str | os.PathLike | None = None,
         skip_malformed: bool = False) -> Sequence[MATHExample]:
  """``loader.load("math", split, source_dir=data_dir, ...)``: see there."""
  return loader.load(NAME, split, source_dir=data_dir, tfds_dir=tfds_dir,
                     skip_malformed=skip_malformed)


__all__ = ["ENV_VAR", "FIELDS", "MATHExample", "MAX_FILE_BYTES", "MAX_WALK_DEPTH", "NAME",
           "SPLITS", "check_record", "load", "parse_file", "parse_level", "read_record",
           "read_split", "source_files", "split_files"]
