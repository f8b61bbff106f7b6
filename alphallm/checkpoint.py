"""Orbax checkpoints of the training state, with the current ``args`` API.

A checkpoint holds the ``TrainState`` pytree (parameters, optimizer state,
step and RNG key data) and a small JSON ``meta`` record (e.g. the round and
phase of the self-improvement loop). Orbax writes each step to a temporary
directory and renames it when complete, so a crash mid-write never leaves a
half-written step that looks finished.

``restore_latest`` falls back to the previous good step, with a logged
message, when the newest one cannot be read.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import jax
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)


class Checkpointer:
  """Thin wrapper over ``ocp.CheckpointManager`` for ``(state, meta)`` pairs."""

  def __init__(self, directory: str, max_to_keep: int = 3, async_save: bool = False):
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=True, enable_async_checkpointing=async_save)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: Any, meta: dict[str, Any] | None = None) -> None:
    """Saves ``state`` (any pytree of arrays) and ``meta`` at ``step``, blocking.

    A step that already exists (an unreadable one that ``restore_latest``
    skipped, now being redone) is replaced.
    """
    if step in self._manager.all_steps():
      log.warning("replacing existing checkpoint step %d in %s", step, self.directory)
      self._manager.delete(step)
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta or {})), force=True)
    self._manager.wait_until_finished()

  def restore(self, step: int, template: Any) -> tuple[Any, dict[str, Any]]:
    """Restores ``step`` into the structure, shapes and shardings of ``template``."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
    return restored["state"], dict(restored["meta"] or {})

  def restore_latest(self, template: Any) -> tuple[int, Any, dict[str, Any]] | None:
    """The newest readable checkpoint as ``(step, state, meta)``, or None if none.

    A step that fails to restore (corrupt or partial files) is reported and
    skipped in favour of the one before it.
    """
    for step in reversed(self.all_steps()):
      try:
        state, meta = self.restore(step, template)
        return step, state, meta
      except Exception as e:  # orbax raises many types for damaged files.
        log.warning("checkpoint step %d in %s is unreadable (%s: %s); falling back to the "
                    "previous one", step, self.directory, type(e).__name__, str(e)[:300])
    return None

  def close(self) -> None:
    self._manager.close()
