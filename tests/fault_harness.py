"""Runs a tiny full self-improvement loop, optionally SIGKILL-ing itself.

Used by ``tests/test_faults.py`` as a subprocess::

  python tests/fault_harness.py WORKDIR [KILL_POINT]

The run is ``experiment.train_and_evaluate`` on ``tiny_config()``: round 0
(warm-start SFT, a value critic, greedy + eta-MCTS evaluation), then two
rounds of imagine / search (two trajectory shards per round) / SFT /
evaluate. Every phase takes seconds on a CPU.

``KILL_POINT`` (none by default) makes the process kill itself with SIGKILL,
uncatchable like an OOM kill or a preempted machine, at a chosen point. The
hooks are monkeypatches installed in this process only; no product code
knows about them:

* ``search-write:R:S``: inside the write of trajectory shard ``S`` of round
  ``R``, once its temporary file is complete and before it is renamed into
  place (the shards before it are complete);
* ``train:DESC:K``: after ``K`` training steps of the phase whose
  checkpoints are in ``checkpoints/DESC`` (e.g. ``sft_round1``), when the
  batch of step ``K + 1`` is asked for;
* ``ckpt:DESC:STEP``: inside orbax's save of checkpoint ``STEP`` of ``DESC``,
  after the temporary directory is fully written and before it is committed
  and renamed to its final name;
* ``eval:R:METHOD``: right after the results row of ``METHOD`` in round
  ``R`` is written.

``hold[:SECONDS]`` does no work: it takes the workdir lock and sleeps (for
testing that a second run on the workdir is refused).
"""

from __future__ import annotations

import os
import signal
import sys
import time

import ml_collections

from alphallm import config_files

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config() -> ml_collections.ConfigDict:
  """The quickstart's ``tiny`` variant, plus what the fault tests need of it.

  Two rounds, so a kill can land in round 2 after round 1's products exist;
  every finished trajectory kept (ORM filter at gamma 0), so round k's SFT
  data depends on its search; distillation on, so the root options do too.
  """
  c = config_files.load(os.path.join(ROOT, "experiments", "quickstart.py")).get_config("tiny")
  c.num_devices = 2  # the data-parallel step across devices
  c.loop.rounds = 2
  c.loop.filter_by, c.loop.gamma = "orm", 0.0
  c.loop.distill = True
  return c


def _die(why: str) -> None:
  print(f"fault_harness: SIGKILL {why}", flush=True)
  os.kill(os.getpid(), signal.SIGKILL)


def install_kill(point: str) -> None:
  """Monkeypatches the hook named by ``point`` (see the module docstring)."""
  kind, _, rest = point.partition(":")
  if kind == "search-write":
    round_, shard = (int(x) for x in rest.split(":"))
    from alphallm import trajectories  # pylint: disable=import-outside-toplevel
    target = trajectories.shard_name(round_, shard)
    original_replace = os.replace

    def replace(src, dst, *args, **kw):
      if os.path.basename(os.fspath(dst)) == target:
        _die(f"before renaming {src} to {dst}")
      return original_replace(src, dst, *args, **kw)

    os.replace = replace
  elif kind == "train":
    desc, k = rest.rsplit(":", 1)
    k = int(k)
    from alphallm import checkpoint, data  # pylint: disable=import-outside-toplevel
    # The phase training now is the one whose checkpoint directory was opened
    # last (every resumable training run opens its own, named after the phase).
    current = {"phase": None}
    original_init = checkpoint.Checkpointer.__init__
    original_batch_at = data.batch_at

    def init(self, directory, *args, **kw):
      original_init(self, directory, *args, **kw)
      current["phase"] = os.path.basename(os.path.abspath(directory))

    def batch_at(dataset, batch_size, step, seed):
      if current["phase"] == desc and step == k:
        _die(f"after training step {k} of {desc} (before step {k + 1})")
      return original_batch_at(dataset, batch_size, step, seed)

    checkpoint.Checkpointer.__init__ = init
    data.batch_at = batch_at
  elif kind == "ckpt":
    desc, step = rest.rsplit(":", 1)
    from orbax.checkpoint._src.path import atomicity  # pylint: disable=import-outside-toplevel
    original_finalize = atomicity.AtomicRenameTemporaryPath.finalize

    async def finalize(self):
      final = self.get_final()
      if final.parent.name == desc and final.name == step:
        _die(f"before committing {self.get()} (written, not renamed)")
      return await original_finalize(self)

    atomicity.AtomicRenameTemporaryPath.finalize = finalize
  elif kind == "hold":
    from alphallm import loop  # pylint: disable=import-outside-toplevel

    def run(config, workdir):
      del config
      print(f"fault_harness: holding {workdir}", flush=True)
      time.sleep(float(rest or 120))

    loop.run = run
  elif kind == "eval":
    round_, method = rest.split(":", 1)
    from alphallm import results  # pylint: disable=import-outside-toplevel
    original_add = results.Results.add

    def add(self, row):
      original_add(self, row)
      if row["round"] == int(round_) and row["decoding"] == method:
        _die(f"after writing the round {round_} {method} row")

    results.Results.add = add
  else:
    raise SystemExit(f"fault_harness: unknown kill point {point!r}")


def main(argv: list[str]) -> None:
  if len(argv) not in (2, 3):
    raise SystemExit(__doc__)
  workdir = argv[1]
  # TensorBoard event files are outside what resumption guarantees, and
  # tensorboardX imports torch (seconds per process): metrics.jsonl only.
  sys.modules["tensorboardX"] = None
  if len(argv) == 3 and argv[2] != "none":
    install_kill(argv[2])
  from alphallm import experiment  # pylint: disable=import-outside-toplevel
  experiment.train_and_evaluate(tiny_config(), workdir)
  print("fault_harness: completed", flush=True)


if __name__ == "__main__":
  # Before JAX starts: two simulated CPU devices (the data-parallel SFT path).
  os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
  os.environ["JAX_PLATFORMS"] = "cpu"
  sys.path.insert(0, ROOT)
  main(sys.argv)
