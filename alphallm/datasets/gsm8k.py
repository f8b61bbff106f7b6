"""GSM8K under its old module name: ``gsm8k_format``'s names and ``load``.

Kept so that ``from alphallm.datasets import gsm8k`` (the GSM8K task, tests)
keeps working. New code reads with ``loader.load("gsm8k", split, ...)``; the
format itself (layout, validation, errors) is documented in ``gsm8k_format``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from alphallm.datasets import loader
from alphallm.datasets.gsm8k_format import (ENV_VAR, FIELDS, MAX_LINE_BYTES, NAME, SPLITS,
                                            GSM8KExample, check_line_size, check_record,
                                            decode_line, parse_line, read_split,
                                            source_files, split_path, strip_annotations)


def load(split: str, data_dir: str | os.PathLike | None = None,
         tfds_dir: str | os.PathLike | None = None,
         skip_malformed: bool = False) -> Sequence[GSM8KExample]:
  """``loader.load("gsm8k", split, source_dir=data_dir, ...)``: see there."""
  return loader.load(NAME, split, source_dir=data_dir, tfds_dir=tfds_dir,
                     skip_malformed=skip_malformed)


__all__ = ["ENV_VAR", "FIELDS", "GSM8KExample", "MAX_LINE_BYTES", "NAME", "SPLITS",
           "check_line_size", "check_record", "decode_line", "load", "parse_line", "read_split", "source_files",
           "split_path", "strip_annotations"]
