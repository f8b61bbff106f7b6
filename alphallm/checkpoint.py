"""Orbax checkpoints of the training state, with the current ``args`` API.

A checkpoint holds the ``TrainState`` pytree (parameters, optimizer state,
step and RNG key data) and a small JSON ``meta`` record (e.g. the round and
phase of the self-improvement loop). Orbax writes each step to a temporary
directory and renames it when complete, so a crash mid-write never leaves a
half-written step that looks finished.

Integrity. Orbax's array files carry no checksum: a same-size byte flip is
restored silently. So once orbax has finished a step, the sha256 of every
file in the step directory is recorded in ``STEP/alphallm_sha256.json``
(written atomically, last). A step is *verified* when that record exists
and every file matches it; ``restore`` refuses any other step
(``CheckpointIntegrityError`` naming the file), and ``latest_step`` and
``restore_latest`` only consider verified steps, falling back to the newest
one that verifies with one logged line naming the bad step directory. A
step killed after orbax's commit and before its record is unverified too,
and is redone.

Finite state only: ``save`` refuses a state with a NaN or Inf in any
floating leaf (``NonFiniteStateError`` naming the first such leaf's path),
so a diverged run can never be resumed from its diverged state.

Write failures inside orbax (no space left, read-only filesystem) are one
``CheckpointWriteError`` line naming the step directory and the cause.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from alphallm import io_utils

log = logging.getLogger(__name__)

INTEGRITY_FILE = "alphallm_sha256.json"
INTEGRITY_FORMAT = 1


class CheckpointIntegrityError(ValueError):
  """A checkpoint step's files do not match their recorded checksums (or have none)."""


class NonFiniteStateError(FloatingPointError):
  """A state to be saved has a NaN or Inf."""


class CheckpointWriteError(io_utils.WriteError):
  """Orbax could not write a step (no space, read-only filesystem, ...)."""


# ---------------------------------------------------------------------------
# Checksums and finiteness (pure helpers).


file_sha256 = io_utils.file_sha256


def step_files(step_dir: str) -> list[str]:
  """Relative paths (``/``-separated, sorted) of the files a step's checksum covers."""
  out = []
  for dirpath, dirnames, filenames in os.walk(step_dir):
    dirnames.sort()
    for name in filenames:
      rel = os.path.relpath(os.path.join(dirpath, name), step_dir).replace(os.sep, "/")
      if rel != INTEGRITY_FILE and not io_utils.is_temp_name(name):
        out.append(rel)
  return sorted(out)


def step_checksums(step_dir: str) -> dict[str, str]:
  """``{relative path: sha256}`` of every file of a step directory."""
  return {rel: file_sha256(os.path.join(step_dir, rel)) for rel in step_files(step_dir)}


def verify_step_dir(step_dir: str) -> str | None:
  """Why ``step_dir`` does not match its checksum record, or None when it does."""
  record_path = os.path.join(step_dir, INTEGRITY_FILE)
  if not os.path.exists(record_path):
    return (f"no checksum record {INTEGRITY_FILE} (killed before it was written, or written "
            "by an alphallm without checksums)")
  try:
    record = io_utils.read_json(record_path)
  except (OSError, ValueError) as e:
    return f"unreadable checksum record: {e}"
  files = record.get("files") if isinstance(record, dict) else None
  if not isinstance(files, dict):
    return f"malformed checksum record {record_path}"
  present = set(step_files(step_dir))
  for rel in sorted(set(files) - present):
    return f"file {rel} is missing"
  for rel in sorted(present - set(files)):
    return f"file {rel} is not in the checksum record"
  for rel in sorted(files):
    got = file_sha256(os.path.join(step_dir, rel))
    if got != files[rel]:
      return f"checksum mismatch in {rel} (sha256 {got[:12]}..., recorded {files[rel][:12]}...)"
  return None


def first_non_finite(tree: Any) -> tuple[str, int] | None:
  """``(leaf path, count)`` of the first floating leaf of ``tree`` with a NaN/Inf, or None.

  One reduction per leaf on its device (sharded arrays are never gathered).
  """
  leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
  counts = []
  for path, leaf in leaves:
    dtype = getattr(leaf, "dtype", None)
    if dtype is not None and jnp.issubdtype(dtype, jnp.inexact):
      counts.append((path, jnp.sum(~jnp.isfinite(leaf))))
  for path, count in zip([p for p, _ in counts], jax.device_get([c for _, c in counts])):
    if int(count):
      return jax.tree_util.keystr(path), int(count)
  return None


def _os_error_in(e: BaseException) -> OSError | None:
  """The first ``OSError`` with an errno in ``e``'s cause/context chain or group."""
  seen = set()
  stack = [e]
  while stack:
    x = stack.pop()
    if x is None or id(x) in seen:
      continue
    seen.add(id(x))
    if isinstance(x, OSError) and x.errno is not None:
      return x
    stack.extend(getattr(x, "exceptions", ()) or ())
    stack.extend([x.__cause__, x.__context__])
  text = str(e)
  for code, name in ((errno.ENOSPC, "No space left on device"),
                     (errno.EROFS, "Read-only file system")):
    if name in text:  # tensorstore reports C++ errors as ValueError text
      return OSError(code, name)
  return None


