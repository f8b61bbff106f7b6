"""Timing and reporting helpers shared by the benchmarks.

Every timed callable is run once or more untimed first (compilation, first
allocation), then timed over several repeats, each ending in
``jax.block_until_ready``; figures are the median of the repeats.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import jax


def time_calls(fn: Callable[[], Any], *, warmup: int = 1, repeats: int = 5,
               min_repeat_s: float = 0.0) -> dict[str, Any]:
  """Seconds per call of ``fn()`` after ``warmup`` untimed calls.

  Args:
    fn: a callable of no arguments returning JAX arrays (or a pytree of them).
    warmup: untimed calls first (the first one compiles).
    repeats: how many timed repeats; the median is reported.
    min_repeat_s: when positive, each repeat runs ``fn`` back to back enough
      times (calibrated on one call) to last about this long, so that very
      short calls are not dominated by timer and dispatch noise. Per-call time
      is the repeat's time divided by the number of calls.

  Returns:
    ``median_s``, ``min_s``, ``max_s``, ``repeats``, ``calls_per_repeat`` and
    the raw per-call ``times_s`` of every repeat.
  """
  return time_interleaved({"fn": (fn, min_repeat_s)}, warmup=warmup, repeats=repeats)["fn"]


def time_interleaved(fns: dict[str, tuple[Callable[[], Any], float]], *, warmup: int = 1,
                     repeats: int = 5) -> dict[str, dict[str, Any]]:
  """Like ``time_calls`` for several callables, their repeats interleaved.

  Repeat ``r`` times every callable once in turn (``a b c a b c ...``), so
  that a slowly varying background load (other processes on a shared
  machine) affects each of them alike and per-repeat ratios stay meaningful.

  Args:
    fns: name -> ``(fn, min_repeat_s)``; see ``time_calls``.
    warmup: untimed calls of each callable first.
    repeats: timed repeats of each.

  Returns:
    name -> the same summary as ``time_calls``.
  """
  inner = {}
  for name, (fn, min_repeat_s) in fns.items():
    for _ in range(warmup):
      jax.block_until_ready(fn())
    inner[name] = 1
    if min_repeat_s > 0:
      t0 = time.perf_counter()
      jax.block_until_ready(fn())
      once = max(time.perf_counter() - t0, 1e-9)
      inner[name] = max(1, math.ceil(min_repeat_s / once))
  times = {name: [] for name in fns}
  for _ in range(repeats):
    for name, (fn, _) in fns.items():
      t0 = time.perf_counter()
      out = None
      for _ in range(inner[name]):
        out = fn()
      jax.block_until_ready(out)
      times[name].append((time.perf_counter() - t0) / inner[name])
  return {name: {"median_s": statistics.median(t), "min_s": min(t), "max_s": max(t),
                 "repeats": repeats, "calls_per_repeat": inner[name], "times_s": t}
          for name, t in times.items()}


def load_average() -> list[float] | None:
  """1/5/15-minute load averages (other work on the machine skews timings)."""
  try:
    return [round(x, 2) for x in os.getloadavg()]
  except OSError:
    return None


def environment() -> dict[str, Any]:
  """What the figures were measured on."""
  try:
    cpus_usable = len(os.sched_getaffinity(0))
  except AttributeError:  # not on Linux
    cpus_usable = os.cpu_count()
  return {
      "jax_version": jax.__version__,
      "backend": jax.default_backend(),
      "devices": [str(d) for d in jax.local_devices()],
      "device_kind": jax.local_devices()[0].device_kind,
      "cpus_usable": cpus_usable,
      "machine": platform.machine(),
      "processor": platform.processor(),
      "python": platform.python_version(),
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
  }


def write_json(path: str, obj: Any) -> None:
  """Writes ``obj`` as JSON atomically (temp file in the same folder + os.replace)."""
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=".json", dir=folder)
  try:
    os.chmod(tmp, 0o644)  # mkstemp makes it 0600; a results file is meant to be read
    with os.fdopen(fd, "w") as f:
      json.dump(obj, f, indent=2, sort_keys=False)
      f.write("\n")
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
