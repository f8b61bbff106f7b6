"""The self-improvement loop: imagine, search, criticize, improve (Algorithm 1).

Round 0 warm-starts the policy by SFT on demonstrations, trains the critics
on trajectories sampled from it (the paper then keeps them fixed), and
evaluates every decoding method. Each round ``k = 1..K`` then

1. **imagines** new prompts from seed problems (``alphallm.imagination``),
   deduplicated against the evaluation split (tasks without rewrite rules,
   GSM8K and MATH, re-use held-out train problems instead: ``held_out_prompts``);
2. **searches** them with eta-MCTS under the current policy and critics, and
   stores one trajectory per prompt (``alphallm.trajectories``): the best
   leaf by critic score, kept only if its verifier (or ORM) score is at least
   ``gamma``;
3. **improves** the policy by SFT on the kept trajectories, starting from the
   previous round's parameters (``loop.distill`` adds mctx's improved root
   policy as a weighted target, AlphaZero-style);
4. **evaluates** greedy decoding, eta-MCTS and the baselines on the held-out
   split, and checkpoints.

Resumption. Every phase writes its product atomically (prompts file,
trajectory shards, orbax checkpoints, result rows) and is skipped when that
product exists, and every random choice is a function of
``(seed, round, phase, shard)``. Rerunning the same command after a crash at
any point continues from the last completed step and produces the same
``results.json`` as an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import os
import zlib
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
import tqdm

from alphallm import critics as critics_lib
from alphallm import data
from alphallm import evaluation
from alphallm import experiment as exp
from alphallm import hf_import
from alphallm import imagination
from alphallm import io_utils
from alphallm import metrics as metrics_lib
from alphallm import model as model_lib
from alphallm import plots
from alphallm import results as results_lib
from alphallm import sampling
from alphallm import sharding
from alphallm import tools
from alphallm import train
from alphallm import trajectories as traj_lib
from alphallm.search import mcts
from alphallm.search import selection
from alphallm.tasks import Problem, Task, make_splits
from alphallm.tokenizer import Tokenizer


@dataclasses.dataclass
class Context:
  """Everything a phase needs that does not change across rounds."""

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
  prompt_len: int
  store: traj_lib.TrajectoryStore
  calculator: Any  # the in-graph step calculator critic (alphallm.tools)

  def path(self, *parts: str) -> str:
    return os.path.join(self.workdir, *parts)

  def rng(self, *tags: Any) -> jax.Array:
    """A key that depends only on the seed and the phase's tags (resumable)."""
    key = jax.random.key(self.config.seed)
    for tag in tags:
      key = jax.random.fold_in(key, zlib.crc32(str(tag).encode()) & 0x7FFFFFFF)
    return key


