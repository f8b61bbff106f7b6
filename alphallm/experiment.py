"""``train_and_evaluate(config, workdir)``: the experiment behind ``alphallm.main``.

It validates the config, locks the workdir and runs the self-improvement loop
(``alphallm.loop``). This module also holds the pieces the loop builds on:
config validation, task and model construction, SFT (``run_sft``) and the
baseline decoding methods named in ``config.eval.methods``.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import jax
import ml_collections
import numpy as np
import tqdm

from alphallm import decoding
from alphallm import evaluation
from alphallm import io_utils
from alphallm import metrics as metrics_lib
from alphallm import model as model_lib
from alphallm import train
from alphallm import workdir as workdir_lib
from alphallm.tasks import Problem, Task, get_task
from alphallm.tokenizer import Tokenizer

log = logging.getLogger(__name__)


def report(msg: str, *args) -> None:
  """A line the user should see whatever the log verbosity (progress-bar safe)."""
  text = msg % args if args else msg
  log.info(text)
  tqdm.tqdm.write(text)


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Range checks that ml_collections' type checks cannot express."""
  def positive(path: str, allow_zero: bool = False):
    value = config
    for part in path.split("."):
      value = value[part]
    if not isinstance(value, (int, float)) or value < 0 or (value == 0 and not allow_zero):
      raise ValueError(f"config.{path} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")

  for path in ("data.num_demos", "data.num_eval", "data.seq_len", "sft.steps",
               "sft.batch_size", "sft.learning_rate", "eval.batch_size",
               "eval.max_new_tokens"):
    positive(path)
  positive("sft.warmup_steps", allow_zero=True)
  positive("sft.checkpoint_every")
  positive("eval.temperature", allow_zero=True)
  if "loop" in config:
    positive("loop.rounds", allow_zero=True)
    if config.loop.rounds:
      for path in ("loop.prompts_per_round", "loop.search_batch_size", "loop.sft.steps",
                   "loop.sft.batch_size", "loop.sft.learning_rate", "loop.sft.checkpoint_every"):
        positive(path)
    if not 0.0 <= config.loop.gamma <= 1.0:
      raise ValueError(f"config.loop.gamma must be in [0, 1], got {config.loop.gamma!r}")
  if "search_batch_size" in config.eval:
    positive("eval.search_batch_size")
  n = num_devices(config)
  if config.sft.batch_size % n:
    raise ValueError(f"config.sft.batch_size={config.sft.batch_size} must be divisible by the "
                     f"{n} devices used (config.num_devices={config.num_devices})")


def num_devices(config) -> int:
  available = jax.local_device_count()
  if config.num_devices < 0 or config.num_devices > available:
    raise ValueError(f"config.num_devices={config.num_devices} but {available} local devices "
                     "are available (0 means all)")
  return config.num_devices or available


def build_task(config) -> Task:
  return get_task(config.task.name, **config.task.knobs.to_dict())


def build_model_config(config, tokenizer: Tokenizer) -> model_lib.TransformerConfig:
  return model_lib.TransformerConfig.from_dict(
      {**config.model.to_dict(), "vocab_size": tokenizer.vocab_size,
       "max_len": config.data.seq_len})


def run_sft(sft_cfg, model_cfg: model_lib.TransformerConfig, dataset: dict[str, np.ndarray],
            init_params, mesh, ckpt_dir: str, seed: int, desc: str = "sft",
            writer: metrics_lib.MetricWriter | None = None):
  """Supervised fine-tuning of the policy (``train.fit``), resumable. Returns the parameters."""
  params, _ = train.fit(sft_cfg, model_cfg, dataset, init_params, mesh, seed=seed,
                        ckpt_dir=ckpt_dir, value_coef=sft_cfg.value_coef, policy_coef=1.0,
                        desc=desc, writer=writer)
  return params


# Methods named "NAME@N" draw N samples and choose one on the host with a selector.
_MULTI_SAMPLE = {"self_consistency": "majority", "best_of": "max_score",
                 "weighted_vote": "weighted_vote"}


def decoding_methods(config, model_cfg: model_lib.TransformerConfig, tokenizer: Tokenizer
                     ) -> dict[str, tuple[decoding.DecodeFn, evaluation.Selector | None]]:
  """The baseline decoding methods named in ``config.eval.methods``.

  Names: ``greedy``, ``sampling``, ``self_consistency@N`` (majority vote),
  ``best_of@N`` (value-head re-rank), ``weighted_vote@N`` (value-weighted vote).
  """
  ev = config.eval
  methods = {}
  for spec in ev.methods:
    base, _, n = spec.partition("@")
    if spec == "greedy":
      methods[spec] = (decoding.make_sampler(model_cfg, ev.max_new_tokens, tokenizer.eos_id),
                       None)
    elif spec == "sampling":
      methods[spec] = (decoding.make_sampler(model_cfg, ev.max_new_tokens, tokenizer.eos_id,
                                             temperature=ev.temperature), None)
    elif base in _MULTI_SAMPLE and n.isdigit() and int(n) > 0:
      methods[spec] = (decoding.make_multi_sampler(model_cfg, int(n), ev.max_new_tokens,
                                                   tokenizer.eos_id, ev.temperature),
                       decoding.SELECTORS[_MULTI_SAMPLE[base]])
    else:
      raise ValueError(
          f"config.eval.methods: unknown method {spec!r}; known: 'greedy', 'sampling', "
          + ", ".join(f"'{m}@N'" for m in _MULTI_SAMPLE))
  return methods


def write_problems(path: str, problems: list[Problem]) -> None:
  io_utils.atomic_write_text(
      path, "".join(json.dumps(p.to_json(), sort_keys=True) + "\n" for p in problems))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs the experiment in ``workdir`` (locked for the duration). Returns the rows.

  Round 0 (warm-start SFT, critics, evaluation), then ``config.loop.rounds``
  rounds of self-improvement (``alphallm.loop``).
  """
  validate_config(config)
  from alphallm import loop  # pylint: disable=import-outside-toplevel (loop imports this module)
  with workdir_lib.Workdir(workdir):
    io_utils.atomic_write_text(os.path.join(workdir, "config.json"),
                               config.to_json_best_effort(indent=2, sort_keys=True))
    return loop.run(config, workdir)
