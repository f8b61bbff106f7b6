"""Real reasoning datasets (GSM8K, MATH), read from local files, never downloaded.

Modules, each importing only those above it (no import circle)::

  base            errors, source directories, bounded JSON (re-exported here)
  gsm8k_format    GSM8K's source format: read and validate train/test.jsonl
  math_format     MATH's source format: read and validate the JSON tree
  tfds_builders   TFDS builders over the format modules (array_record, no TensorFlow)
  loader          load(name, split, *, source_dir, tfds_dir): the one entry point
  gsm8k, math_dataset   the old module names: format names + load(split, data_dir, ...)
  sources         the files users download (JSONL, JSON tree, Parquet), found and read
  prepare         python -m alphallm.datasets.prepare: those files -> the loader's layout

Where to get the data and how to lay it out: docs/data.md.

This package imports only ``base``, so ``from alphallm import datasets`` stays
cheap and any module here may import it.
"""

from __future__ import annotations

from alphallm.datasets.base import (SHARED_DATA_DIR, DatasetError, EmptySplitError,
                                    MalformedRecordError, check_not_empty, default_source_dir,
                                    handle_malformed, log_skipped, resolve_source_dir)

__all__ = ["DatasetError", "EmptySplitError", "MalformedRecordError", "SHARED_DATA_DIR",
           "check_not_empty", "default_source_dir", "handle_malformed", "log_skipped",
           "resolve_source_dir"]