def build_context(config: ml_collections.ConfigDict, workdir: str) -> Context:
  """The tokenizer, tasks, splits, model config and mesh of a run (``alphallm.experiment``).

  With ``config.task.eval_knobs`` the eval problems come from that task (e.g.
  GSM8K's test split) and the demonstrations from ``config.task.knobs``'s.
  """
  tokenizer = exp.build_tokenizer(config)
  task = exp.build_task(config)
  eval_task = exp.build_eval_task(config, task)
  demos, eval_problems = make_splits(task, config.seed, config.data.num_demos,
                                     config.data.num_eval,
                                     eval_task=None if eval_task is task else eval_task)
  exp.write_problems(os.path.join(workdir, "eval_problems.jsonl"), eval_problems)
  model_cfg = exp.build_model_config(config, tokenizer)
  mesh = exp.build_mesh(config)
  # Prompts are padded to a multiple of 16 tokens so every search compiles once.
  longest = max([len(tokenizer.encode(eval_task.prompt(p))) for p in eval_problems]
                + [len(tokenizer.encode(task.prompt(p))) for p in demos]) + 1
  prompt_len = -(-(longest + 8) // 16) * 16
  return Context(config=config, workdir=workdir, task=task, eval_task=eval_task,
                 tokenizer=tokenizer, model_cfg=model_cfg, mesh=mesh, demos=demos,
                 eval_problems=eval_problems,
                 writer=metrics_lib.MetricWriter(workdir),
                 results=results_lib.Results(workdir), prompt_len=prompt_len,
                 store=traj_lib.TrajectoryStore(os.path.join(workdir, "trajectories")),
                 calculator=tools.make_calculator_critic(tokenizer))


# ---------------------------------------------------------------------------
# Round 0: warm start and critics.


def warm_start(ctx: Context):
  """Round 0's policy: SFT on the demonstrations from the initial policy.

  The initial policy is ``config.model.checkpoint``'s weights (an HF
  directory) or a random init (``experiment.initial_policy``). With
  ``config.sft.enabled = False`` (the paper's 70B runs start from the base
  model) it is returned as is.
  """
  init = exp.initial_policy(ctx.config, ctx.model_cfg, ctx.mesh)
  if not ctx.config.sft.get("enabled", True):
    exp.report("round 0: warm-start SFT disabled (config.sft.enabled=False)")
    return init
  task = ctx.task
  dataset = data.encode_examples(ctx.tokenizer, [task.prompt(p) for p in ctx.demos],
                                 [task.demonstration(p) for p in ctx.demos],
                                 ctx.config.data.seq_len,
                                 prompt_loss_weight=_prompt_loss_weight(ctx))
  return exp.run_sft(ctx.config.sft, ctx.model_cfg, dataset, init, ctx.mesh,
                     ctx.path("checkpoints", "sft_round0"), ctx.config.seed,
                     desc="sft_round0", writer=ctx.writer, min_size=_min_size(ctx))


def _prompt_loss_weight(ctx: Context) -> float:
  """``config.data.prompt_loss_weight``: SFT also learns the questions (default 0)."""
  return float(ctx.config.data.get("prompt_loss_weight", 0.0))


def _min_size(ctx: Context) -> int | None:
  """The FSDP threshold of policy SFT (None on a data-parallel mesh)."""
  return exp.fsdp_min_size(ctx.config) if train.is_fsdp_mesh(ctx.mesh) else None


def train_critics(ctx: Context, policy_params) -> dict[str, critics_lib.Critic]:
  """Trains the critics named in ``config.critics.kinds`` on policy samples.

  Trajectories are sampled from the round-0 policy on the demonstration
  prompts and labelled by the verifier (training data only). Calibration is
  measured on samples for held-out problems and written to
  ``critics.json`` (the paper's Table 8 analog).
  """
  ccfg = ctx.config.critics
  if not ccfg.kinds:
    return {}
  base = critics_lib.CriticConfig.from_config(ccfg.critic)
  out: dict[str, critics_lib.Critic] = {}
  report_path = ctx.path("critics.json")
  report = io_utils.read_json(report_path) if os.path.exists(report_path) else {}
  critic_data = None
  for kind in ccfg.kinds:
    critic = init_critic(ctx, base, kind, policy_params)
    ckpt_dir = ctx.path("checkpoints", f"critic_{kind}")
    if critic_data is None and not _finished(ckpt_dir, base.train.steps):
      sampler = critics_lib.PolicySampler.from_config(policy_params, ctx.model_cfg, ctx.tokenizer,
                                                      base.collect, desc="critic data")
      problems = fresh_problems(ctx, ccfg.num_problems, tag="critic_data")
      critic_data = critics_lib.collect_critic_data(ctx.task, problems, sampler,
                                                    ctx.rng("critic_data"), base.collect)
    dataset = None
    if critic_data is not None:
      dataset = critics_lib.critic_dataset(
          kind, ctx.tokenizer, critic_data, base.seq_len, delimiter=ctx.task.step_delimiter,
          prm_label=base.prm_label, prm_threshold=base.prm_threshold)
    else:
      dataset = _empty_value_dataset(base.seq_len)
    critic, _ = critics_lib.train_critic(critic, dataset, base.train, ctx.mesh, ckpt_dir=ckpt_dir,
                                         seed=ctx.config.seed, desc=f"critic_{kind}")
    out[kind] = critic
    if kind not in report:
      report[kind] = _calibrate(ctx, critic, policy_params, base)
      io_utils.atomic_write_json(report_path, report)
      exp.report("critic %s: precision %.2f recall %.2f ECE %.3f", kind,
                 report[kind]["precision"], report[kind]["recall"], report[kind]["ece"])
  return out


def init_critic(ctx: Context, base: critics_lib.CriticConfig, kind: str,
                policy_params) -> critics_lib.Critic:
  """A fresh critic of ``kind``: from ``config.critics.checkpoint`` when set.

  With a checkpoint (an HF directory, e.g. Llama-2-13b for the 70B runs) the
  critic's trunk is that model and its value head fresh; the architecture
  comes from the checkpoint's config.json, so any key of
  ``config.critics.critic.model`` other than ``dtype``/``param_dtype`` must
  agree with it. Otherwise ``critics.init_critic`` builds it from
  ``critic.model`` (or wraps the policy with ``shared_trunk``).
  """
  ckpt = ctx.config.critics.get("checkpoint", "")
  if not ckpt:
    return critics_lib.init_critic(base, ctx.tokenizer.vocab_size, ctx.rng("critic_init", kind),
                                   ctx.model_cfg, policy_params, kind=kind)
  model = dict(base.model)
  dtype = model.pop("dtype", "float32")
  param_dtype = model.pop("param_dtype", None)
  file = os.path.join(ckpt, hf_import.CONFIG_FILE)
  cfg = hf_import.config_from_hf(hf_import.read_hf_config(ckpt), dtype=dtype,
                                 param_dtype=param_dtype)
  for key, value in sorted(model.items()):
    if not hasattr(cfg, key) or getattr(cfg, key) != value:
      raise ValueError(f"config.critics.critic.model.{key}={value!r} disagrees with {file} "
                       f"(config.critics.checkpoint), which gives {getattr(cfg, key, None)!r}; "
                       "remove the key or make it match")
  if cfg.vocab_size < ctx.tokenizer.vocab_size:
    raise ValueError(f"{file}: vocab_size={cfg.vocab_size} is smaller than the "
                     f"{ctx.tokenizer.vocab_size} ids of the policy's tokenizer")
  if base.seq_len > cfg.max_len:
    raise ValueError(f"config.critics.critic.seq_len={base.seq_len} exceeds {file}'s "
                     f"max_position_embeddings={cfg.max_len}")
  # train.fit shards a critic with the default threshold on an FSDP mesh: load it so. Its
  # vocabulary is cut to the tokenizer's, as the policy's (experiment.build_model_config).
  placement = sharding.hf_param_sharding(ctx.mesh) if train.is_fsdp_mesh(ctx.mesh) else None
  cfg, params = hf_import.load_hf_checkpoint(ckpt, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
                                             sharding=placement,
                                             vocab_size=ctx.tokenizer.vocab_size)
  return critics_lib.Critic(kind, cfg, params, shared_trunk=False)


def fresh_problems(ctx: Context, num: int, tag: str,
                   exclude: set[str] | frozenset[str] = frozenset()) -> list[Problem]:
  """Problems outside the demonstrations, the eval split and ``exclude``.

  Critic data must come from prompts the policy was not fine-tuned on: on its
  own demonstrations a warm-started policy is nearly always right, and a
  critic trained there learns only "correct".
  """
  taken = ({p.question for p in ctx.demos} | {p.question for p in ctx.eval_problems}
           | set(exclude))
  out: list[Problem] = []
  for attempt in range(20):
    seed = zlib.crc32(f"{ctx.config.seed}/{tag}/{attempt}".encode()) & 0x7FFFFFFF
    for p in ctx.task.generate(seed, num):
      if p.question not in taken:
        taken.add(p.question)
        out.append(p)
        if len(out) == num:
          return out
  raise ValueError(f"task {ctx.task.name!r} cannot produce {num} problems outside the "
                   f"demonstrations and eval split (got {len(out)}) for {tag}")


def _finished(ckpt_dir: str, steps: int) -> bool:
  if not os.path.isdir(ckpt_dir):
    return False
  from alphallm import checkpoint  # pylint: disable=import-outside-toplevel
  ckpt = checkpoint.Checkpointer(ckpt_dir)
  latest = ckpt.latest_step()
  ckpt.close()
  return latest is not None and latest >= steps


def _empty_value_dataset(seq_len: int) -> dict[str, np.ndarray]:
  """A placeholder dataset for a critic whose training already finished (never read)."""
  z = np.zeros((1, seq_len), np.float32)
  return {"tokens": np.zeros((1, seq_len), np.int32), "token_mask": z.astype(bool),
          "loss_mask": z, "value_target": z, "value_mask": z}


def _calibrate(ctx: Context, critic, policy_params, base) -> dict[str, float]:
  """Precision / recall / ECE of ``critic`` on policy samples for held-out problems."""
  sampler = critics_lib.PolicySampler.from_config(policy_params, ctx.model_cfg, ctx.tokenizer,
                                                  base.collect, desc="critic calibration")
  problems = ctx.eval_problems[:ctx.config.critics.num_calibration_problems]
  held_out = critics_lib.collect_critic_data(
      ctx.eval_task, problems, sampler, ctx.rng("critic_calibration"),
      dataclasses.replace(base.collect, mc_rollouts=0, num_samples=2))
  # One judgement per trajectory (its final state) against the verifier's label.
  dataset = critics_lib.critic_dataset("orm", ctx.tokenizer, held_out, base.seq_len)
  return critics_lib.evaluate_critic(critic, dataset)


# ---------------------------------------------------------------------------
# Decoding methods with search.


def search_critics(ctx: Context, critics: dict[str, critics_lib.Critic]):
  """``(mcts.Critics, critic_params)``: the PRM and ORM slots of the node score.

  A trained "prm" critic fills the PRM slot and an "orm" critic the ORM
  slot; a "value" critic fills whichever slot has no dedicated critic. With
  ``config.critics.calculator`` both slots are tool-augmented: the in-graph
  step calculator (``alphallm.tools``) multiplies the learned score, so a
  state with a wrong arithmetic step scores 0.
  """
  value = critics.get("value")
  crit, params = critics_lib.search_critics(prm=critics.get("prm", value),
                                            orm=critics.get("orm", value))
  if ctx.config.critics.get("calculator", False):
    crit = mcts.Critics(prm=_tool_augmented(crit.prm, ctx.calculator),
                        orm=_tool_augmented(crit.orm, ctx.calculator))
  return crit, params


@functools.lru_cache(maxsize=None)
def _tool_augmented(fn, calculator):
  """``calculator * fn`` (the calculator alone when there is no learned critic)."""
  if fn is None:
    return calculator
  return lambda p, tokens, mask: calculator(p, tokens, mask) * fn(p, tokens, mask)


def make_search(ctx: Context, critics, search_cfg: ml_collections.ConfigDict | None = None):
  """The jitted search over this context's model and task."""
  cfg = search_cfg if search_cfg is not None else ctx.config.search
  crit, crit_params = search_critics(ctx, critics)
  tok = ctx.tokenizer
  fn = mcts.make_search(ctx.model_cfg, cfg, tok.eos_id, tok.token_ids_ending_with(
      ctx.task.step_delimiter), crit, answer_prefix_ids=tok.encode(ctx.task.answer_prefix),
      pad_id=tok.pad_id, bos_id=tok.bos_id)
  return fn, crit_params


def decoding_methods(ctx: Context, critics) -> dict[str, tuple[Any, Any]]:
  """Baselines from ``config.eval.methods`` plus ``mcts`` when listed."""
  names = list(ctx.config.eval.methods)
  base = [n for n in names if n != "mcts"]
  cfg = ctx.config.copy_and_resolve_references()
  with cfg.unlocked():
    cfg.eval.methods = tuple(base)
  methods = exp.decoding_methods(cfg, ctx.model_cfg, ctx.tokenizer)
  if "mcts" in names:
    methods["mcts"] = (make_search_decoder(ctx, critics), None)
  return methods


def make_search_decoder(ctx: Context, critics, search_cfg=None):
  """eta-MCTS with its answer selection as a ``decoding.DecodeFn`` (prompts only)."""
  cfg = mcts.SearchConfig.from_config(search_cfg if search_cfg is not None
                                      else ctx.config.search)
  crit, crit_params = search_critics(ctx, critics)
  tok = ctx.tokenizer
  return selection.make_search_decoder(
      ctx.model_cfg, cfg, tok.eos_id, tok.token_ids_ending_with(ctx.task.step_delimiter), crit,
      tokenizer=tok, extract_answer=ctx.task.extract_answer,
      answer_prefix_ids=tok.encode(ctx.task.answer_prefix), critic_params=crit_params,
      pad_id=tok.pad_id, bos_id=tok.bos_id)


def evaluate_round(ctx: Context, round_: int, params, critics) -> None:
  """Adds this round's row for every decoding method not yet evaluated."""
  done = {(r["round"], r["decoding"], r.get("seed")) for r in ctx.results.rows}
  ev = ctx.config.eval
  if all((round_, name, ctx.config.seed) in done for name in ev.methods):
    return  # a resumed run: build no decoder
  params = exp.cast_for_search(ctx.config, params)
  for name, (fn, select) in decoding_methods(ctx, critics).items():
    if (round_, name, ctx.config.seed) in done:
      continue
    batch = ev.search_batch_size if name == "mcts" else ev.batch_size
    row, _ = evaluation.evaluate(fn, params, ctx.eval_task, ctx.tokenizer, ctx.eval_problems,
                                 name=name, round_=round_, batch_size=batch,
                                 prompt_len=ctx.prompt_len, rng=ctx.rng("eval", round_, name),
                                 seed=ctx.config.seed, select=select)
    # Metrics first: a row in results.json is never evaluated again on resume.
    ctx.writer.write(f"eval/{name}", round_, {k: row[k] for k in (
        "accuracy", "forward_passes_per_problem", "tokens_per_problem")})
    ctx.writer.flush()
    ctx.results.add(row)
    exp.report("round %d %-20s accuracy %.3f  (%.1f forward passes/problem)", round_, name,
               row["accuracy"], row["forward_passes_per_problem"])
  ctx.writer.flush()


# ---------------------------------------------------------------------------
# Rounds 1..K.


def round_size(config: ml_collections.ConfigDict, round_: int) -> int:
  """Prompts of round ``round_``: ``loop.round_prompts[round_ - 1]``, else ``prompts_per_round``."""
  sizes = tuple(config.loop.get("round_prompts", ()) or ())
  return int(sizes[round_ - 1]) if sizes else int(config.loop.prompts_per_round)


def imagine_round(ctx: Context, round_: int, params) -> list[Problem]:
  """This round's synthesized prompts (``round{k}/prompts.jsonl``, written once).

  The sources of ``config.loop.imagination_mix``: the rule-based rewrites of
  ``alphallm.imagination`` and questions written by the current policy
  (``params``; ``question_sampler``) for the synthetic tasks, or
  ``"held_out"`` for tasks without rewrite rules (GSM8K, MATH), see
  ``held_out_prompts``.
  """
  path = ctx.path(f"round{round_}", "prompts.jsonl")
  if os.path.exists(path):
    return _read_problems(path)
  lc = ctx.config.loop
  num = round_size(ctx.config, round_)
  mix = dict(lc.imagination_mix)
  if mix.get(exp.HELD_OUT_SOURCE, 0) > 0:
    problems, stats = held_out_prompts(ctx, round_, num)
  else:
    sampler = question_sampler(ctx, round_, params) if mix.get("policy", 0) > 0 else None
    problems, imagined = imagination.imagine_with_stats(
        ctx.task, ctx.demos, num, seed=ctx.config.seed * 1000 + round_,
        exclude={p.question for p in ctx.eval_problems}, mix=mix, sample_questions=sampler,
        policy_batch_size=lc.search_batch_size)
    stats = imagined.to_json()
  if not problems:
    raise RuntimeError(f"imagination produced no prompts in round {round_}: {stats}")
  exp.write_problems(path, problems)
  io_utils.atomic_write_json(ctx.path(f"round{round_}", "imagination.json"), stats)
  exp.report("round %d: imagined %d prompts", round_, len(problems))
  return problems


def question_sampler(ctx: Context, round_: int, params) -> imagination.SampleQuestions:
  """The policy as imagination's question writer: prefixes -> continuations.

  Each call samples at ``config.loop.imagination_temperature`` (default 1.0)
  with a key drawn from ``(seed, round, call index)``, so a round's prompts
  are a deterministic function of the seed. The text is untrusted:
  ``imagination.policy_candidates`` parses it with the task's bounded parser
  and establishes each answer with the task's solver.
  """
  sampler = critics_lib.PolicySampler(
      params, ctx.model_cfg, ctx.tokenizer, max_new_tokens=ctx.config.data.seq_len // 2,
      batch_size=ctx.config.loop.search_batch_size, desc=f"imagine round {round_}")
  temperature = float(ctx.config.loop.get("imagination_temperature", 1.0))
  calls = itertools.count()

  def sample(prefixes: list[str]) -> list[str]:
    return sampler(prefixes, ctx.rng("imagine_policy", round_, next(calls)), temperature)

  return sample


def held_out_prompts(ctx: Context, round_: int, num: int
                     ) -> tuple[list[Problem], dict[str, Any]]:
  """``num`` train-split problems no phase has used: imagination without rewrite rules.

  GSM8K and MATH have no rule-based perturbation or backward rewrite
  (``alphallm.imagination`` registers the synthetic tasks only), and the
  policy source needs a solver to establish a new question's answer. For
  them each round searches real train-split questions instead, drawn by
  ``(seed, round)`` outside the demonstrations, the eval split, the critic
  data and earlier rounds' prompts: rejection-sampling fine-tuning on held-out
  questions, not the paper's synthesized ones. Each keeps its answer key, so
  ``loop.filter_by = "verifier"`` works too.
  """
  taken: set[str] = set()
  for r in range(1, round_):
    prev = ctx.path(f"round{r}", "prompts.jsonl")
    if os.path.exists(prev):
      taken |= {p.question for p in _read_problems(prev)}
  if ctx.config.critics.kinds:
    taken |= {p.question for p in fresh_problems(ctx, ctx.config.critics.num_problems,
                                                 tag="critic_data")}
  try:
    problems = fresh_problems(ctx, num, tag=f"round{round_}_prompts", exclude=taken)
  except ValueError as e:
    raise ValueError(
        f"round {round_}: config.loop.imagination_mix={exp.HELD_OUT_SOURCE!r} needs {num} "
        f"train problems outside the {len(ctx.demos)} demonstrations (config.data.num_demos), "
        f"the eval split, the critic data and {len(taken)} earlier prompts: {e}") from e
  origin = {"source": exp.HELD_OUT_SOURCE, "parent": None}
  problems = [dataclasses.replace(p, data={**p.data, "origin": origin}) for p in problems]
  stats = {"requested": num, "quotas": {exp.HELD_OUT_SOURCE: num},
           "produced": {exp.HELD_OUT_SOURCE: len(problems)},
           "attempts": {exp.HELD_OUT_SOURCE: len(problems)}, "rejected": {},
           "shortfall": num - len(problems)}
  return problems, stats


def _read_problems(path: str) -> list[Problem]:
  out = []
  with open(path, encoding="utf-8") as f:
    for lineno, line in enumerate(f, 1):
      try:
        out.append(Problem.from_json(json.loads(line)))
      except (json.JSONDecodeError, ValueError, TypeError) as e:  # TypeError: not an object
        raise ValueError(f"{path}:{lineno}: malformed problem record: {e}") from e
  if not out:
    raise ValueError(f"{path}: no problems")
  return out


def search_round(ctx: Context, round_: int, params, critics, problems: Sequence[Problem]
                 ) -> list[dict[str, Any]]:
  """Searches every prompt, one trajectory shard per search batch. Resumable per shard."""
  lc = ctx.config.loop
  bs = lc.search_batch_size
  shards = [list(problems[i:i + bs]) for i in range(0, len(problems), bs)]
  missing = ctx.store.missing_shards(round_, len(shards))
  if missing:
    search, crit_params = make_search(ctx, critics)
    params = exp.cast_for_search(ctx.config, params)
    for i in tqdm.tqdm(missing, desc=f"search round {round_}", disable=None):
      records = _search_shard(ctx, round_, i, params, search, crit_params, shards[i])
      ctx.store.write_shard(round_, i, records)
  records = ctx.store.records(round_)
  kept = [r for r in records if r["final"]["kept"]]
  ctx.writer.write(f"search_round{round_}", round_, {
      "prompts": len(records), "kept": len(kept),
      "kept_fraction": len(kept) / max(len(records), 1),
      "forward_passes_per_prompt": np.mean([r["compute"]["forward_passes"] for r in records])})
  exp.report("round %d: searched %d prompts, kept %d trajectories (gamma %.2f)", round_,
             len(records), len(kept), lc.gamma)
  return records


def _search_shard(ctx: Context, round_: int, shard: int, params, search, crit_params,
                  problems: list[Problem]) -> list[dict[str, Any]]:
  """Searches one batch (padded to the fixed batch size) and builds its records."""
  lc, task, tok = ctx.config.loop, ctx.task, ctx.tokenizer
  prompts = [task.prompt(p) for p in problems]
  padded = prompts + [prompts[0]] * (lc.search_batch_size - len(prompts))
  ids, mask = sampling.encode_prompts(tok, padded, length=ctx.prompt_len)
  # Same argument list as the decoder's call, so the compiled search is reused.
  out = search(params, ids, mask, ctx.rng("search", round_, shard), crit_params, None)
  t = selection.TreeArrays(out)
  root = jax.device_get((out.tree.embeddings.cand_tokens[:, 0], out.tree.embeddings.cand_len[:, 0],
                         out.tree.embeddings.child_valid[:, 0]))
  nodes = selection.select_nodes(t, lc.select, tokenizer=tok, extract_answer=task.extract_answer)
  tokens, lengths, terminal = selection.node_completions(t, nodes)
  records = []
  for b, problem in enumerate(problems):
    completion = tok.decode(tokens[b, :lengths[b]])
    verified = bool(task.verify(problem, completion)) if terminal[b] else False
    critic_score = float(t.score[b, nodes[b]])
    orm = float(t.orm[b, nodes[b]]) if t.has_orm[b, nodes[b]] else None
    signal = (1.0 if verified else 0.0) if lc.filter_by == "verifier" else (orm or 0.0)
    kept = bool(terminal[b]) and signal >= lc.gamma
    records.append(traj_lib.make_record(
        round_index=round_, task=task.name, problem=problem, prompt=prompts[b],
        completion=completion, path=traj_lib.path_from_tree(t, b, int(nodes[b]), tok),
        selection=lc.select, critic_score=critic_score, orm_score=orm, verified=verified,
        kept=kept, prompt_tokens=int(mask[b].sum()), completion_tokens=int(lengths[b]),
        generated_tokens=float(out.tokens[b]), forward_passes=float(out.forward_passes[b]),
        extra={"action_weights": np.asarray(out.action_weights[b]).tolist(),
               "root_options": _root_options(*(x[b] for x in root), tok)}))
  return records


def _root_options(cand_tokens: np.ndarray, cand_len: np.ndarray, valid: np.ndarray,
                  tok: Tokenizer) -> list[str | None]:
  """Text of each root action's option (None where masked), for distillation.

  Read from the root's candidates (``cand_tokens [A, O]``, ``cand_len [A]``,
  ``valid [A]``), so an action the search never expanded, which still has
  weight in mctx's improved policy, keeps its text.
  """
  return [tok.decode(cand_tokens[a, :cand_len[a]]) if valid[a] else None
          for a in range(cand_tokens.shape[0])]


def improve_round(ctx: Context, round_: int, prev_params) -> Any:
  """SFT from the previous round's policy on the kept trajectories."""
  lc, task = ctx.config.loop, ctx.task
  rounds = range(1, round_ + 1) if lc.cumulative else [round_]
  prompts, completions = [], []
  for r in rounds:
    for rec in ctx.store.records(r):
      if rec["final"]["kept"]:
        prompts.append(rec["prompt"])
        completions.append(rec["completion"])
  if lc.include_demos:
    prompts += [task.prompt(p) for p in ctx.demos]
    completions += [task.demonstration(p) for p in ctx.demos]
  if not prompts:
    exp.report("round %d: no trajectory kept and no demonstrations: policy unchanged", round_)
    return prev_params
  dataset = data.encode_examples(ctx.tokenizer, prompts, completions, ctx.config.data.seq_len,
                                 prompt_loss_weight=_prompt_loss_weight(ctx))
  if lc.distill:
    dataset = _concat(dataset, _distillation_dataset(ctx, round_))
  return exp.run_sft(ctx.config.loop.sft, ctx.model_cfg, dataset, _copy(prev_params), ctx.mesh,
                     ctx.path("checkpoints", f"sft_round{round_}"),
                     ctx.config.seed + round_, desc=f"sft_round{round_}", writer=ctx.writer,
                     min_size=_min_size(ctx))


def _distillation_dataset(ctx: Context, round_: int) -> dict[str, np.ndarray]:
  """Root options weighted by mctx's improved policy (``action_weights``).

  Each root option ``o_i`` of a searched prompt is a target whose per-token
  loss weight is ``action_weights_i``: the cross-entropy of the policy's
  option distribution against the improved policy, AlphaZero-style.
  """
  prompts, options, weights = [], [], []
  for rec in ctx.store.records(round_):
    extra = rec.get("extra", {})
    for option, w in zip(extra.get("root_options", []), extra.get("action_weights", [])):
      if option and w > 1e-3:
        prompts.append(rec["prompt"])
        options.append(option)
        weights.append(float(w))
  if not prompts:
    return {}
  ds = data.encode_examples(ctx.tokenizer, prompts, options, ctx.config.data.seq_len,
                            append_eos=False)
  ds["loss_mask"] = ds["loss_mask"] * np.asarray(weights, np.float32)[:, None] \
      * ctx.config.loop.distill_weight
  return ds


def _concat(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  if not b:
    return a
  return {k: np.concatenate([a[k], b[k]]) for k in a}


def _copy(params):
  """The train step donates its input; keep the caller's parameters alive."""
  return jax.tree.map(lambda x: x.copy(), params)


def _on_mesh(ctx: Context, params):
  """``params`` placed on the mesh for search and decoding, whether just trained or restored.

  Replicated on a data-parallel mesh. On an FSDP mesh they stay sharded by
  the FSDP rule (``config.sharding.min_size``), so no device holds a whole
  model: the jitted search and decoders are then partitioned by GSPMD, which
  all-gathers each weight where it is used.

  Training leaves parameters replicated on ``ctx.mesh``, a restored checkpoint
  on one device; a resumed run mixes both (e.g. restored critics, a policy
  whose SFT resumed), which jitted search rejects. One placement also keeps
  a resumed run bit-identical to an uninterrupted one.
  """
  if train.is_fsdp_mesh(ctx.mesh):
    return sharding.shard_params(params, ctx.mesh, exp.fsdp_min_size(ctx.config))
  return train.replicate(params, ctx.mesh)


# ---------------------------------------------------------------------------
# The whole loop.


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Round 0, then ``config.loop.rounds`` rounds of self-improvement."""
  ctx = build_context(config, workdir)
  exp.report("task %s: %d demonstrations, %d eval problems; model %d params on %d devices "
             "(%s, mesh %s)", ctx.task.name, len(ctx.demos), len(ctx.eval_problems),
             ctx.model_cfg.num_params(), ctx.mesh.size, exp.sharding_strategy(config),
             dict(ctx.mesh.shape))
  params = _on_mesh(ctx, warm_start(ctx))
  critics = {kind: dataclasses.replace(c, params=_on_mesh(ctx, c.params))
             for kind, c in train_critics(ctx, params).items()}
  if config.critics.kinds and config.critics.critic.shared_trunk:
    params = next(iter(critics.values())).params
  evaluate_round(ctx, 0, params, critics)
  for k in range(1, config.loop.rounds + 1):
    problems = imagine_round(ctx, k, params)
    search_round(ctx, k, params, critics, problems)
    params = _on_mesh(ctx, improve_round(ctx, k, params))
    evaluate_round(ctx, k, params, critics)
    _round_summary(ctx, k)
  ctx.writer.close()
  if ctx.results.rows:  # accuracy vs round and vs forward passes, linked from results.md
    plots.write_plots(workdir)
  return {"rows": ctx.results.rows}


def _round_summary(ctx: Context, round_: int) -> None:
  rows = {r["decoding"]: r["accuracy"] for r in ctx.results.rows if r["round"] == round_}
  prev = {r["decoding"]: r["accuracy"] for r in ctx.results.rows if r["round"] == round_ - 1}
  parts = [f"{k} {100 * v:.1f}% ({100 * (v - prev.get(k, v)):+.1f})" for k, v in rows.items()]
  exp.report("round %d summary: %s", round_, "; ".join(parts))
