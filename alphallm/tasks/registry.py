"""The task registry: ``register`` makes a task available as ``config.task.name``."""

from __future__ import annotations

from alphallm.tasks.base import Task

REGISTRY: dict[str, type[Task]] = {}


def register(cls: type[Task]) -> type[Task]:
  """Class decorator: make a task available as ``config.task.name``."""
  REGISTRY[cls.name] = cls
  return cls