@contextlib.contextmanager
def _quiet_orbax():
  """Orbax logs every failed file write with a traceback; one line is enough."""
  loggers = [logging.getLogger(n) for n in ("orbax", "absl", "jax._src.distributed")]
  levels = [lg.level for lg in loggers]
  for lg in loggers:
    lg.setLevel(logging.CRITICAL)
  try:
    yield
  finally:
    for lg, level in zip(loggers, levels):
      lg.setLevel(level)


class Checkpointer:
  """Thin wrapper over ``ocp.CheckpointManager`` for ``(state, meta)`` pairs."""

  def __init__(self, directory: str, max_to_keep: int = 3, async_save: bool = False):
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=True, enable_async_checkpointing=async_save)
    try:
      self._manager = ocp.CheckpointManager(self.directory, options=options)
    except OSError as e:
      raise CheckpointWriteError(e.errno, io_utils.describe_os_error(e, self.directory)) from None
    self._verified: dict[int, str | None] = {}

  def step_dir(self, step: int) -> str:
    return os.path.join(self.directory, str(int(step)))

  def all_steps(self) -> list[int]:
    """Every committed step, verified or not, ascending."""
    return sorted(self._manager.all_steps())

  def verify(self, step: int) -> str | None:
    """Why ``step`` fails verification (see the module doc), or None if it verifies."""
    if step not in self._verified:
      self._verified[step] = verify_step_dir(self.step_dir(step))
    return self._verified[step]

  def verified_steps(self) -> list[int]:
    return [s for s in self.all_steps() if self.verify(s) is None]

  def latest_step(self) -> int | None:
    """The newest *verified* step, or None."""
    for step in reversed(self.all_steps()):
      if self.verify(step) is None:
        return step
    return None

  def save(self, step: int, state: Any, meta: dict[str, Any] | None = None) -> None:
    """Saves ``state`` (any pytree of arrays) and ``meta`` at ``step``, blocking.

    A step that already exists (an unreadable one that ``restore_latest``
    skipped, now being redone) is replaced.

    Raises:
      NonFiniteStateError: a floating leaf of ``state`` has a NaN/Inf
        (nothing is written).
      CheckpointWriteError: orbax could not write (one line, the path and cause).
    """
    bad = first_non_finite(state)
    if bad is not None:
      raise NonFiniteStateError(
          f"refusing to save checkpoint step {step} in {self.directory}: state{bad[0]} has "
          f"{bad[1]} non-finite value(s) (NaN/Inf); the last good checkpoint is kept")
    io_utils.check_write(self.directory)
    step_dir = self.step_dir(step)
    try:
      with _quiet_orbax():
        if step in self._manager.all_steps():
          log.warning("replacing existing checkpoint step %d in %s", step, self.directory)
          self._manager.delete(step)
        self._manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta or {})), force=True)
        self._manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except (orbax raises many types)
      os_error = _os_error_in(e)
      if os_error is None:
        raise
      raise CheckpointWriteError(
          os_error.errno, f"checkpoint step {step} not saved: "
          f"{io_utils.describe_os_error(os_error, step_dir)}") from None
    io_utils.atomic_write_json(os.path.join(step_dir, INTEGRITY_FILE), {
        "format": INTEGRITY_FORMAT, "step": int(step), "files": step_checksums(step_dir)})
    self._verified[step] = None

  def restore(self, step: int, template: Any) -> tuple[Any, dict[str, Any]]:
    """Restores verified ``step`` into the structure, shapes and shardings of ``template``.

    Raises:
      CheckpointIntegrityError: the step's files do not match their checksums.
    """
    problem = self.verify(step)
    if problem is not None:
      raise CheckpointIntegrityError(f"{self.step_dir(step)}: {problem}")
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
    return restored["state"], dict(restored["meta"] or {})

  def restore_latest(self, template: Any) -> tuple[int, Any, dict[str, Any]] | None:
    """The newest verified, readable checkpoint as ``(step, state, meta)``, or None if none.

    A step that fails verification or restore (corrupt, partial or
    unrecorded files, a state of another shape) is reported in one line
    naming its directory, and skipped in favour of the one before it.
    """
    for step in reversed(self.all_steps()):
      try:
        with _quiet_orbax():
          state, meta = self.restore(step, template)
        bad = first_non_finite(state)
        if bad is not None:
          raise NonFiniteStateError(f"state{bad[0]} has {bad[1]} non-finite value(s)")
        return step, state, meta
      except Exception as e:  # orbax raises many types for damaged files.
        detail = str(e).splitlines()[0][:300] if str(e) else ""
        log.warning("checkpoint step %d in %s is unreadable (%s: %s); falling back to the "
                    "previous one", step, self.directory, type(e).__name__, detail)
    return None

  def close(self) -> None:
    self._manager.close()

