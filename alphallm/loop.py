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
3. **collects** the trajectories kept so far into SFT rows (``collect``);
4. **improves** the policy by SFT on them, starting from the previous round's
   parameters (``loop.distill`` adds mctx's improved root policy as a
   weighted target, AlphaZero-style; ``alphallm.improve``);
5. **evaluates** greedy decoding, eta-MCTS and the baselines on the held-out
   split (``alphallm.methods``), and checkpoints.

The parts live in their own modules (``alphallm.builders`` builds the
``Context``; ``critic_lifecycle``, ``imagination``, ``methods``, ``improve``);
this module only sequences them and never imports back up.

Resumption. Every phase writes its product atomically (prompts file,
trajectory shards, orbax checkpoints, result rows) and is skipped when that
product exists, and every random choice is a function of
``(seed, round, phase, shard)``. Rerunning the same command after a crash at
any point continues from the last completed step and produces the same
``results.json`` as an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

from alphallm import builders
from alphallm import critic_data
from alphallm import critic_lifecycle
from alphallm import critics as critics_lib
from alphallm import data
from alphallm import evaluation
from alphallm import imagination
from alphallm import improve
from alphallm import io_utils
from alphallm import methods
from alphallm import plots
from alphallm import progress
from alphallm import sampling
from alphallm import trajectories as traj_lib
from alphallm import workdir as workdir_lib
from alphallm.context import Context
from alphallm.search import selection
from alphallm.tasks import Problem
from alphallm.tokenizer import Tokenizer

HELD_OUT_SOURCE = "held_out"


# ---------------------------------------------------------------------------
# Round 0: warm start, critics.


def warm_start(ctx: Context):
  """Round 0's policy: SFT on the demonstrations from the initial policy.

  The initial policy is ``config.model.checkpoint``'s weights (an HF
  directory) or a random init (``builders.initial_policy``). With
  ``config.sft.enabled = False`` (the paper's 70B runs start from the base
  model) it is returned as is.
  """
  init = builders.initial_policy(ctx.config, ctx.model_cfg, ctx.mesh)
  if not ctx.config.sft.enabled:
    progress.report("round 0: warm-start SFT disabled (config.sft.enabled=False)")
    return init
  task = ctx.task
  dataset = data.encode_examples(ctx.tokenizer, [task.prompt(p) for p in ctx.demos],
                                 [task.demonstration(p) for p in ctx.demos],
                                 ctx.config.data.seq_len,
                                 prompt_loss_weight=ctx.config.data.prompt_loss_weight)
  return improve.run_sft(ctx.config.sft, ctx.model_cfg, dataset, init, ctx.mesh,
                         ctx.path("checkpoints", "sft_round0"), ctx.config.seed,
                         desc="sft_round0", writer=ctx.writer, min_size=ctx.fsdp_min_size)


def train_critics(ctx: Context, params) -> dict[str, critics_lib.Critic]:
  """Criticizing: the critics of ``config.critics.kinds``, placed on the mesh."""
  return {kind: dataclasses.replace(c, params=builders.on_mesh(ctx, c.params))
          for kind, c in critic_lifecycle.train_critics(ctx, params).items()}


# ---------------------------------------------------------------------------
# Rounds 1..K: imagine.


def round_size(config: ml_collections.ConfigDict, round_: int) -> int:
  """Prompts of round ``round_``: ``loop.round_prompts[round_ - 1]``, else ``prompts_per_round``."""
  sizes = tuple(config.loop.round_prompts)
  return int(sizes[round_ - 1]) if sizes else int(config.loop.prompts_per_round)


