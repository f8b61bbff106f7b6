"""Verifiable tasks, looked up by name from the config."""

from alphallm.tasks.base import Problem, Task, make_splits

_REGISTRY: dict[str, type[Task]] = {}


def register(cls: type[Task]) -> type[Task]:
  """Class decorator: make a task available as ``config.task.name``."""
  _REGISTRY[cls.name] = cls
  return cls


def get_task(name: str, **knobs) -> Task:
  """Builds the task called ``name`` with its difficulty knobs."""
  _import_builtin()
  if name not in _REGISTRY:
    raise ValueError(f"unknown task {name!r}; known tasks: {sorted(_REGISTRY)}")
  try:
    return _REGISTRY[name](**knobs)
  except TypeError as e:
    raise ValueError(f"bad knobs for task {name!r}: {e}") from e


def _import_builtin():
  # Imported lazily so that a task module may import this package.
  from alphallm.tasks import arithmetic, countdown, gsm8k, math_task  # noqa: F401


__all__ = ["Problem", "Task", "get_task", "make_splits", "register", "task_class", "task_names"]


def task_class(name: str) -> type[Task]:
  """The class registered as ``name`` (no instance is built)."""
  _import_builtin()
  if name not in _REGISTRY:
    raise ValueError(f"unknown task {name!r}; known tasks: {sorted(_REGISTRY)}")
  return _REGISTRY[name]


def task_names() -> list[str]:
  _import_builtin()
  return sorted(_REGISTRY)
