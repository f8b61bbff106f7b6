"""Verifiable tasks, looked up by name from the config.

A task module registers its class with ``register`` (``alphallm.tasks.registry``);
the built-in tasks are imported here, a user's task file registers itself when
it is loaded (README, "Adding a task").
"""

from alphallm.tasks.base import Problem, Task, make_splits
from alphallm.tasks.registry import REGISTRY as _REGISTRY
from alphallm.tasks.registry import register
from alphallm.tasks import arithmetic, countdown, gsm8k, math_task  # noqa: F401,E402  (register)


def task_class(name: str) -> type[Task]:
  """The class registered as ``name`` (no instance is built)."""
  if name not in _REGISTRY:
    raise ValueError(f"unknown task {name!r}; known tasks: {sorted(_REGISTRY)}")
  return _REGISTRY[name]


def task_names() -> list[str]:
  return sorted(_REGISTRY)


def get_task(name: str, **knobs) -> Task:
  """Builds the task called ``name`` with its difficulty knobs."""
  cls = task_class(name)
  try:
    return cls(**knobs)
  except TypeError as e:
    raise ValueError(f"bad knobs for task {name!r}: {e}") from e


__all__ = ["Problem", "Task", "get_task", "make_splits", "register", "task_class",
           "task_names"]
