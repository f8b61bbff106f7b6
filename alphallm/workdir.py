"""The experiment directory: ownership marker, single-writer lock, bound config.

A workdir holds checkpoints, self-generated data and results. Two runs
writing one workdir would corrupt it, so a run holds an exclusive ``flock``
on the workdir *directory itself* (an fd of the directory, so deleting any
file inside cannot release it) and on ``DIR/.lock`` (which also names the
holder: pid and a random ownership token) for its lifetime. A second run is
refused with a clear error. The locks die with their process (SIGKILL
included), so a crashed run never blocks its own resumption.

``check_owner()`` verifies, before a write, that this run still owns the
workdir: the path still is the directory it locked (not moved or replaced)
and ``.lock`` still names this run. ``open()`` registers it as an
``io_utils`` write guard, so every write of ``io_utils``, the checkpointer,
the metrics writer and the trajectory store below the workdir checks it.

``DIR/.alphallm`` marks a directory as an alphallm workdir. A non-empty
directory without it (a foreign directory, a typo'd path into someone's
data) is refused rather than written into.

Config binding: ``bind_config(config_json)`` records the run's config in
``DIR/config.json`` and its history (every config the workdir ran with, with
its hash) in ``DIR/config_history.json`` when the workdir is created. A
later run with a different config is refused, naming every key that
differs (``config.seed: 0 -> 1``); keys in ``CONTINUABLE_KEYS`` may change
when the caller lists them in ``allow_changes`` (e.g. more rounds), and the
history then keeps both configs.

Recovery: ``recover()`` (holding the lock, before any work) removes the
temporary files interrupted writers left anywhere below the workdir.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import hashlib
import json
import logging
import os
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from alphallm import io_utils
from alphallm import plots

log = logging.getLogger(__name__)

MARKER = ".alphallm"
LOCK = ".lock"
CONFIG = "config.json"
CONFIG_HISTORY = "config_history.json"
FORMAT_VERSION = 1
# Keys a workdir may continue with when changed (``bind_config(allow_changes=...)``):
# they only add work (more rounds, other decoding methods evaluated), never
# change what the existing checkpoints, trajectories and rows were made from.
CONTINUABLE_KEYS = ("loop.rounds", "eval.methods")
_ABSENT = "<absent>"


class WorkdirError(RuntimeError):
  """The workdir cannot be used (foreign, unreadable, in use, or another config)."""


# ---------------------------------------------------------------------------
# Config hashing and differences (pure).


def config_hash(config_json: Mapping[str, Any]) -> str:
  """sha256 of the canonical JSON of a config (sorted keys, compact)."""
  text = json.dumps(config_json, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                    allow_nan=True)
  return hashlib.sha256(text.encode("ascii")).hexdigest()


def flatten(config_json: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  """``{"a.b": leaf}`` of a nested JSON object (lists are leaves)."""
  out: dict[str, Any] = {}
  for key, value in config_json.items():
    name = f"{prefix}{key}"
    if isinstance(value, Mapping) and value:
      out.update(flatten(value, name + "."))
    else:
      out[name] = value
  return out


def config_diff(old: Mapping[str, Any], new: Mapping[str, Any]
                ) -> list[tuple[str, Any, Any]]:
  """``[(dotted key, old value, new value)]`` of the leaves that differ, sorted.

  A key only one side has is given as ``"<absent>"`` on the other.
  """
  a, b = flatten(old), flatten(new)
  return [(k, a.get(k, _ABSENT), b.get(k, _ABSENT)) for k in sorted(set(a) | set(b))
          if a.get(k, _ABSENT) != b.get(k, _ABSENT)]


def _short(value: Any, limit: int = 60) -> str:
  text = _ABSENT if value == _ABSENT else json.dumps(value, sort_keys=True)
  return text if len(text) <= limit else text[:limit - 3] + "..."


def format_diff(diff: Sequence[tuple[str, Any, Any]]) -> str:
  """``config.<key>: <old> -> <new>`` for each difference, ``; ``-separated (one line)."""
  return "; ".join(f"config.{k}: {_short(a)} -> {_short(b)}" for k, a, b in diff)


def _covered(key: str, allowed: Sequence[str]) -> bool:
  return any(key == a or key.startswith(a + ".") for a in allowed)


# ---------------------------------------------------------------------------
# The workdir.


class Workdir:
  """Opens (creating if needed), validates and locks an experiment directory."""

  def __init__(self, path: str):
    self.path = os.path.abspath(path)
    self._lock_file = None
    self._dir_fd: int | None = None
    self._dir_id: tuple[int, int] | None = None
    self.token: str | None = None

  # -- opening and locking ---------------------------------------------------

  def open(self) -> "Workdir":
    if os.path.exists(self.path) and not os.path.isdir(self.path):
      raise WorkdirError(f"workdir {self.path} exists and is not a directory")
    try:
      os.makedirs(self.path, exist_ok=True)
    except OSError as e:
      raise WorkdirError(f"workdir {self.path} cannot be created: "
                         f"{io_utils.describe_os_error(e, self.path)}") from None
    if _read_only(self.path):
      raise WorkdirError(f"workdir {self.path} is on a read-only filesystem "
                         f"(read-only filesystem: {self.path})")
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
    dir_fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
      fcntl.flock(dir_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as e:
      os.close(dir_fd)
      raise self._in_use() from e
    path = os.path.join(self.path, LOCK)
    try:
      f = open(path, "a+", encoding="utf-8")
    except OSError as e:
      os.close(dir_fd)
      raise WorkdirError(f"cannot create the lock file: "
                         f"{io_utils.describe_os_error(e, path)}") from None
    try:
      fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as e:  # an older alphallm holds only the file lock
      f.close()
      os.close(dir_fd)
      raise self._in_use() from e
    self.token = secrets.token_hex(8)
    f.seek(0)
    f.truncate()
    f.write(self._lock_text())
    f.flush()
    os.fsync(f.fileno())
    st = os.fstat(dir_fd)
    self._lock_file, self._dir_fd, self._dir_id = f, dir_fd, (st.st_dev, st.st_ino)
    io_utils.add_write_guard(self.path, self.check_owner)

  def _lock_text(self) -> str:
    return f"{os.getpid()} {self.token}\n"

  def _in_use(self) -> WorkdirError:
    holder = read_lock_holder(self.path) or "unknown"
    return WorkdirError(
        f"workdir {self.path} is in use by another run (pid {holder}); wait for it to "
        "finish or use another --workdir")

  def check_owner(self) -> None:
    """Raises ``WorkdirError`` unless this run still owns the workdir.

    The lock is held on the directory's fd, so it cannot be lost; what can
    change is the path (the directory moved, deleted or replaced: writes by
    path would land elsewhere) and ``.lock`` (rewritten by someone else).
    A deleted ``.lock`` is written again (the lock itself is intact).
    """
    if self._dir_fd is None:
      raise WorkdirError(f"workdir {self.path} is not open (no lock held by this run)")
    try:
      st = os.stat(self.path)
    except OSError:
      st = None
    if st is None or (st.st_dev, st.st_ino) != self._dir_id:
      raise WorkdirError(f"workdir {self.path} was moved, deleted or replaced while this run "
                         "held it; stopping before writing into another directory")
    path = os.path.join(self.path, LOCK)
    try:
      with open(path, encoding="utf-8") as f:
        text = f.read()
    except FileNotFoundError:
      log.warning("%s was deleted while this run holds the workdir; writing it again "
                  "(the lock on the directory itself is still held)", path)
      io_utils.remove_write_guard(self.path)
      try:
        io_utils.atomic_write_text(path, self._lock_text())
      finally:
        io_utils.add_write_guard(self.path, self.check_owner)
      return
    if text.split()[1:2] != [self.token]:
      raise WorkdirError(f"{path} names another owner ({text.strip()[:40]!r}, this run is "
                         f"pid {os.getpid()} token {self.token}); stopping before a write")

  def close(self) -> None:
    io_utils.remove_write_guard(self.path)
    if self._lock_file is not None:
      fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_UN)
      self._lock_file.close()
      self._lock_file = None
    if self._dir_fd is not None:
      fcntl.flock(self._dir_fd, fcntl.LOCK_UN)
      os.close(self._dir_fd)
      self._dir_fd = None

  def __enter__(self) -> "Workdir":
    return self.open()

  def __exit__(self, *exc) -> None:
    self.close()

  # -- config binding ----------------------------------------------------------

  def bind_config(self, config_json: Mapping[str, Any], *,
                  allow_changes: Sequence[str] = (),
                  continuable: Sequence[str] = CONTINUABLE_KEYS) -> dict[str, Any]:
    """Binds the workdir to ``config_json``; returns the history record.

    The first run records the config (``config.json``) and starts the
    history (``config_history.json``: ``{"configs": [{"hash", "config",
    "allowed_changes", "time"}]}``). A later run must have the same config
    (same hash) as the latest entry, except for keys in ``allow_changes``,
    each of which must be among ``continuable``; a differing config then
    becomes a new history entry (both are kept).

    Raises:
      WorkdirError: one line naming each differing key
        (``config.<key>: <old> -> <new>``), or a key of ``allow_changes``
        that may not change.
    """
    self.check_owner()
    config_json = json.loads(json.dumps(config_json))  # plain JSON types, a copy
    bad = [k for k in allow_changes if not _covered(k, continuable)]
    if bad:
      raise WorkdirError(f"allow_changes {sorted(bad)} may not change in a workdir; only "
                         f"{list(continuable)} can")
    history_path = os.path.join(self.path, CONFIG_HISTORY)
    history = self._read_history(history_path)
    digest = config_hash(config_json)
    entry = {"hash": digest, "config": config_json, "allowed_changes": sorted(allow_changes),
             "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    if history["configs"]:
      latest = history["configs"][-1]
      if latest["hash"] == digest:
        return history
      diff = config_diff(latest["config"], config_json)
      refused = [d for d in diff if not _covered(d[0], allow_changes)]
      if refused:
        raise WorkdirError(
            f"workdir {self.path} was run with another config ({CONFIG_HISTORY}): "
            f"{format_diff(refused)}. Use another --workdir, or rerun with the recorded "
            f"config{_continuable_hint(continuable)}")
      log.warning("workdir %s continues with a changed config: %s", self.path,
                  format_diff(diff))
    history["configs"].append(entry)
    io_utils.atomic_write_json(history_path, history)
    io_utils.atomic_write_json(os.path.join(self.path, CONFIG), config_json)
    return history

  def _read_history(self, history_path: str) -> dict[str, Any]:
    """The history file, or one adopting a legacy ``config.json``, or an empty one."""
    if os.path.exists(history_path):
      try:
        history = io_utils.read_json(history_path)
      except (OSError, ValueError) as e:
        raise WorkdirError(f"{history_path} is unreadable: {e}") from None
      configs = history.get("configs") if isinstance(history, dict) else None
      if not isinstance(configs, list) or not all(
          isinstance(c, dict) and isinstance(c.get("config"), dict) and
          c.get("hash") == config_hash(c["config"]) for c in configs):
        raise WorkdirError(f"{history_path}: malformed config history (each entry needs a "
                           "'config' object and its 'hash')")
      return history
    legacy = os.path.join(self.path, CONFIG)
    if os.path.exists(legacy):  # a workdir of an alphallm without config binding
      try:
        config = io_utils.read_json(legacy)
      except (OSError, ValueError) as e:
        raise WorkdirError(f"{legacy} is unreadable: {e}") from None
      if isinstance(config, dict):
        log.warning("workdir %s has %s but no %s: binding it to that config", self.path,
                    CONFIG, CONFIG_HISTORY)
        return {"configs": [{"hash": config_hash(config), "config": config,
                             "allowed_changes": [], "time": None, "adopted": True}]}
    return {"configs": []}

  # -- recovery ----------------------------------------------------------------

  def recover(self, rebuild: bool = True) -> dict[str, list[str]]:
    """Repairs what a kill can leave behind; returns ``{"removed": [...], "rebuilt": [...]}``.

    Call it holding the lock, before any work (no write is in progress).

    * removes the temporary files of interrupted writes anywhere below the
      workdir (``io_utils.TEMP_RE`` names, ``.<name>.<random>.tmp``: atomic
      writes, trajectory shards, checksum records; orbax's temporary step
      directories are orbax's to clean);
    * with ``rebuild``, regenerates ``results.md`` and the plots from
      ``results.json`` (``plots.rebuild_side_files``) when they lag it.
    """
    self.check_owner()
    removed = io_utils.cleanup_temp_files(self.path)
    for path in removed:
      log.warning("removed %s (left by an interrupted write)", path)
    rebuilt: list[str] = []
    if rebuild:
      rebuilt = plots.rebuild_side_files(self.path)
      for path in rebuilt:
        log.info("rebuilt %s from results.json", path)
    return {"removed": removed, "rebuilt": rebuilt}


# ---------------------------------------------------------------------------
# Phase records: a phase is done only when all its outputs are.

PHASES_DIR = "phases"


def phase_record_path(workdir: str, phase: str) -> str:
  """``DIR/phases/<phase>.json`` (``phase`` may contain ``/``, e.g. ``round1/imagine``)."""
  if not phase or phase.startswith("/") or ".." in phase.split("/"):
    raise ValueError(f"bad phase name {phase!r}")
  return os.path.join(workdir, PHASES_DIR, *phase.split("/")) + ".json"


def _file_entries(workdir: str, paths: Sequence[str]) -> dict[str, str]:
  out = {}
  for p in paths:
    path = os.path.join(workdir, p)
    if not os.path.isfile(path):
      raise FileNotFoundError(f"{path}: a phase output/input to record does not exist")
    out[os.path.relpath(path, workdir).replace(os.sep, "/")] = io_utils.file_sha256(path)
  return out


def mark_phase_done(workdir: str, phase: str, outputs: Sequence[str],
                    inputs: Sequence[str] = (), **extra: Any) -> dict[str, Any]:
  """Records that ``phase`` finished: the sha256 of each output (and input) file.

  Call it after the last output is written; paths are absolute or relative
  to ``workdir``. Until then (e.g. a kill between ``prompts.jsonl`` and
  ``imagination.json``) ``phase_done`` is False and the phase is redone.
  """
  record = {"phase": phase, "outputs": _file_entries(workdir, outputs),
            "inputs": _file_entries(workdir, inputs), **extra}
  io_utils.atomic_write_json(phase_record_path(workdir, phase), record)
  return record


def phase_done(workdir: str, phase: str) -> bool:
  """Whether ``phase`` was recorded done and every output is present and unchanged.

  An output that is missing or changed is logged (one line naming it) and
  the phase counts as not done, to be redone.
  """
  path = phase_record_path(workdir, phase)
  if not os.path.exists(path):
    return False
  try:
    record = io_utils.read_json(path)
    outputs = record["outputs"]
  except (OSError, ValueError, KeyError, TypeError) as e:
    log.warning("%s is unreadable (%s): phase %s is redone", path, e, phase)
    return False
  for rel, digest in sorted(outputs.items()):
    out = os.path.join(workdir, rel)
    if not os.path.isfile(out) or io_utils.file_sha256(out) != digest:
      state = "missing" if not os.path.isfile(out) else "changed"
      log.warning("phase %s: output %s is %s; redoing the phase", phase, out, state)
      return False
  return True


def verify_phase_inputs(workdir: str, phase: str) -> None:
  """Raises ``WorkdirError`` naming the first recorded input of ``phase`` missing or changed."""
  path = phase_record_path(workdir, phase)
  record = io_utils.read_json(path)
  for rel, digest in sorted(record.get("inputs", {}).items()):
    inp = os.path.join(workdir, rel)
    if not os.path.isfile(inp):
      raise WorkdirError(f"{path}: input {inp} of phase {phase} is missing")
    if io_utils.file_sha256(inp) != digest:
      raise WorkdirError(f"{path}: input {inp} of phase {phase} changed since the phase ran")


def _continuable_hint(continuable: Sequence[str]) -> str:
  if not continuable:
    return ""
  return f" (to continue with a change of {', '.join(continuable)}, allow it explicitly)"


def _read_only(path: str) -> bool:
  try:
    return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
  except OSError as e:
    return e.errno == errno.EROFS


def read_lock_holder(path: str) -> str | None:
  """The pid named in ``DIR/.lock``, or None."""
  try:
    with open(os.path.join(path, LOCK), encoding="utf-8") as f:
      parts = f.read().split()
  except OSError:
    return None
  return parts[0] if parts else None
