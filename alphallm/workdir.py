"""The experiment directory: ownership marker and single-writer lock.

A workdir holds checkpoints, self-generated data and results. Two runs
writing one workdir would corrupt it, so a run holds an exclusive ``flock``
on ``DIR/.lock`` for its lifetime and a second run is refused with a clear
error. The lock dies with its process (SIGKILL included), so a crashed run
never blocks its own resumption.

``DIR/.alphallm`` marks a directory as an alphallm workdir. A non-empty
directory without it (a foreign directory, a typo'd path into someone's
data) is refused rather than written into.
"""

from __future__ import annotations

import fcntl
import json
import os

from alphallm import io_utils

MARKER = ".alphallm"
LOCK = ".lock"
FORMAT_VERSION = 1


class WorkdirError(RuntimeError):
  """The workdir cannot be used (foreign, unreadable, or in use)."""


class Workdir:
  """Opens (creating if needed), validates and locks an experiment directory."""

  def __init__(self, path: str):
    self.path = os.path.abspath(path)
    self._lock_file = None

  def open(self) -> "Workdir":
    if os.path.exists(self.path) and not os.path.isdir(self.path):
      raise WorkdirError(f"workdir {self.path} exists and is not a directory")
    os.makedirs(self.path, exist_ok=True)
    if not os.access(self.path, os.R_OK | os.W_OK | os.X_OK):
      raise WorkdirError(f"workdir {self.path} is not readable and writable by this user")
    marker = os.path.join(self.path, MARKER)
    entries = [e for e in os.listdir(self.path) if e not in (MARKER, LOCK)]
    if os.path.exists(marker):
      try:
        info = io_utils.read_json(marker)
      except (OSError, ValueError) as e:
        raise WorkdirError(f"workdir marker {marker} is unreadable: {e}") from e
      if not isinstance(info, dict) or info.get("format") != FORMAT_VERSION:
        raise WorkdirError(f"workdir {self.path} has an unsupported marker {info!r}; "
                           f"this alphallm writes format {FORMAT_VERSION}")
    elif entries:
      raise WorkdirError(
          f"workdir {self.path} is not empty and is not an alphallm workdir (no {MARKER}); "
          f"refusing to write into it. Found e.g. {sorted(entries)[:5]}")
    self._acquire_lock()
    if not os.path.exists(marker):
      io_utils.atomic_write_text(marker, json.dumps({"format": FORMAT_VERSION}) + "\n")
    return self

  def _acquire_lock(self) -> None:
    path = os.path.join(self.path, LOCK)
    f = open(path, "a+", encoding="utf-8")
    try:
      fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as e:
      f.seek(0)
      holder = f.read().strip() or "unknown"
      f.close()
      raise WorkdirError(
          f"workdir {self.path} is in use by another run (pid {holder}); wait for it to "
          "finish or use another --workdir") from e
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    self._lock_file = f

  def close(self) -> None:
    if self._lock_file is not None:
      fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_UN)
      self._lock_file.close()
      self._lock_file = None

  def __enter__(self) -> "Workdir":
    return self.open()

  def __exit__(self, *exc) -> None:
    self.close()