def imagine(ctx: Context, round_: int, params) -> list[Problem]:
  """This round's synthesized prompts (``round{k}/prompts.jsonl``, written once).

  The sources of ``config.loop.imagination_mix``: the rule-based rewrites of
  ``alphallm.imagination`` and questions written by the current policy
  (``params``; ``question_sampler``) for tasks that register rules, or
  ``"held_out"`` (the default, for any task): problems no phase has used, see
  ``held_out_prompts``. Done once: an existing prompts file is read (a
  malformed one is an error naming file and line) and the phase is redone only
  when its record (``workdir.mark_phase_done``) is missing or its outputs changed.
  """
  path = ctx.path(f"round{round_}", "prompts.jsonl")
  stats_path = ctx.path(f"round{round_}", "imagination.json")
  phase = f"round{round_}/imagine"
  if os.path.exists(path):
    problems = builders.read_problems(path)  # a malformed file is named (file:line)
    if workdir_lib.phase_done(ctx.workdir, phase):
      return problems
  lc = ctx.config.loop
  num = round_size(ctx.config, round_)
  mix = dict(lc.imagination_mix)
  if mix.get(HELD_OUT_SOURCE, 0) > 0:
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
  builders.write_problems(path, problems)
  io_utils.atomic_write_json(stats_path, stats)
  workdir_lib.mark_phase_done(ctx.workdir, phase, [path, stats_path])
  progress.report("round %d: imagined %d prompts", round_, len(problems))
  return problems


def question_sampler(ctx: Context, round_: int, params) -> imagination.SampleQuestions:
  """The policy as imagination's question writer: prefixes -> continuations.

  Each call samples at ``config.loop.imagination_temperature`` (default 1.0)
  with a key drawn from ``(seed, round, call index)``, so a round's prompts
  are a deterministic function of the seed. The text is untrusted:
  ``imagination.policy_candidates`` parses it with the task's bounded parser
  and establishes each answer with the task's solver.
  """
  sampler = critic_data.PolicySampler(
      params, ctx.model_cfg, ctx.tokenizer, max_new_tokens=ctx.config.data.seq_len // 2,
      batch_size=ctx.config.loop.search_batch_size, desc=f"imagine round {round_}")
  temperature = float(ctx.config.loop.imagination_temperature)
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
      taken |= {p.question for p in builders.read_problems(prev)}
  if ctx.config.critics.kinds:
    taken |= {p.question for p in ctx.fresh_problems(ctx.config.critics.num_problems,
                                                 tag="critic_data")}
  try:
    problems = ctx.fresh_problems(num, tag=f"round{round_}_prompts", exclude=taken)
  except ValueError as e:
    raise ValueError(
        f"round {round_}: config.loop.imagination_mix={HELD_OUT_SOURCE!r} needs {num} "
        f"train problems outside the {len(ctx.demos)} demonstrations (config.data.num_demos), "
        f"the eval split, the critic data and {len(taken)} earlier prompts: {e}") from e
  origin = {"source": HELD_OUT_SOURCE, "parent": None}
  problems = [dataclasses.replace(p, data={**p.data, "origin": origin}) for p in problems]
  stats = {"requested": num, "quotas": {HELD_OUT_SOURCE: num},
           "produced": {HELD_OUT_SOURCE: len(problems)},
           "attempts": {HELD_OUT_SOURCE: len(problems)}, "rejected": {},
           "shortfall": num - len(problems)}
  return problems, stats


# ---------------------------------------------------------------------------
# Search.


