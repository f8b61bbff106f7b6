"""Metrics to JSONL and TensorBoard event files (no TensorFlow needed).

``MetricWriter(workdir)`` writes scalars to

* ``DIR/metrics.jsonl``: one JSON object per record,
  ``{"tag": "sft_round0", "step": 100, "loss": 0.71, ...}``. The file is
  rewritten atomically (temp + rename) on every ``flush``, so a crash leaves
  the previous complete file. A record with the same ``(tag, step)`` as an
  existing one replaces it, so a resumed run does not duplicate records.
* ``DIR/tensorboard/``: event files through tensorboardX, when installed
  (``tensorboard --logdir DIR/tensorboard``).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from alphallm import io_utils

log = logging.getLogger(__name__)


class MetricWriter:
  """Scalar metrics keyed by ``(tag, step)``."""

  def __init__(self, workdir: str, tensorboard: bool = True, flush_every: int = 20):
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.flush_every = flush_every
    self._records: dict[tuple[str, int], dict[str, Any]] = {}
    self._pending = 0
    if os.path.exists(self.path):
      self._load()
    self._tb = None
    if tensorboard:
      try:
        import tensorboardX  # pylint: disable=import-outside-toplevel
        self._tb = tensorboardX.SummaryWriter(os.path.join(workdir, "tensorboard"))
      except ImportError:
        log.info("tensorboardX is not installed: metrics go to %s only", self.path)

  def _load(self) -> None:
    with open(self.path, encoding="utf-8") as f:
      for lineno, line in enumerate(f, 1):
        if not line.strip():
          continue
        try:
          rec = json.loads(line)
          self._records[(rec["tag"], int(rec["step"]))] = rec
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
          raise ValueError(f"{self.path}:{lineno}: malformed metrics record: {e}") from e

  def write(self, tag: str, step: int, scalars: Mapping[str, Any]) -> None:
    rec = {"tag": tag, "step": int(step)}
    for key, value in scalars.items():
      value = float(np.asarray(value))
      rec[key] = value
      if self._tb is not None:
        self._tb.add_scalar(f"{tag}/{key}", value, int(step))
    self._records[(tag, int(step))] = rec
    self._pending += 1
    if self._pending >= self.flush_every:
      self.flush()

  def records(self, tag: str | None = None) -> list[dict[str, Any]]:
    return [r for r in self._records.values() if tag is None or r["tag"] == tag]

  def flush(self) -> None:
    lines = [json.dumps(r, sort_keys=True) for r in self._records.values()]
    io_utils.atomic_write_text(self.path, "\n".join(lines) + ("\n" if lines else ""))
    if self._tb is not None:
      self._tb.flush()
    self._pending = 0

  def close(self) -> None:
    self.flush()
    if self._tb is not None:
      self._tb.close()
