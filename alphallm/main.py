"""Runs an experiment: ``python -m alphallm.main --config=experiments/NAME.py --workdir=DIR``.

Config values are overridden on the command line with ``--config.KEY=VALUE``
(absl ``config_flags``, the flax-examples / big_vision convention); a variant
of an experiment file is chosen with ``--config=experiments/NAME.py:VARIANT``.
The config is locked, so a misspelt key is an error that names it; a value of
the wrong type is an error too, and every value is checked before any work.
Errors print one line (``--debug`` for the traceback).
"""

import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from alphallm import checkpoint
from alphallm import experiment
from alphallm import io_utils
from alphallm import schema
from alphallm import train
from alphallm import trajectories
from alphallm import workdir as workdir_lib

# Errors that say all there is to say in one line (the traceback with --debug).
ONE_LINE_ERRORS = (schema.ConfigError, workdir_lib.WorkdirError, io_utils.WriteError,
                   trajectories.TrajectoryFileError, checkpoint.CheckpointIntegrityError,
                   checkpoint.NonFiniteStateError, train.NonFiniteLossError)

_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and results.")
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (a .py with get_config()).", lock_config=True)
_DEBUG = flags.DEFINE_boolean("debug", False, "Show the traceback of an error.")
_CONTINUE_WITH = flags.DEFINE_list(
    "continue_with", [], "Config keys that may differ from the config the workdir was made "
    "with (only loop.rounds and eval.methods): continue a run with more rounds or other "
    "evaluation methods.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # orbax logs every file at INFO.
  logging.info("config:\n%s", _CONFIG.value)
  try:
    experiment.train_and_evaluate(_CONFIG.value, _WORKDIR.value,
                                  allow_changes=_CONTINUE_WITH.value)
  except ONE_LINE_ERRORS as e:
    if _DEBUG.value:
      raise
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main)
