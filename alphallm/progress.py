"""What the user sees while a run works: report lines, progress bars, a heartbeat.

On a terminal or in a notebook, ``bar`` is a tqdm bar (``tqdm.auto``: widgets
in Jupyter/Colab). When stdout is not a terminal (a log file, a batch job),
bars print nothing themselves; instead ``heartbeat`` prints one line at
least every ``interval`` seconds with the current phase, done/total and the
ETA of the innermost bar, so a log never goes quiet while search, training or
evaluation run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

import tqdm
import tqdm.auto

log = logging.getLogger("alphallm")

# Seconds between heartbeat lines ($ALPHALLM_PROGRESS_S overrides, e.g. for tests).
INTERVAL_S = float(os.environ.get("ALPHALLM_PROGRESS_S", "30"))
_lock = threading.Lock()
_bars: list["_State"] = []  # the open bars, innermost last


def report(msg: str, *args) -> None:
  """Logs ``msg % args`` and writes it above any progress bar."""
  text = msg % args if args else msg
  log.info(text)
  tqdm.tqdm.write(text)


def interactive() -> bool:
  """Whether bars render: stdout is a terminal, or a notebook's (ipykernel) stream."""
  return sys.stdout.isatty() or "ipykernel" in sys.modules


class _State:
  """Done/total of one open bar, read by the heartbeat."""

  def __init__(self, desc: str, total: int | None):
    self.desc, self.total, self.done, self.start = desc, total, 0, time.monotonic()

  def line(self, now: float) -> str:
    elapsed = now - self.start
    text = f"{self.desc}: {self.done}"
    if self.total:
      text += f"/{self.total} ({100 * self.done / self.total:.0f}%)"
      if self.done:
        eta = elapsed * (self.total - self.done) / self.done
        text += f", ETA {eta:.0f} s"
    return text + f", {elapsed:.0f} s elapsed"


class _Bar:
  """A tqdm-like bar (iteration, ``update``, ``close``, context manager)."""

  def __init__(self, iterable: Iterable[Any] | None, total: int | None, desc: str,
               **kwargs):
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
      total = len(iterable)
    self._iterable = iterable
    self._state = _State(desc, total)
    self._state.done = int(kwargs.get("initial", 0))
    self._tqdm = (tqdm.auto.tqdm(iterable, total=total, desc=desc, **kwargs)
                  if interactive() else None)
    with _lock:
      _bars.append(self._state)

  def __iter__(self) -> Iterator[Any]:
    source = self._tqdm if self._tqdm is not None else self._iterable
    try:
      for item in source:
        yield item
        self._state.done += 1
    finally:
      self.close()

  def update(self, n: int = 1) -> None:
    self._state.done += n
    if self._tqdm is not None:
      self._tqdm.update(n)

  def set_postfix(self, *args, **kwargs) -> None:
    if self._tqdm is not None:
      self._tqdm.set_postfix(*args, **kwargs)

  def close(self) -> None:
    with _lock:
      if self._state in _bars:
        _bars.remove(self._state)
    if self._tqdm is not None:
      self._tqdm.close()

  def __enter__(self) -> "_Bar":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def bar(iterable: Iterable[Any] | None = None, *, total: int | None = None, desc: str = "",
        **kwargs) -> _Bar:
  """A progress bar over ``iterable`` (or updated by hand up to ``total``)."""
  return _Bar(iterable, total, desc, **kwargs)


def status_line(phase: str, now: float | None = None) -> str:
  """The heartbeat's line: the phase and every open bar, outermost first."""
  now = time.monotonic() if now is None else now
  with _lock:
    bars = [b.line(now) for b in _bars]
  return " | ".join([f"[alphallm] {phase}"] + bars)


@contextlib.contextmanager
def heartbeat(phase: str = "running", interval: float | None = None,
              stream: Any = None, force: bool = False):
  """Prints ``status_line`` every ``interval`` seconds while the block runs.

  Only when output is not interactive (a terminal shows the bars instead),
  unless ``force``.
  """
  if interactive() and not force:
    yield
    return
  out = stream if stream is not None else sys.stdout
  interval = INTERVAL_S if interval is None else interval
  stop = threading.Event()
  start = time.monotonic()

  def tick():
    while not stop.wait(interval):
      print(status_line(f"{phase}, {time.monotonic() - start:.0f} s"), file=out, flush=True)

  thread = threading.Thread(target=tick, name="alphallm-heartbeat", daemon=True)
  thread.start()
  try:
    yield
  finally:
    stop.set()
    thread.join()
