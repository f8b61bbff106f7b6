"""``Context``: everything a phase of the loop needs that does not change across rounds.

Built once per run by ``alphallm.builders.build_context``; the loop and its
parts (critics, imagination, search, policy improvement) read it and never
build anything themselves.
"""

from __future__ import annotations

import dataclasses
import os
import zlib
from typing import Any

import jax
import ml_collections

from alphallm import metrics as metrics_lib
from alphallm import model as model_lib
from alphallm import results as results_lib
from alphallm import trajectories as traj_lib
from alphallm.tasks import Problem, Task
from alphallm.tokenizer import Tokenizer


@dataclasses.dataclass
class Context:
  """The run's tokenizer, tasks, splits, model config, mesh and output files."""

  config: ml_collections.ConfigDict
  workdir: str
  task: Task                  # demonstrations, critic data and round prompts
  eval_task: Task             # the eval split (``config.task.eval_knobs``; else ``task``)
  tokenizer: Tokenizer
  model_cfg: model_lib.TransformerConfig
  mesh: Any                   # 1-D "data" mesh, or ("data", "fsdp") for FSDP
  demos: list[Problem]
  eval_problems: list[Problem]
  writer: metrics_lib.MetricWriter
  results: results_lib.Results
  prompt_len: int             # prompt slots of every search and decoding batch
  store: traj_lib.TrajectoryStore
  fsdp_min_size: int | None   # the FSDP threshold (None on a data-parallel mesh)

  def path(self, *parts: str) -> str:
    return os.path.join(self.workdir, *parts)

  def search_manifest(self, round_: int) -> str:
    """The manifest of round ``round_``'s trajectory shards (``trajectories.write_manifest``)."""
    return self.path(f"round{round_}", "search_manifest.json")

  def rng(self, *tags: Any) -> jax.Array:
    """A key that depends only on the seed and the phase's tags (resumable)."""
    key = jax.random.key(self.config.seed)
    for tag in tags:
      key = jax.random.fold_in(key, zlib.crc32(str(tag).encode()) & 0x7FFFFFFF)
    return key

  def fresh_problems(self, num: int, tag: str,
                     exclude: set[str] | frozenset[str] = frozenset()) -> list[Problem]:
    """``num`` problems outside the demonstrations, the eval split and ``exclude``.

    Critic data must come from prompts the policy was not fine-tuned on: on
    its own demonstrations a warm-started policy is nearly always right, and a
    critic trained there learns only "correct".
    """
    taken = ({p.question for p in self.demos} | {p.question for p in self.eval_problems}
             | set(exclude))
    out: list[Problem] = []
    for attempt in range(20):
      seed = zlib.crc32(f"{self.config.seed}/{tag}/{attempt}".encode()) & 0x7FFFFFFF
      for p in self.task.generate(seed, num):
        if p.question not in taken:
          taken.add(p.question)
          out.append(p)
          if len(out) == num:
            return out
    raise ValueError(f"task {self.task.name!r} cannot produce {num} problems outside the "
                     f"demonstrations and eval split (got {len(out)}) for {tag}")
