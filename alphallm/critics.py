"""Criticizing: the value function, the PRM and the ORM, each a value head.

The paper's three critics (section "Criticizing") share one form here: a
``Transformer`` whose scalar value head, read at the last real token of a
sequence, scores the state that sequence spells out. They differ in the
positions trained and so in the state each one judges:

* ``"value"``: the value function v(s). Every prefix state of a sampled
  trajectory, from the end of the prompt to EOS, is regressed (MSE) onto that
  trajectory's final correctness (``data.encode_examples`` with
  ``value_targets``).
* ``"prm"``: the process reward model. Only the end of each step (the
  delimiter token; EOS for the last step) is regressed onto a Monte Carlo
  label of that step, Math-Shepherd style: the fraction of ``k`` rollouts
  from the prefix ending at the step that reach a correct answer (soft), or
  that fraction thresholded (hard) (``data.encode_step_value_examples``).
* ``"orm"``: the outcome reward model. Only EOS is regressed onto the
  finished solution's correctness (``data.encode_outcome_examples``).

Targets are in ``[0, 1]``: 1.0 correct, 0.0 wrong (soft PRM labels between).
Regressing 0/1 outcomes by MSE makes a head estimate P(correct | state) under
the sampling policy (a state shared by several trajectories, such as the
root, is pulled to their mean). The value head is linear, so scores are not clipped to that range;
``calibration`` clips them. Labels come from the task's exact verifier, i.e.
the answer key, which is fine at critic-training time only: at test time a
critic sees token sequences and nothing else.

``shared_trunk``: with True the critic *is* the policy's own value head (the
policy's config and parameters; training it also moves the policy, so a small
policy loss on the verified-correct trajectories anchors the trunk, see
``train_critic``). With False it is a separate small ``Transformer`` with its
own config and parameters. Both go through the same code: a ``Critic`` record
holds ``(kind, config, params, shared_trunk)`` and its jitted
``score(params, tokens [N, S], mask [N, S]) -> [N]``.

Sequence layout. ``encode_for_scoring`` lays rows out as
``BOS + prompt + completion [+ EOS]``, right-padded with PAD: the layout of
the training data, so a critic is read where it was trained (at EOS for a
finished solution, at a delimiter for a step prefix). ``score`` takes RoPE
positions from the mask (``model.default_positions``), so any row whose real
tokens form one contiguous run scores the same whether right-padded,
left-padded (``sampling.encode_prompts`` + completion, as the search builds
them) or both. A ``Critic`` therefore plugs into ``search.mcts.Critics``
(see ``search_critics``).

Pipeline: ``collect_critic_data`` (trajectories from the policy, verifier
labels, MC rollouts, all sampling batched through ``sampling.generate``) ->
``critic_dataset`` (one of the three encodings) -> ``train_critic``
(``train.make_train_step``, resumable with ``checkpoint.Checkpointer``) ->
``evaluate_critic`` / ``calibration`` (the paper's Table 8: precision and
recall at 0.5, ECE over 10 bins). ``tool_orm_score`` is the tool-augmented
ORM: a calculator check of every ``a op b = c`` step and GSM8K
``<<expr=result>>`` annotation, gating the learned ORM.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from alphallm import data as data_lib
from alphallm import graders
from alphallm import model as model_lib
from alphallm import train
from alphallm.search import mcts
from alphallm.tasks import Task
from alphallm.tasks import parsing
from alphallm.tokenizer import Tokenizer

log = logging.getLogger(__name__)

KINDS = ("value", "prm", "orm")
PRM_LABELS = ("soft", "hard")
# Default policy-loss weight when training a shared-trunk critic (see train_critic).
SHARED_TRUNK_POLICY_COEF = 0.1

# critic(params, tokens [N, S], mask [N, S]) -> scores [N].
CriticFn = Callable[[Any, Int[Array, "N S"], Bool[Array, "N S"]], Float[Array, "N"]]
# sample(prompts, rng, temperature) -> one completion text per prompt, same order.
SampleFn = Callable[[Sequence[str], jax.Array, float], list[str]]


# ---------------------------------------------------------------------------
# Configuration.


@dataclasses.dataclass(frozen=True)
class CollectConfig:
  """How critic training data is sampled from the policy (``collect_critic_data``)."""

  num_samples: int = 8            # trajectories per prompt (paper: 50)
  temperature: float = 1.0        # trajectory sampling temperature
  top_k: int = 0                  # 0: full softmax
  max_new_tokens: int = 64        # per trajectory and per rollout
  mc_rollouts: int = 4            # k rollouts per step prefix for PRM labels; 0: no PRM labels
  rollout_temperature: float = 1.0
  batch_size: int = 64            # rows per generate call (fixed, so it compiles once)


@dataclasses.dataclass(frozen=True)
class CriticTrainConfig:
  """Value-head regression (``train_critic``). Paper: lr 1e-6, one epoch (13B model)."""

  steps: int = 200
  batch_size: int = 32
  learning_rate: float = 1e-3
  warmup_steps: int = 10
  weight_decay: float = 0.0
  grad_clip: float = 1.0
  checkpoint_every: int = 50
  max_to_keep: int = 2
  # None: 0 for a separate critic, SHARED_TRUNK_POLICY_COEF for a shared trunk.
  policy_coef: float | str | None = "auto"


def _default_critic_model() -> dict[str, Any]:
  return dict(num_layers=2, embed_dim=64, num_heads=4, num_kv_heads=2, head_dim=16, mlp_dim=256)


@dataclasses.dataclass(frozen=True)
class CriticConfig:
  """Every knob of one critic. See ``default_critic_config``."""

  kind: str = "value"
  shared_trunk: bool = False
  model: Mapping[str, Any] = dataclasses.field(default_factory=_default_critic_model)
  seq_len: int = 128
  prm_label: str = "soft"
  prm_threshold: float = 0.5
  collect: CollectConfig = CollectConfig()
  train: CriticTrainConfig = CriticTrainConfig()

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f"CriticConfig.kind must be one of {KINDS}, got {self.kind!r}")
    if self.prm_label not in PRM_LABELS:
      raise ValueError(f"CriticConfig.prm_label must be one of {PRM_LABELS}, "
                       f"got {self.prm_label!r}")
    if not 0.0 <= self.prm_threshold <= 1.0:
      raise ValueError(f"CriticConfig.prm_threshold must be in [0, 1], got {self.prm_threshold}")
    c, t = self.collect, self.train
    for name, value in (("collect.num_samples", c.num_samples),
                        ("collect.max_new_tokens", c.max_new_tokens),
                        ("collect.batch_size", c.batch_size), ("train.steps", t.steps),
                        ("train.batch_size", t.batch_size),
                        ("train.checkpoint_every", t.checkpoint_every),
                        ("seq_len", self.seq_len)):
      if not isinstance(value, int) or value < 1:
        raise ValueError(f"CriticConfig.{name} must be a positive int, got {value!r}")
    if c.mc_rollouts < 0 or c.temperature < 0 or c.rollout_temperature < 0:
      raise ValueError("CriticConfig.collect: mc_rollouts and temperatures must be >= 0")

  @classmethod
  def from_config(cls, config: Any) -> "CriticConfig":
    """From a ConfigDict / mapping like ``default_critic_config()`` (or a CriticConfig)."""
    if isinstance(config, CriticConfig):
      return config
    d = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else dict(config)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
      raise ValueError(f"unknown critic config keys {unknown}; known: {sorted(known)}")
    for key, sub in (("collect", CollectConfig), ("train", CriticTrainConfig)):
      if key in d and not isinstance(d[key], sub):
        sub_known = {f.name for f in dataclasses.fields(sub)}
        bad = sorted(set(d[key]) - sub_known)
        if bad:
          raise ValueError(f"unknown keys {bad} in critic config {key!r}; known: "
                           f"{sorted(sub_known)}")
        d[key] = sub(**dict(d[key]))
    if "model" in d:
      d["model"] = dict(d["model"])
    return cls(**d)

  def to_config_dict(self) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dataclasses.asdict(self))


def default_critic_config() -> ml_collections.ConfigDict:
  """All knobs of one critic, with CPU-friendly defaults.

  * ``kind``: "value" | "prm" | "orm" (see the module docstring).
  * ``shared_trunk``: True: the critic is the policy's value head (same
    params); False: a separate Transformer built from ``model``.
  * ``model``: TransformerConfig fields of a separate critic (``vocab_size``
    and ``max_len`` come from the tokenizer and ``seq_len``).
  * ``seq_len``: static row length of critic training and scoring batches;
    must hold BOS + prompt + completion + EOS.
  * ``prm_label``: "soft" (the MC fraction) or "hard" (fraction >=
    ``prm_threshold``; ``1/mc_rollouts`` is Math-Shepherd's "any rollout
    correct").
  * ``collect``: {num_samples, temperature, top_k, max_new_tokens,
    mc_rollouts, rollout_temperature, batch_size} (``CollectConfig``).
  * ``train``: {steps, batch_size, learning_rate, warmup_steps, weight_decay,
    grad_clip, checkpoint_every, max_to_keep, policy_coef}
    (``CriticTrainConfig``).
  """
  cfg = CriticConfig().to_config_dict()
  cfg.train.policy_coef = "auto"
  return cfg


def _policy_coef(train_cfg: CriticTrainConfig, shared_trunk: bool) -> float:
  coef = train_cfg.policy_coef
  if coef is None or coef == "auto":
    return SHARED_TRUNK_POLICY_COEF if shared_trunk else 0.0
  return float(coef)


# ---------------------------------------------------------------------------
# The Critic record and scoring.


def last_real_index(mask: Bool[Array, "N S"]) -> Int[Array, "N"]:
  """Index of the last True of each row (0 if none)."""
  idx = jnp.where(mask, jnp.arange(mask.shape[1])[None, :], -1)
  return jnp.maximum(jnp.max(idx, axis=1), 0)


@functools.lru_cache(maxsize=None)
def score_fn(config: model_lib.TransformerConfig) -> CriticFn:
  """The jitted ``score(params, tokens [N, S], mask [N, S]) -> [N]`` of a config.

  Re-encodes each row (positions from the mask, so padding on either side is
  skipped) and returns the value head at its last real token, unclipped.
  """
  model = model_lib.Transformer(config)

  @jax.jit
  def score(params, tokens, mask):
    mask = mask.astype(bool)
    out = model.apply({"params": params}, tokens, model_lib.default_positions(mask), mask)
    return jnp.take_along_axis(out.values, last_real_index(mask)[:, None], axis=1)[:, 0]

  return score


@functools.lru_cache(maxsize=None)
def values_fn(config: model_lib.TransformerConfig
              ) -> Callable[[Any, Int[Array, "N T"], Bool[Array, "N T"]], Float[Array, "N T"]]:
  """Jitted ``values(params, tokens [N, T], mask [N, T]) -> [N, T]``: the value head at
  every position of right-padded rows (``mask`` True on real tokens, the data's
  ``token_mask``), as ``train.loss_sums`` sees them."""
  model = model_lib.Transformer(config)

  @jax.jit
  def values(params, tokens, mask):
    mask = mask.astype(bool)
    return model.apply({"params": params}, tokens, model_lib.default_positions(mask), mask).values

  return values


@dataclasses.dataclass(frozen=True, eq=False)
class Critic:
  """One critic: a value head on a trunk.

  Attributes:
    kind: "value" | "prm" | "orm": what it was trained to judge.
    config: the model config of ``params`` (the policy's with a shared trunk).
    params: the model parameters (the policy's own with a shared trunk).
    shared_trunk: whether ``params`` are the policy's.
  """

  kind: str
  config: model_lib.TransformerConfig
  params: Any
  shared_trunk: bool = False

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f"Critic.kind must be one of {KINDS}, got {self.kind!r}")

  @property
  def score(self) -> CriticFn:
    """Jitted ``score(params, tokens [N, S], mask [N, S]) -> [N]`` (see ``score_fn``)."""
    return score_fn(self.config)

  def __call__(self, tokens: Int[Array, "N S"], mask: Bool[Array, "N S"]) -> Float[Array, "N"]:
    """``score`` with this critic's own parameters."""
    return self.score(self.params, tokens, mask)


def init_critic(cfg: CriticConfig, vocab_size: int, rng: jax.Array,
                policy_config: model_lib.TransformerConfig | None = None,
                policy_params: Any = None, kind: str | None = None) -> Critic:
  """A fresh critic of ``kind`` (default ``cfg.kind``).

  With ``cfg.shared_trunk`` it wraps the policy's config and parameters (the
  value head trained so far, zero at init); otherwise it builds a Transformer
  from ``cfg.model`` with a zero-initialised value head (scores 0 = "wrong").
  """
  cfg = CriticConfig.from_config(cfg)
  kind = cfg.kind if kind is None else kind
  if cfg.shared_trunk:
    if policy_config is None or policy_params is None:
      raise ValueError("init_critic: shared_trunk=True needs policy_config and policy_params")
    return Critic(kind, policy_config, policy_params, shared_trunk=True)
  model_cfg = model_lib.TransformerConfig.from_dict(
      {**dict(cfg.model), "vocab_size": vocab_size, "max_len": cfg.seq_len})
  return Critic(kind, model_cfg, model_lib.init_params(model_cfg, rng), shared_trunk=False)


def encode_for_scoring(tokenizer: Tokenizer, prompts: Sequence[str], completions: Sequence[str],
                       length: int | None = None, *, add_eos: bool = True
                       ) -> tuple[np.ndarray, np.ndarray]:
  """Rows ``BOS + prompt + completion [+ EOS]``, right-padded: the training layout.

  Use ``add_eos=True`` for finished solutions (ORM, value of a final state,
  PRM of the last step) and ``False`` for partial ones (value or PRM of a
  prefix ending at a step delimiter).

  Returns:
    ``(tokens [N, S] int32, mask [N, S] bool)`` with ``S = length`` (default:
    the longest row).
  """
  if len(prompts) != len(completions):
    raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
  if not prompts:
    raise ValueError("encode_for_scoring: no sequences")
  rows = [[tokenizer.bos_id] + tokenizer.encode(p) + tokenizer.encode(c)
          + ([tokenizer.eos_id] if add_eos else []) for p, c in zip(prompts, completions)]
  length = max(len(r) for r in rows) if length is None else length
  tokens = np.full((len(rows), length), tokenizer.pad_id, np.int32)
  mask = np.zeros((len(rows), length), bool)
  for i, row in enumerate(rows):
    if len(row) > length:
      raise data_lib.SequenceTooLongError(
          f"sequence {i} has {len(row)} tokens, more than length={length}: "
          f"{(prompts[i] + completions[i])[:100]!r}")
    tokens[i, :len(row)] = row
    mask[i, :len(row)] = True
  return tokens, mask


def fixed_batches(n: int, batch_size: int):
  """``(start, index array [batch_size])``; the last batch repeats its first index."""
  for start in range(0, n, batch_size):
    idx = np.arange(start, min(start + batch_size, n))
    yield start, np.concatenate([idx, np.full(batch_size - len(idx), idx[0])])


def score_texts(critic: Critic, tokenizer: Tokenizer, prompts: Sequence[str],
                completions: Sequence[str], *, length: int, add_eos: bool = True,
                batch_size: int = 64) -> np.ndarray:
  """Scores ``[N]`` of (prompt, completion) texts, in fixed-size batches (one compile)."""
  tokens, mask = encode_for_scoring(tokenizer, prompts, completions, length, add_eos=add_eos)
  out = np.zeros((len(tokens),), np.float32)
  for start, idx in fixed_batches(len(tokens), batch_size):
    scores = np.asarray(critic(tokens[idx], mask[idx]))
    real = min(batch_size, len(tokens) - start)
    out[start:start + real] = scores[:real]
  return out


def dataset_scores(critic: Critic, dataset: Mapping[str, np.ndarray], batch_size: int = 64
                   ) -> tuple[np.ndarray, np.ndarray]:
  """``(scores [M], targets [M])`` at every position where ``value_mask`` is set.

  ``dataset`` is one of the critic encodings (``critic_dataset``); so on an
  ORM encoding this is one score per trajectory (at EOS), on a PRM encoding
  one per step, on a value encoding one per prefix state.
  """
  tokens = np.asarray(dataset["tokens"])
  mask = data_lib.batch_token_mask(dataset)
  vmask = np.asarray(dataset["value_mask"]) > 0
  values = np.zeros(tokens.shape, np.float32)
  fn = values_fn(critic.config)
  for start, idx in fixed_batches(len(tokens), batch_size):
    real = min(batch_size, len(tokens) - start)
    values[start:start + real] = np.asarray(fn(critic.params, tokens[idx], mask[idx]))[:real]
  return values[vmask], np.asarray(dataset["value_target"], np.float32)[vmask]


def search_critics(prm: Critic | None = None, orm: Critic | None = None):
  """``(search.mcts.Critics, critic_params)`` for ``mcts.make_search``.

  The search passes one ``critic_params`` to every critic function; here it
  is ``{"prm": ..., "orm": ...}`` and each function picks its own entry, so a
  separate PRM and ORM (and the policy) can all have different parameters
  without being baked into the compiled search as constants.
  """
  params = {}

  def bind(name: str, critic: Critic | None) -> CriticFn | None:
    if critic is None:
      return None
    params[name] = critic.params
    return _bound_critic(name, critic.score)

  return mcts.Critics(prm=bind("prm", prm), orm=bind("orm", orm)), params


@functools.lru_cache(maxsize=None)
def _bound_critic(name: str, fn: CriticFn) -> CriticFn:
  """One function object per (slot, score fn), so equal critics share a compiled search."""
  return lambda p, tokens, mask: fn(p[name], tokens, mask)


# ---------------------------------------------------------------------------
# Training.


def train_critic(critic: Critic, dataset: Mapping[str, np.ndarray],
                 train_cfg: CriticTrainConfig | Any, mesh, *, ckpt_dir: str | None = None,
                 seed: int = 0, desc: str | None = None
                 ) -> tuple[Critic, list[dict[str, float]]]:
  """Regresses the critic's value head onto ``dataset``'s targets (MSE).

  Loss = ``policy_coef * NLL + 1.0 * value MSE`` through
  ``train.make_train_step``. ``policy_coef`` defaults (``None`` or < 0) to 0
  for a separate critic: its LM head is unused, only the value head and its
  trunk learn. For a shared trunk it defaults to
  ``SHARED_TRUNK_POLICY_COEF`` (0.1): the trunk is the policy's, and the
  small NLL on the dataset's policy targets (the verified-correct
  trajectories, ``critic_dataset(policy_targets=True)``) keeps the policy
  from drifting while the head learns; with no policy targets in the data
  the term is 0.

  Returns:
    The critic with trained parameters (for a shared trunk: the updated
    policy parameters too) and the per-step metrics.
  """
  if not isinstance(train_cfg, CriticTrainConfig):
    d = dict(train_cfg.to_dict() if isinstance(train_cfg, ml_collections.ConfigDict)
             else train_cfg)
    train_cfg = CriticTrainConfig(**d)
  params, history = train.fit(
      train_cfg, critic.config, dict(dataset), critic.params, mesh, ckpt_dir=ckpt_dir, seed=seed,
      value_coef=1.0, policy_coef=_policy_coef(train_cfg, critic.shared_trunk),
      desc=desc or f"critic {critic.kind}")
  return dataclasses.replace(critic, params=params), history


# ---------------------------------------------------------------------------
# Tool-augmented ORM: a calculator over the solution's arithmetic.

# Completions longer than this are not read (and score 0).
MAX_TOOL_CHARS = 4096
def check_arithmetic(completion: str, delimiter: str = "\n", strict: bool = False
                     ) -> tuple[int, int]:
  """``(checked, wrong)``: calculations found in ``completion`` and how many are wrong.

  Each line (split on ``delimiter``) that is a step ``a<op>b=c`` is checked
  with ``parsing.check_step_line`` (``strict``: a line that starts with a digit
  must be a well-formed step); every GSM8K annotation ``<<expr=result>>`` in
  a line with ``graders.check_annotation``. Anything else is not a calculation.
  Callers bound the input (``tool_orm_score`` reads at most
  ``MAX_TOOL_CHARS``); every regex has bounded quantifiers.
  """
  checked = wrong = 0
  for line in completion.split(delimiter):
    ok = parsing.check_step_line(line, strict)
    if ok is not None:
      checked += 1
      wrong += not ok
    if "<<" in line:
      line_checked, line_wrong = graders.check_calculator_annotations(line)
      checked += line_checked
      wrong += line_wrong
  return checked, wrong


def tool_orm_score(task: Task, completion: str, learned_score: float | None = None) -> float:
  """Tool-augmented ORM: 0 if any calculation is wrong, else the learned ORM.

  The calculator (``check_arithmetic``: step lines ``a op b = c`` and GSM8K
  ``<<expr=result>>`` annotations, exact arithmetic, never eval; strict for
  tasks with ``equation_steps``) vetoes a
  solution with any wrong calculation: score 0.0. Otherwise the score is
  ``learned_score`` (the learned ORM's score, clipped to ``[0, 1]``), or 1.0
  without one (calculator only). A solution with no checkable calculation
  passes the calculator. Uses no answer key: usable at test time. Texts over
  ``MAX_TOOL_CHARS`` or that are not strings score 0.0 unread.
  """
  if not isinstance(completion, str) or len(completion) > MAX_TOOL_CHARS:
    return 0.0
  _, wrong = check_arithmetic(completion, task.step_delimiter, task.equation_steps)
  if wrong:
    return 0.0
  if learned_score is None:
    return 1.0
  score = float(learned_score)
  return min(max(score, 0.0), 1.0) if math.isfinite(score) else 0.0


def tool_orm_scores(task: Task, completions: Sequence[str],
                    learned_scores: Sequence[float] | None = None) -> np.ndarray:
  """``tool_orm_score`` of each completion, ``[N]`` float32."""
  if learned_scores is not None and len(learned_scores) != len(completions):
    raise ValueError(f"{len(completions)} completions but {len(learned_scores)} scores")
  return np.array([tool_orm_score(task, c, None if learned_scores is None else learned_scores[i])
                   for i, c in enumerate(completions)], np.float32)


# ---------------------------------------------------------------------------
# Calibration (the paper's Table 8).


def calibration(scores: Sequence[float], labels: Sequence[float], *, threshold: float = 0.5,
                num_bins: int = 10) -> dict[str, float]:
  """Precision, recall and ECE of critic scores against verifier labels.

  Scores are clipped to ``[0, 1]``. A score ``>= threshold`` predicts
  "correct"; a label ``>= 0.5`` is "correct" (0/1 verifier labels, or soft MC
  labels thresholded). Precision = TP / predicted positives and recall =
  TP / actual positives (0.0 when the denominator is 0). ECE uses
  ``num_bins`` equal-width bins, bin ``b = min(floor(score * num_bins),
  num_bins - 1)``: ``sum_b (n_b / n) * |mean label_b - mean score_b|`` with
  the raw labels (so soft labels count as probabilities).

  Returns:
    ``precision, recall, ece, accuracy, brier`` (mean squared error against
    the labels) and the counts ``n, positives, predicted_positives``.
  """
  s = np.clip(np.asarray(scores, np.float64).reshape(-1), 0.0, 1.0)
  y = np.asarray(labels, np.float64).reshape(-1)
  if s.shape != y.shape:
    raise ValueError(f"{s.size} scores but {y.size} labels")
  if s.size == 0:
    raise ValueError("calibration: no scores")
  pred, pos = s >= threshold, y >= 0.5
  tp = float(np.sum(pred & pos))
  bins = np.minimum(np.floor(s * num_bins).astype(np.int64), num_bins - 1)
  ece = 0.0
  for b in range(num_bins):
    in_bin = bins == b
    if in_bin.any():
      ece += in_bin.mean() * abs(y[in_bin].mean() - s[in_bin].mean())
  return {"precision": tp / float(pred.sum()) if pred.sum() else 0.0,
          "recall": tp / float(pos.sum()) if pos.sum() else 0.0,
          "ece": float(ece), "accuracy": float(np.mean(pred == pos)),
          "brier": float(np.mean((s - y) ** 2)), "n": int(s.size),
          "positives": int(pos.sum()), "predicted_positives": int(pred.sum())}


def evaluate_critic(critic: Critic, dataset: Mapping[str, np.ndarray], *, batch_size: int = 64,
                    threshold: float = 0.5, num_bins: int = 10) -> dict[str, float]:
  """``calibration`` of a critic on an encoded held-out set, plus its raw MSE.

  The positions judged are the dataset's ``value_mask``: on
  ``critic_dataset("orm", ...)`` of held-out trajectories that is one score
  per trajectory against its verifier label (the paper's Table 8, for any
  critic kind); on a PRM encoding, one per step against its MC label.
  ``forward_passes`` counts the token positions encoded.
  """
  scores, targets = dataset_scores(critic, dataset, batch_size)
  out = calibration(scores, targets, threshold=threshold, num_bins=num_bins)
  out["mse"] = float(np.mean((scores - targets) ** 2))
  out["forward_passes"] = int(data_lib.batch_token_mask(dataset).sum())
  return out
