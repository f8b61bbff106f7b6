"""``train_and_evaluate(config, workdir)``: validate, lock the workdir, run the loop.

The experiment behind ``alphallm.main``. The config is checked in full
(``alphallm.validation``) before the workdir is created or touched; then the
workdir is locked for the run's duration, the config recorded in it, and the
self-improvement loop (``alphallm.loop``, Algorithm 1) runs.
"""

from __future__ import annotations

import os
from typing import Any

import ml_collections

from alphallm import io_utils
from alphallm import loop
from alphallm import progress
from alphallm import validation
from alphallm import workdir as workdir_lib

validate_config = validation.validate_config


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs the experiment in ``workdir`` (locked for the duration). Returns the rows.

  Round 0 (warm-start SFT, critics, evaluation), then ``config.loop.rounds``
  rounds of self-improvement (``alphallm.loop``).

  Raises:
    schema.ConfigError: naming the first bad key, before the workdir is touched.
  """
  validate_config(config)
  with workdir_lib.Workdir(workdir), progress.heartbeat(f"train_and_evaluate {workdir}"):
    io_utils.atomic_write_text(os.path.join(workdir, "config.json"),
                               config.to_json_best_effort(indent=2, sort_keys=True))
    return loop.run(config, workdir)
