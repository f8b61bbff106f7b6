"""Critic data: trajectories sampled from the policy, verifier labels, Monte Carlo step labels.

``PolicySampler`` samples completions in fixed-size batches;
``collect_critic_data`` samples ``num_samples`` trajectories per prompt,
labels each by the task's verifier (training data only: the answer key never
reaches a critic at test time) and, with ``mc_rollouts``, labels each step
prefix with the fraction of rollouts from it that reach a correct answer
(Math-Shepherd). ``critic_dataset`` encodes that data for one critic kind.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from alphallm import data as data_lib
from alphallm import progress
from alphallm.critics import KINDS, PRM_LABELS, CollectConfig, fixed_batches
from alphallm import model as model_lib
from alphallm import sampling
from alphallm.tasks import Problem, Task
from alphallm.tokenizer import Tokenizer

log = logging.getLogger(__name__)

# sample(prompts, rng, temperature) -> one completion text per prompt, same order.
SampleFn = Callable[[Sequence[str], jax.Array, float], list[str]]
# ---------------------------------------------------------------------------
# Data collection: trajectories, verifier labels, Monte Carlo step labels.


class PolicySampler:
  """Batched temperature sampling from the policy: a ``SampleFn``.

  Prompts are left-padded to a bucketed length and decoded in fixed-size
  batches with ``sampling.generate`` (jitted; one compile per prompt-length
  bucket), stopping at EOS. Counts the compute it spends.
  """

  def __init__(self, params, config: model_lib.TransformerConfig, tokenizer: Tokenizer, *,
               max_new_tokens: int, batch_size: int, top_k: int = 0, length_bucket: int = 16,
               desc: str = "sample"):
    self.params, self.config, self.tokenizer = params, config, tokenizer
    self.max_new_tokens, self.batch_size, self.top_k = max_new_tokens, batch_size, top_k
    self.length_bucket, self.desc = length_bucket, desc
    self.stats = collections.Counter()  # rows, tokens, forward_passes

  @classmethod
  def from_config(cls, params, config: model_lib.TransformerConfig, tokenizer: Tokenizer,
                  cfg: CollectConfig, desc: str = "sample") -> "PolicySampler":
    """The sampler ``collect_critic_data`` needs for ``cfg`` (length, batch, top-k)."""
    return cls(params, config, tokenizer, max_new_tokens=cfg.max_new_tokens,
               batch_size=cfg.batch_size, top_k=cfg.top_k, desc=desc)

  def __call__(self, prompts: Sequence[str], rng: jax.Array, temperature: float) -> list[str]:
    if not prompts:
      return []
    longest = max(len(self.tokenizer.encode(p)) for p in prompts) + 1
    length = -(-longest // self.length_bucket) * self.length_bucket
    ids, mask = sampling.encode_prompts(self.tokenizer, prompts, length=length)
    stop = jnp.array([self.tokenizer.eos_id], jnp.int32)
    texts: list[str] = []
    batches = list(fixed_batches(len(prompts), self.batch_size))
    for start, idx in progress.bar(batches, desc=self.desc, leave=False):
      out = sampling.generate(self.params, self.config, ids[idx], mask[idx],
                              jax.random.fold_in(rng, start),
                              max_new_tokens=self.max_new_tokens, temperature=temperature,
                              top_k=self.top_k, stop_tokens=stop,
                              pad_id=self.tokenizer.pad_id)
      real = min(self.batch_size, len(prompts) - start)
      tokens, lengths = jax.device_get((out.tokens, out.lengths))
      texts.extend(sampling.decode_completions(self.tokenizer, tokens[:real]))
      self.stats["rows"] += real
      self.stats["tokens"] += int(lengths[:real].sum())
      self.stats["forward_passes"] += int(lengths[:real].sum()) + real
    return texts


@dataclasses.dataclass
class CriticData:
  """Sampled trajectories and their labels; one record serves all three critics.

  Attributes (M trajectories):
    prompts: ``[M]`` prompt texts (``Task.prompt``).
    completions: ``[M]`` sampled completions (cut at EOS).
    problem_index: ``[M]`` int, the problem each trajectory answers.
    outcomes: ``[M]`` float32, 1.0 if the verifier accepts, else 0.0.
    root_labels: ``[M]`` float32, the fraction of its prompt's trajectories
      that are correct (the MC value of the empty prefix).
    step_labels: ``[M]`` float32 arrays, one soft MC label per step
      (``data.split_completion``): steps before the last get the fraction of
      rollouts from their prefix that are correct; the last step gets the
      outcome. None when no rollouts were asked for.
    stats: compute and counts (trajectories, rollouts, unique prefixes).
  """

  prompts: list[str]
  completions: list[str]
  problem_index: np.ndarray
  outcomes: np.ndarray
  root_labels: np.ndarray
  step_labels: list[np.ndarray] | None
  stats: dict[str, int] = dataclasses.field(default_factory=dict)

  def __len__(self) -> int:
    return len(self.completions)


def hard_labels(labels: np.ndarray, threshold: float) -> np.ndarray:
  """1.0 where a soft label reaches ``threshold``, else 0.0 (float32)."""
  return (np.asarray(labels, np.float64) >= threshold - 1e-9).astype(np.float32)


def collect_critic_data(task: Task, problems: Sequence[Problem], sample_fn: SampleFn,
                        rng: jax.Array, cfg: CollectConfig | Any = CollectConfig()
                        ) -> CriticData:
  """Samples trajectories, labels them with the verifier, and MC-labels their steps.

  1. ``cfg.num_samples`` trajectories per problem at ``cfg.temperature`` (all
     prompts in one batched ``sample_fn`` call).
  2. Outcome labels from ``task.verify`` (host side; the answer key is only
     used here, to make training labels).
  3. With ``cfg.mc_rollouts = k > 0``: every distinct step prefix (per
     problem) of every trajectory except the whole solution gets ``k``
     rollouts at ``cfg.rollout_temperature`` (again one batched call); its
     label is the fraction of ``prefix + rollout`` the verifier accepts.

  Args:
    task: the task (prompt format, steps, verifier).
    problems: the problems to sample for.
    sample_fn: ``(prompts, rng, temperature) -> completions`` (a
      ``PolicySampler`` over the policy; tests pass a scripted one).
    rng: PRNG key.
    cfg: a ``CollectConfig`` (or a mapping of its fields).

  Returns:
    ``CriticData`` with ``M = len(problems) * num_samples`` trajectories,
    each problem's adjacent.
  """
  if not isinstance(cfg, CollectConfig):
    cfg = CollectConfig(**dict(cfg))
  if not problems:
    raise ValueError("collect_critic_data: no problems")
  n = cfg.num_samples
  traj_rng, roll_rng = jax.random.split(rng)
  base_prompts = [task.prompt(p) for p in problems]
  index = np.repeat(np.arange(len(problems)), n)
  prompts = [base_prompts[i] for i in index]
  completions = list(sample_fn(prompts, traj_rng, cfg.temperature))
  if len(completions) != len(prompts):
    raise ValueError(f"sample_fn returned {len(completions)} completions for "
                     f"{len(prompts)} prompts")
  outcomes = np.array([task.verify(problems[i], c) for i, c in zip(index, completions)],
                      np.float32)
  root = outcomes.reshape(len(problems), n).mean(axis=1)[index].astype(np.float32)
  stats = {"trajectories": len(prompts), "rollouts": 0, "prefixes": 0}

  step_labels = None
  if cfg.mc_rollouts > 0:
    k = cfg.mc_rollouts
    slots: dict[tuple[int, str], int] = {}   # (problem, prefix) -> slot
    traj_slots, num_steps = [], []
    for i, c in zip(index, completions):
      pieces = data_lib.split_completion(c, task.step_delimiter)
      prefixes = ["".join(pieces[:j + 1]) for j in range(len(pieces) - 1)]
      traj_slots.append([slots.setdefault((int(i), pre), len(slots)) for pre in prefixes])
      num_steps.append(len(pieces))
    keys = list(slots)
    fractions = np.zeros((len(keys),), np.float32)
    if keys:
      roll_prompts = [base_prompts[i] + pre for i, pre in keys for _ in range(k)]
      rollouts = list(sample_fn(roll_prompts, roll_rng, cfg.rollout_temperature))
      if len(rollouts) != len(roll_prompts):
        raise ValueError(f"sample_fn returned {len(rollouts)} completions for "
                         f"{len(roll_prompts)} prompts")
      correct = np.array([task.verify(problems[keys[r // k][0]], keys[r // k][1] + text)
                          for r, text in enumerate(rollouts)], np.float32)
      fractions = correct.reshape(len(keys), k).mean(axis=1)
    # Steps before the last: their prefix's MC fraction; the last: the outcome.
    step_labels = [np.append(fractions[np.asarray(s, np.int64)], outcomes[m]).astype(np.float32)
                   if num_steps[m] else np.zeros((0,), np.float32)
                   for m, s in enumerate(traj_slots)]
    stats.update(rollouts=len(keys) * k, prefixes=len(keys))
  if isinstance(sample_fn, PolicySampler):
    stats.update({f"sample_{key}": value for key, value in sample_fn.stats.items()})
  return CriticData(prompts=prompts, completions=completions, problem_index=index,
                    outcomes=outcomes, root_labels=root, step_labels=step_labels, stats=stats)


def critic_dataset(kind: str, tokenizer: Tokenizer, critic_data: CriticData, seq_len: int, *,
                   delimiter: str = "\n", prm_label: str = "soft", prm_threshold: float = 0.5,
                   policy_targets: bool = False) -> dict[str, np.ndarray]:
  """The training (or held-out evaluation) batch of a critic kind.

  Args:
    kind: "value" (targets at every state from the prompt's end to EOS),
      "orm" (EOS only) or "prm" (each step end, plus the root state).
    tokenizer: the tokenizer.
    critic_data: trajectories and labels from ``collect_critic_data``.
    seq_len: static row length.
    delimiter: the task's step delimiter (PRM).
    prm_label: "soft" MC fractions or "hard" (fraction >= ``prm_threshold``).
    prm_threshold: see ``prm_label``.
    policy_targets: if True, the completions of verified-correct trajectories
      are also policy targets (``loss_mask``), for a shared trunk's anchor
      loss; wrong trajectories never are.

  Returns:
    ``tokens``/``loss_mask``/``value_target``/``value_mask`` ``[M, seq_len]``.
  """
  if kind not in KINDS:
    raise ValueError(f"critic kind must be one of {KINDS}, got {kind!r}")
  d = critic_data
  flags = list(d.outcomes >= 0.5) if policy_targets else None
  if kind == "value":
    out = data_lib.encode_examples(tokenizer, d.prompts, d.completions, seq_len,
                                   value_targets=list(d.outcomes))
    if flags is None:
      out["loss_mask"][:] = 0.0
    else:
      out["loss_mask"] *= np.asarray(flags, np.float32)[:, None]
    return out
  if kind == "orm":
    return data_lib.encode_outcome_examples(tokenizer, d.prompts, d.completions,
                                            list(d.outcomes), seq_len, policy_targets=flags)
  if d.step_labels is None:
    raise ValueError("critic_dataset('prm'): the data has no step labels "
                     "(collect it with mc_rollouts > 0)")
  if prm_label not in PRM_LABELS:
    raise ValueError(f"prm_label must be one of {PRM_LABELS}, got {prm_label!r}")
  steps, root = d.step_labels, d.root_labels
  if prm_label == "hard":
    steps = [hard_labels(s, prm_threshold) for s in steps]
    root = hard_labels(root, prm_threshold)
  return data_lib.encode_step_value_examples(tokenizer, d.prompts, d.completions, steps,
                                             seq_len, delimiter, prompt_targets=list(root),
                                             policy_targets=flags)


