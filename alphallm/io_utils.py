"""Crash-safe file writes: write a temporary file, fsync, then rename.

A reader (or a resumed run) sees either the old file or the new one, never
a partial write.

Temporary files are named ``.<name>.<random>.tmp`` in the destination's
directory (``tempfile.mkstemp``; ``TEMP_RE``); ``cleanup_temp_files`` removes
the ones an interrupted writer left behind.

Errors are one line naming the path and the cause: a lone surrogate in the
text ("<path>:<line>:<col>: ..."), a read-only filesystem
("read-only filesystem: <path>") and a full disk
("no space left on device: <path>") are ``WriteError`` (an ``OSError`` with
the original ``errno``).

Write guards: ``add_write_guard(directory, check)`` makes every write through
this module (and through ``check_write``, which the checkpoint, metrics and
trajectory writers call) below ``directory`` call ``check()`` first, e.g.
``alphallm.workdir.Workdir.check_owner``.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable
from typing import Any

# ``tempfile.mkstemp(prefix=".NAME.", suffix=".tmp")``: ``.NAME.<random>.tmp``.
TEMP_RE = re.compile(r"\..+\.[A-Za-z0-9_]{1,64}\.tmp", re.DOTALL)

_GUARDS: dict[str, Callable[[], None]] = {}


class WriteError(OSError):
  """A write failed for a reason worth one line (read-only, full disk, bad text).

  ``WriteError(errno, message)``; ``str()`` is the message alone.
  """

  def __str__(self) -> str:
    return str(self.strerror) if self.strerror else super().__str__()


def file_sha256(path: str) -> str:
  """sha256 (hex) of a file's bytes, read in 4 MiB chunks."""
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 22), b""):
      h.update(chunk)
  return h.hexdigest()


def describe_os_error(e: OSError, path: str) -> str:
  """One line naming ``path`` and the cause of ``e``."""
  if e.errno == errno.EROFS:
    return f"read-only filesystem: {path}"
  if e.errno == errno.ENOSPC:
    return f"no space left on device: {path}"
  if e.errno == errno.EDQUOT:
    return f"disk quota exceeded: {path}"
  if e.errno in (errno.EACCES, errno.EPERM):
    return f"permission denied: {path}"
  return f"cannot write {path}: {e.strerror or e}"


def translate_os_error(e: OSError, path: str) -> OSError:
  """``e`` as a one-line ``WriteError`` for the causes ``describe_os_error`` names."""
  if isinstance(e, WriteError):
    return e
  if e.errno in (errno.EROFS, errno.ENOSPC, errno.EDQUOT):
    return WriteError(e.errno, describe_os_error(e, path))
  return e


def find_surrogate(text: str) -> tuple[int, int, str] | None:
  """``(line, column, char)`` (1-based) of the first lone surrogate in ``text``, or None."""
  for i, ch in enumerate(text):
    if "\ud800" <= ch <= "\udfff":
      line = text.count("\n", 0, i) + 1
      col = i - (text.rfind("\n", 0, i) + 1) + 1
      return line, col, ch
  return None


def check_text(text: str, where: str, first_line: int = 1) -> str:
  """``text`` if it encodes as UTF-8; else ``ValueError`` naming ``where:line:col``.

  Lone surrogates (``"\\ud800"``, e.g. from ``json.loads`` of an escaped
  surrogate in a dataset file) cannot be written as UTF-8; call this where
  untrusted text enters, so the error names its source rather than a later
  write. ``first_line``: the source line ``text`` starts on (e.g. the JSONL
  line a question came from).
  """
  try:
    text.encode("utf-8")
  except UnicodeEncodeError:
    line, col, ch = find_surrogate(text) or (1, 0, "?")
    raise ValueError(f"{where}:{first_line + line - 1}:{col}: lone surrogate "
                     f"U+{ord(ch):04X} in the text (not encodable as UTF-8)") from None
  return text


def add_write_guard(directory: str, check: Callable[[], None]) -> None:
  """Calls ``check()`` before every guarded write below ``directory``."""
  _GUARDS[os.path.abspath(directory)] = check


