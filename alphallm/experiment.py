"""``train_and_evaluate(config, workdir)``: validate, lock the workdir, run the loop.

The experiment behind ``alphallm.main``. The config is checked in full
(``alphallm.validation``) before the workdir is created or touched; then the
workdir is locked for the run's duration (``alphallm.workdir``: one writer,
always), bound to its config (a rerun with a different config is refused,
naming the keys that differ, unless they are listed in ``allow_changes``),
recovered (temporary files of a killed run removed, ``results.md`` and the
plots rebuilt from ``results.json``), and the self-improvement loop
(``alphallm.loop``, Algorithm 1) runs.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import ml_collections

from alphallm import loop
from alphallm import progress
from alphallm import validation
from alphallm import workdir as workdir_lib

validate_config = validation.validate_config


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       allow_changes: Sequence[str] = ()) -> dict[str, Any]:
  """Runs the experiment in ``workdir`` (locked for the duration). Returns the rows.

  Round 0 (warm-start SFT, critics, evaluation), then ``config.loop.rounds``
  rounds of self-improvement (``alphallm.loop``).

  Args:
    config: the experiment config (``alphallm.schema``).
    workdir: where everything is written; rerunning on it resumes.
    allow_changes: keys that may differ from the config the workdir was made
      with (only ``workdir.CONTINUABLE_KEYS``: more rounds, other eval methods).

  Raises:
    schema.ConfigError: naming the first bad key, before the workdir is touched.
    workdir.WorkdirError: another run holds the workdir, or the config differs.
  """
  validate_config(config)
  with workdir_lib.Workdir(workdir) as w, progress.heartbeat(f"train_and_evaluate {workdir}"):
    w.bind_config(json.loads(config.to_json_best_effort()), allow_changes=tuple(allow_changes))
    recovered = w.recover()
    if any(recovered.values()):
      progress.report("recovered %s: removed %d temporary file(s), rebuilt %s", workdir,
                      len(recovered["removed"]), ", ".join(recovered["rebuilt"]) or "nothing")
    return loop.run(config, workdir)
