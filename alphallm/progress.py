"""Lines the user sees whatever the log verbosity (progress-bar safe)."""

from __future__ import annotations

import logging

import tqdm

log = logging.getLogger("alphallm")


def report(msg: str, *args) -> None:
  """Logs ``msg % args`` and writes it above any progress bar."""
  text = msg % args if args else msg
  log.info(text)
  tqdm.tqdm.write(text)
