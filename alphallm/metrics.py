"""Metrics to JSONL and TensorBoard event files (no TensorFlow needed).

``MetricWriter(workdir)`` writes scalars to

* ``DIR/metrics.jsonl``: one JSON object per record,
  ``{"tag": "sft_round0", "step": 100, "loss": 0.71, ...}``. Records are
  *appended* (``O_APPEND``, one write per flush, fsynced), never rewritten,
  so nothing another write put there is lost. A record with the same
  ``(tag, step)`` as an existing one replaces it: an identical one (a
  resumed run redoing a step bit for bit) is not written again; a different
  one is, and the file is then compacted (atomically rewritten, one record
  per key) at that flush, the only case that rewrites it. On reading, the
  last record of a key wins.
  A kill mid-append leaves at most a torn last line (no newline, not JSON):
  the next ``MetricWriter`` cuts it off with a warning. Any other malformed
  line is an error naming ``metrics.jsonl:<line>``.
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


def _key(rec: Mapping[str, Any]) -> tuple[str, int]:
  return rec["tag"], int(rec["step"])


def parse_lines(path: str, text: str) -> tuple[list[dict[str, Any]], int | None]:
  """The records of a metrics file's ``text`` and the byte offset of a torn last line.

  Returns:
    ``(records, torn)``: every record in file order, and the offset where a
    torn last line (no final newline, not a JSON record) starts, or None.

  Raises:
    ValueError: ``path:<line>: malformed metrics record`` for any other bad line.
  """
  records: list[dict[str, Any]] = []
  lines = text.split("\n")
  offset = 0
  for lineno, line in enumerate(lines, 1):
    last = lineno == len(lines)
    start, offset = offset, offset + len(line.encode("utf-8")) + 1
    if not line.strip():
      continue
    try:
      rec = json.loads(line)
      _key(rec)
      if not isinstance(rec["tag"], str):
        raise TypeError(f"tag must be a string, got {rec['tag']!r}")
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
      if last:  # no newline after it: the write of this line was cut short
        return records, start
      raise ValueError(f"{path}:{lineno}: malformed metrics record: {e}") from e
    records.append(rec)
  return records, None


class MetricWriter:
  """Scalar metrics keyed by ``(tag, step)``."""

  def __init__(self, workdir: str, tensorboard: bool = True, flush_every: int = 20):
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.flush_every = flush_every
    self._records: dict[tuple[str, int], dict[str, Any]] = {}
    self._pending: list[dict[str, Any]] = []
    self._compact = False  # a record on disk was replaced by a different one
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
    with open(self.path, "rb") as f:
      raw = f.read()
    try:
      text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
      # Only a torn multi-byte character at the very end is a cut write.
      text = raw[:e.start].decode("utf-8") if raw.find(b"\n", e.start) < 0 else None
      if text is None:
        line = raw.count(b"\n", 0, e.start) + 1
        raise ValueError(f"{self.path}:{line}: malformed metrics record: not UTF-8") from e
    records, torn = parse_lines(self.path, text)
    if torn is not None:
      log.warning("%s: cutting off a torn last line at byte %d (a write interrupted by a "
                  "crash): %r", self.path, torn, text[torn:][:80])
      io_utils.check_write(self.path)
      os.truncate(self.path, torn)
    elif raw and not raw.endswith(b"\n"):
      io_utils.append_lines(self.path, [""])  # a complete last line without its newline
    seen = 0
    for rec in records:
      seen += 1
      self._records[_key(rec)] = rec
    if seen != len(self._records):  # duplicate keys: compact at the next flush
      self._compact = True

  def write(self, tag: str, step: int, scalars: Mapping[str, Any]) -> None:
    rec = {"tag": tag, "step": int(step)}
    for key, value in scalars.items():
      value = float(np.asarray(value))
      rec[key] = value
      if self._tb is not None:
        self._tb.add_scalar(f"{tag}/{key}", value, int(step))
    key = (tag, int(step))
    old = self._records.get(key)
    if old == rec:
      return  # already recorded, e.g. a resumed run redoing a step identically
    if old is not None:
      self._compact = True
    self._records[key] = rec
    self._pending.append(rec)
    if len(self._pending) >= self.flush_every:
      self.flush()

  def records(self, tag: str | None = None) -> list[dict[str, Any]]:
    return [r for r in self._records.values() if tag is None or r["tag"] == tag]

  def flush(self) -> None:
    """Appends the pending records (or compacts the file after a replacement)."""
    if self._compact:
      lines = [json.dumps(r, sort_keys=True) for r in self._records.values()]
      io_utils.atomic_write_text(self.path, "".join(line + "\n" for line in lines))
      self._compact = False
    elif self._pending:
      io_utils.append_lines(self.path, [json.dumps(r, sort_keys=True) for r in self._pending])
    self._pending = []
    if self._tb is not None:
      self._tb.flush()

  def close(self) -> None:
    self.flush()
    if self._tb is not None:
      self._tb.close()