def search(ctx: Context, round_: int, params, critics, problems: Sequence[Problem]
                 ) -> list[dict[str, Any]]:
  """Searches every prompt, one trajectory shard per search batch. Resumable per shard."""
  lc = ctx.config.loop
  bs = lc.search_batch_size
  shards = [list(problems[i:i + bs]) for i in range(0, len(problems), bs)]
  missing = ctx.store.missing_shards(round_, len(shards))
  if missing:
    search_fn, crit_params = methods.build_search(ctx, critics)
    params = builders.cast_for_search(ctx.config, params)
    for i in progress.bar(missing, desc=f"search round {round_}"):
      records = _search_shard(ctx, round_, i, params, search_fn, crit_params, shards[i])
      ctx.store.write_shard(round_, i, records)
  manifest = ctx.search_manifest(round_)
  if os.path.exists(manifest):
    traj_lib.verify_manifest(manifest)  # a regenerated shard that differs is named
  else:
    ctx.store.write_manifest(manifest, [round_], phase=f"search_round{round_}")
  records = traj_lib.read_manifest_records(manifest)
  kept = [r for r in records if r["final"]["kept"]]
  ctx.writer.write(f"search_round{round_}", round_, {
      "prompts": len(records), "kept": len(kept),
      "kept_fraction": len(kept) / max(len(records), 1),
      "forward_passes_per_prompt": np.mean([r["compute"]["forward_passes"] for r in records])})
  progress.report("round %d: searched %d prompts, kept %d trajectories (gamma %.2f)", round_,
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


# ---------------------------------------------------------------------------
# Collect, improve, evaluate.


def collect(ctx: Context, round_: int) -> dict[str, np.ndarray] | None:
  """Collect: the SFT rows round ``round_`` trains on (``improve.round_dataset``)."""
  return improve.round_dataset(ctx, round_)


def improve_policy(ctx: Context, round_: int, prev_params, dataset) -> Any:
  """Improve: SFT from the previous round's policy on the collected rows."""
  if dataset is None:
    progress.report("round %d: no trajectory kept and no demonstrations: policy unchanged",
                    round_)
    return prev_params
  return improve.run_sft(ctx.config.loop.sft, ctx.model_cfg, dataset,
                         improve.copy_params(prev_params), ctx.mesh,
                         ctx.path("checkpoints", f"sft_round{round_}"),
                         ctx.config.seed + round_, desc=f"sft_round{round_}",
                         writer=ctx.writer, min_size=ctx.fsdp_min_size)


def evaluate(ctx: Context, round_: int, params, critics) -> None:
  """Evaluate: adds this round's row for every decoding method not yet evaluated."""
  done = {(r["round"], r["decoding"], r.get("seed")) for r in ctx.results.rows}
  ev = ctx.config.eval
  if all((round_, name, ctx.config.seed) in done for name in ev.methods):
    return  # a resumed run: build no decoder
  params = builders.cast_for_search(ctx.config, params)
  for name, (fn, select) in methods.build_all(ctx, critics).items():
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
    progress.report("round %d %-20s accuracy %.3f  (%.1f forward passes/problem)", round_, name,
                    row["accuracy"], row["forward_passes_per_problem"])
  ctx.writer.flush()


# ---------------------------------------------------------------------------
# Algorithm 1.


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Round 0, then ``config.loop.rounds`` rounds of self-improvement."""
  ctx = builders.build_context(config, workdir)
  progress.report("task %s: %d demonstrations, %d eval problems; model %d params on %d devices "
                  "(%s, mesh %s)", ctx.task.name, len(ctx.demos), len(ctx.eval_problems),
                  ctx.model_cfg.num_params(), ctx.mesh.size, config.sharding.strategy,
                  dict(ctx.mesh.shape))
  params = builders.on_mesh(ctx, warm_start(ctx))
  critics = train_critics(ctx, params)
  if config.critics.kinds and config.critics.critic.shared_trunk:
    params = next(iter(critics.values())).params
  evaluate(ctx, 0, params, critics)
  for k in range(1, config.loop.rounds + 1):
    problems = imagine(ctx, k, params)
    search(ctx, k, params, critics, problems)
    params = builders.on_mesh(ctx, improve_policy(ctx, k, params, collect(ctx, k)))
    evaluate(ctx, k, params, critics)
    _round_summary(ctx, k)
  ctx.writer.close()
  if ctx.results.rows:  # accuracy vs round and vs forward passes, linked from results.md
    plots.write_plots(workdir)
  return {"rows": ctx.results.rows}


def _round_summary(ctx: Context, round_: int) -> None:
  rows = {r["decoding"]: r["accuracy"] for r in ctx.results.rows if r["round"] == round_}
  prev = {r["decoding"]: r["accuracy"] for r in ctx.results.rows if r["round"] == round_ - 1}
  parts = [f"{k} {100 * v:.1f}% ({100 * (v - prev.get(k, v)):+.1f})" for k, v in rows.items()]
  progress.report("round %d summary: %s", round_, "; ".join(parts))