def remove_write_guard(directory: str) -> None:
  _GUARDS.pop(os.path.abspath(directory), None)


def check_write(path: str) -> None:
  """Runs the write guards of the directories that contain ``path``."""
  if not _GUARDS:
    return
  path = os.path.abspath(path)
  for directory, check in list(_GUARDS.items()):
    if path == directory or path.startswith(directory + os.sep):
      check()


def atomic_write_bytes(path: str, data: bytes) -> None:
  """Writes ``data`` to ``path`` atomically (temp file, fsync, rename, fsync dir)."""
  check_write(path)
  directory = os.path.dirname(os.path.abspath(path))
  try:
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp",
                               dir=directory)
  except OSError as e:
    raise translate_os_error(e, path) from None
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except OSError as e:
    _unlink_quietly(tmp)
    raise translate_os_error(e, path) from None
  except BaseException:
    _unlink_quietly(tmp)
    raise
  fsync_dir(directory)


def _unlink_quietly(path: str) -> None:
  try:
    if os.path.exists(path):
      os.unlink(path)
  except OSError:
    pass


def fsync_dir(directory: str) -> None:
  """fsyncs a directory (its renames); filesystems that cannot are ignored."""
  try:
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
  except OSError:
    return
  try:
    os.fsync(fd)
  except OSError:
    pass
  finally:
    os.close(fd)


def encode_text(path: str, text: str) -> bytes:
  """``text`` as UTF-8; a lone surrogate is a ``WriteError`` naming ``path:line:col``."""
  try:
    return text.encode("utf-8")
  except UnicodeEncodeError:
    try:
      check_text(text, path)
    except ValueError as e:
      raise WriteError(errno.EINVAL, str(e)) from None
    raise


def atomic_write_text(path: str, text: str) -> None:
  atomic_write_bytes(path, encode_text(path, text))


def atomic_write_json(path: str, obj: Any) -> None:
  atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def append_line(path: str, line: str) -> None:
  """Appends ``line`` (one line, no newline in it) and ``"\\n"``; flushed and fsynced.

  ``O_APPEND`` writes of one buffer: records of a kill mid-write are at
  worst one torn last line, never interleaved or lost earlier lines.
  """
  if "\n" in line:
    raise ValueError(f"{path}: an appended record must be one line")
  append_lines(path, [line])


def append_lines(path: str, lines: list[str]) -> None:
  """Appends ``lines`` (each without newline) in one ``O_APPEND`` write, fsynced."""
  if not lines:
    return
  check_write(path)
  data = encode_text(path, "".join(line + "\n" for line in lines))
  try:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
  except OSError as e:
    raise translate_os_error(e, path) from None
  size = os.fstat(fd).st_size
  try:
    view = memoryview(data)
    while view:
      n = os.write(fd, view)
      view = view[n:]
    os.fsync(fd)
  except OSError as e:
    try:  # no torn line left behind by a failed write
      os.ftruncate(fd, size)
    except OSError:
      pass
    raise translate_os_error(e, path) from None
  finally:
    os.close(fd)


def read_json(path: str) -> Any:
  """Reads JSON, naming the file (and line/column) when it is malformed."""
  with open(path, encoding="utf-8") as f:
    text = f.read()
  try:
    return json.loads(text)
  except json.JSONDecodeError as e:
    raise ValueError(f"{path}:{e.lineno}:{e.colno}: malformed JSON: {e.msg}") from e


def is_temp_name(name: str) -> bool:
  """Whether ``name`` is a temporary file name of ``atomic_write_bytes`` / ``write_shard``."""
  return TEMP_RE.fullmatch(name) is not None


def cleanup_temp_files(root: str) -> list[str]:
  """Removes every temporary file (``is_temp_name``) below ``root``; returns their paths.

  Only regular files are removed (orbax's temporary step directories are
  orbax's to clean). Call it only when no write below ``root`` is in
  progress (e.g. holding the workdir lock, before any work).
  """
  removed = []
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames.sort()
    for name in sorted(filenames):
      path = os.path.join(dirpath, name)
      if is_temp_name(name) and os.path.isfile(path) and not os.path.islink(path):
        os.unlink(path)
        removed.append(path)
  return removed
