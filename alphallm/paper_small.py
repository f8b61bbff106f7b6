"""The paper's Tables 2, 3 and 7 at small scale, over several seeds.

Run (``--quick``: a few minutes on a 2-core CPU, mostly XLA compilation):

  python -m alphallm.paper_small --workdir=/tmp/paper_small --seeds=0,1,2

For each seed ``s`` (workdir ``DIR/seed{s}``, every phase resumable):

* **Table 2**: the self-improvement loop (``experiment.train_and_evaluate``)
  on ``experiments/paper_small/base.py``: greedy and eta-MCTS after rounds
  0, 1 and 2; plus the compute-matched baseline ``sft_demos_greedy``: the
  round-0 policy fine-tuned on the demonstrations alone for as many steps as
  rounds 1 and 2 together, decoded greedily.
* **Table 3**: eta-MCTS ablations on the round-0 policy and critics
  (``t3/<variant>``): components added one by one (3a), then the tool ORM
  and option level (3b).
* **Table 7**: accuracy against compute on the round-0 policy
  (``t7/<method>``): greedy, self-consistency@N, ORM re-rank@N (N samples
  re-ranked by the trained critic, tool-augmented like the search's ORM) and
  eta-MCTS at several simulation budgets.

Then ``DIR/results.json`` (``rows``: every per-seed row with its ``table``;
``aggregate``: mean and standard deviation over seeds per
``(table, decoding, round)``), ``DIR/results.md`` (the three tables, with the
paper's numbers) and ``DIR/plots/*.png``.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import os
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from alphallm import builders
from alphallm import config_files
from alphallm import critics as critics_lib
from alphallm import data
from alphallm import decoding
from alphallm import evaluation
from alphallm import experiment
from alphallm import improve
from alphallm import io_utils
from alphallm import loop
from alphallm import methods
from alphallm import progress
from alphallm import sampling

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE_CONFIG = os.path.join(ROOT, "experiments", "paper_small", "base.py")
PLOTS_DIR = "plots"
ROUND_PLOT = "accuracy_vs_round.png"
COMPUTE_PLOT = "accuracy_vs_compute.png"

# Table 3 rows in order: (variant, label, paper GSM8K / MATH accuracy).
TABLE3 = (
    ("vanilla", "vanilla MCTS", "79.5 (GSM8K)"),
    ("adaptive_branching", "+ adaptive branching", "84.9"),
    ("prm", "+ PRM", "85.9"),
    ("fast_rollout_orm", "+ fast rollout with ORM", "86.5"),
    ("state_merge", "+ state merge", "87.0"),
    ("more_rollouts", "+ more rollouts", "88.9"),
    ("token_level_no_tool", "token level, no tool ORM", "38.8 (MATH)"),
    ("token_level_tool", "+ tool ORM", "44.1"),
    ("option_level_tool", "+ option level", "45.4"),
)
PAPER_TABLE2 = {
    "greedy": ("57.8", "73.7"), "mcts": ("88.9", "92.0"), "sft_demos_greedy": ("", "69.3"),
}
PAPER_TABLE7 = {
    "greedy": "57.8 (4.6 rollouts)", "self_consistency": "67.4 / 74.2 / 75.4 (@10/30/50)",
    "orm_rerank": "80.8 / 86.3 / 87.7 (@10/30/50)",
    "mcts": "87.0 (55 rollouts) / 88.9 (230 rollouts)",
}


def load_base():
  """``experiments/paper_small/base.py`` as a module (``experiments`` is no package)."""
  return config_files.load(BASE_CONFIG, "_paper_small_base")


def table_of(decoding: str) -> str:
  if decoding.startswith("t3/"):
    return "table3"
  if decoding.startswith("t7/"):
    return "table7"
  return "table2"


# ---------------------------------------------------------------------------
# Search configs of Table 3 and Table 7.


def table3_variants(config: ml_collections.ConfigDict, tables: ml_collections.ConfigDict
                    ) -> dict[str, tuple[ml_collections.ConfigDict, bool]]:
  """``{variant: (search config, calculator)}``, each adding one component."""
  s = config.search
  out = {}

  def add(name, cfg, calculator):
    out[name] = (cfg.copy_and_resolve_references(), calculator)

  cfg = s.copy_and_resolve_references()
  cfg.adaptive_branching.enabled = False
  cfg.merge.enabled = False
  cfg.rollout.enabled = False
  cfg.weights.prm = 0.0
  cfg.weights.value = 0.0
  cfg.weights.orm = 1.0   # vanilla: the critic's reward at terminal nodes only
  add("vanilla", cfg, False)
  ab = cfg.adaptive_branching
  ab.enabled = True
  ab.c_min_root, ab.c_max_root = min(2, s.num_actions), s.num_actions
  ab.c_min, ab.c_max = 1, max(2, s.num_actions // 2)
  add("adaptive_branching", cfg, False)
  cfg.weights.prm = 1.0
  add("prm", cfg, False)
  cfg.rollout.enabled = True
  cfg.rollout.num_rollouts = tables.fast_rollouts
  cfg.rollout.max_len = s.max_completion_len
  add("fast_rollout_orm", cfg, False)
  cfg.merge.enabled = True
  add("state_merge", cfg, False)
  cfg.num_simulations = s.num_simulations * tables.more_simulations_factor
  add("more_rollouts", cfg, False)
  # 3b: from the loop's eta-MCTS, at token level without / with the tool ORM,
  # then at option level.
  cfg = s.copy_and_resolve_references()
  cfg.granularity = "token"
  cfg.merge.enabled = False
  add("token_level_no_tool", cfg, False)
  add("token_level_tool", cfg, True)
  add("option_level_tool", s, True)
  return out


# ---------------------------------------------------------------------------
# One seed.


def run_seed(config: ml_collections.ConfigDict, tables: ml_collections.ConfigDict,
             workdir: str) -> list[dict[str, Any]]:
  """The loop, then the extra rows; returns the seed's rows (each with its ``table``)."""

  t0 = time.time()
  experiment.train_and_evaluate(config, workdir)
  progress.report("seed %d: loop done in %.0f s", config.seed, time.time() - t0)
  ctx = builders.build_context(config, workdir)
  params = builders.on_mesh(ctx, loop.warm_start(ctx))
  critics = loop.train_critics(ctx, params)
  if config.critics.kinds and config.critics.critic.shared_trunk:
    params = next(iter(critics.values())).params
  _sft_demos_baseline(ctx, params)
  sub = _subset(ctx, tables.get("num_problems", 0))
  _table3(sub, params, critics, tables)
  _table7(sub, params, critics, tables)
  ctx.writer.close()
  progress.report("seed %d: done in %.0f s", config.seed, time.time() - t0)
  return [{**r, "table": table_of(r["decoding"])} for r in ctx.results.rows]


def _subset(ctx, num: int):
  """``ctx`` evaluating its first ``num`` eval problems (0: all)."""
  if not num or num >= len(ctx.eval_problems):
    return ctx
  return dataclasses.replace(ctx, eval_problems=ctx.eval_problems[:num])


def _done(ctx, name: str, round_: int) -> bool:
  return any(r["decoding"] == name and r["round"] == round_ and r.get("seed") == ctx.config.seed
             for r in ctx.results.rows)


def _add(ctx, row: dict[str, Any]) -> None:
  ctx.results.add(row)
  progress.report("seed %d %-32s accuracy %.3f  (%.1f forward passes/problem)",
                  ctx.config.seed, row["decoding"], row["accuracy"],
                  row["forward_passes_per_problem"])


def _evaluate(ctx, name: str, fn, params, round_: int, batch_size: int, select=None) -> None:
  if _done(ctx, name, round_):
    return
  row, _ = evaluation.evaluate(fn, params, ctx.task, ctx.tokenizer, ctx.eval_problems,
                               name=name, round_=round_, batch_size=batch_size,
                               prompt_len=ctx.prompt_len, rng=ctx.rng("eval", round_, name),
                               seed=ctx.config.seed, select=select)
  _add(ctx, row)


def _sft_demos_baseline(ctx, params) -> None:
  """Round-0 policy + SFT on the demonstrations for the steps of rounds 1..K together."""
  name, rounds = "sft_demos_greedy", ctx.config.loop.rounds
  if _done(ctx, name, rounds):
    return
  task = ctx.task
  dataset = data.encode_examples(ctx.tokenizer, [task.prompt(p) for p in ctx.demos],
                                 [task.demonstration(p) for p in ctx.demos],
                                 ctx.config.data.seq_len)
  sft = ctx.config.loop.sft.copy_and_resolve_references()
  sft.steps = ctx.config.loop.sft.steps * rounds
  baseline = improve.run_sft(sft, ctx.model_cfg, dataset, improve.copy_params(params),
                             ctx.mesh, ctx.path("checkpoints", "sft_demos_baseline"),
                             ctx.config.seed + 1, desc="sft_demos_baseline", writer=ctx.writer)
  baseline = builders.on_mesh(ctx, baseline)
  greedy, _ = methods.baseline("greedy", ctx)
  _evaluate(ctx, name, greedy, baseline, rounds, ctx.config.eval.batch_size)


def _table3(ctx, params, critics, tables) -> None:
  for variant, (search_cfg, calculator) in table3_variants(ctx.config, tables).items():
    name = f"t3/{variant}"
    if _done(ctx, name, 0) or (tables.table3_variants and variant not in tables.table3_variants):
      continue
    cfg = ctx.config.copy_and_resolve_references()
    cfg.critics.calculator = calculator
    vctx = dataclasses.replace(ctx, config=cfg)
    fn = methods.search_decoder(vctx, critics, search_cfg)
    _evaluate(vctx, name, fn, params, 0, ctx.config.eval.search_batch_size)


def _table7(ctx, params, critics, tables) -> None:
  ev = ctx.config.eval
  specs = ["greedy"] + [f"self_consistency@{n}" for n in tables.num_samples]
  for spec, (fn, select) in methods.baselines(ctx, specs).items():
    _evaluate(ctx, f"t7/{spec}", fn, params, 0, ev.batch_size, select)
  critic = critics.get("orm", critics.get("value"))
  for n in tables.num_samples:
    name = f"t7/orm_rerank@{n}"
    if critic is None or _done(ctx, name, 0):
      continue
    _add(ctx, orm_rerank_row(ctx, params, critic, n, name))
  for sims in tables.mcts_simulations:
    cfg = ctx.config.search.copy_and_resolve_references()
    cfg.num_simulations = sims
    name = f"t7/mcts@{sims}"
    if not _done(ctx, name, 0):
      _evaluate(ctx, name, methods.search_decoder(ctx, critics, cfg), params, 0,
                ev.search_batch_size)


def orm_rerank_row(ctx, params, critic, n: int, name: str) -> dict[str, Any]:
  """Best-of-N re-ranked by the trained critic (x the calculator when enabled).

  Forward passes count the sampling and one critic pass per candidate.
  """
  ev, task, tok = ctx.config.eval, ctx.task, ctx.tokenizer
  fn = decoding.make_multi_sampler(ctx.model_cfg, n, ev.max_new_tokens, tok.eos_id,
                                   ev.temperature, pad_id=tok.pad_id)
  length = ctx.config.critics.critic.seq_len
  prompts = [task.prompt(p) for p in ctx.eval_problems]
  rng = ctx.rng("eval", 0, name)
  texts, totals = [], collections.Counter()
  for start, chunk in evaluation.padded_batches(prompts, ev.batch_size):
    ids, mask = sampling.encode_prompts(tok, chunk, length=ctx.prompt_len)
    result = fn(params, ids, mask, jax.random.fold_in(rng, start))
    real = min(ev.batch_size, len(prompts) - start)
    cands = np.asarray(jax.device_get(result.candidates))[:real]
    flat_p, flat_c = [], []
    for prompt, row in zip(chunk[:real], cands):
      for text in sampling.decode_completions(tok, row):
        room = max(length - 2 - len(tok.encode(prompt)), 0)
        while len(tok.encode(text)) > room:  # the critic's window; the tail is cut
          text = text[:-1]
        flat_p.append(prompt)
        flat_c.append(text)
    scores = critics_lib.score_texts(critic, tok, flat_p, flat_c, length=length,
                                     batch_size=ev.batch_size)
    if ctx.config.critics.calculator:
      scores = critics_lib.tool_orm_scores(task, flat_c, scores)
    for i, row in enumerate(cands):
      options = sampling.decode_completions(tok, row)
      texts.append(options[int(np.argmax(scores[i * n:(i + 1) * n]))])
    for key in ("forward_passes", "tokens", "rollouts"):
      totals[key] += float(np.asarray(getattr(result, key))[:real].sum())
    totals["forward_passes"] += real * n  # one critic pass per candidate
  num = len(prompts)
  return {"task": task.name, "round": 0, "decoding": name,
          "accuracy": evaluation.accuracy(task, ctx.eval_problems, texts), "num_problems": num,
          "forward_passes_per_problem": totals["forward_passes"] / num,
          "tokens_per_problem": totals["tokens"] / num,
          "rollouts_per_problem": totals["rollouts"] / num, "seed": ctx.config.seed}


# ---------------------------------------------------------------------------
# Aggregation, tables, plots.


def aggregate(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
  """Mean and standard deviation (ddof 1; 0 with one seed) per (table, decoding, round)."""
  groups = collections.defaultdict(list)
  for r in rows:
    groups[(r["table"], r["decoding"], r["round"])].append(r)
  out = []
  for (table, name, round_), rs in sorted(groups.items()):
    def stats(key):
      v = np.asarray([float(r.get(key, 0.0)) for r in rs])
      return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0
    acc, acc_std = stats("accuracy")
    fwd, fwd_std = stats("forward_passes_per_problem")
    out.append({"table": table, "decoding": name, "round": round_, "accuracy_mean": acc,
                "accuracy_std": acc_std, "forward_passes_mean": fwd, "forward_passes_std": fwd_std,
                "tokens_mean": stats("tokens_per_problem")[0],
                "rollouts_mean": stats("rollouts_per_problem")[0],
                "num_problems": int(rs[0]["num_problems"]),
                "seeds": sorted(int(r.get("seed", 0)) for r in rs)})
  return out


def _pm(a: Mapping[str, Any] | None) -> str:
  if a is None:
    return "-"
  return f"{100 * a['accuracy_mean']:.1f} ± {100 * a['accuracy_std']:.1f}"


def _family(decoding: str) -> str:
  return decoding.split("/", 1)[-1].split("@", 1)[0]


def _budget(decoding: str) -> int:
  _, _, n = decoding.partition("@")
  return int(n) if n.isdigit() else 1


def to_markdown(agg: Sequence[Mapping[str, Any]], seeds: Sequence[int],
                rounds: int) -> str:
  """The three tables (accuracy %, mean ± std over seeds), with the paper's numbers."""
  by = {(a["decoding"], a["round"]): a for a in agg}
  counts = {t: sorted({a["num_problems"] for a in agg if a["table"] == t})
            for t in ("table2", "table3", "table7")}
  n_problems = "; ".join(f"{t.replace('table', 'Table ')}: {'/'.join(map(str, n))}"
                         for t, n in counts.items() if n)
  lines = ["# AlphaLLM, small scale: Tables 2, 3 and 7", "",
           f"Task: arithmetic (experiments/quickstart.py recipe); held-out problems per table: "
           f"{n_problems}; "
           f"seeds {', '.join(map(str, seeds))}. Accuracy in %, mean ± std over seeds "
           "(std with ddof 1; 0 for one seed). The paper's numbers (Llama-2-70B on GSM8K / "
           "MATH, from PAPER.md) are for reference only: different model, task and scale.", ""]
  lines += ["## Table 2: self-improvement", "",
            "| method | " + " | ".join(f"round {k}" for k in range(rounds + 1))
            + " | paper (before / after) |",
            "|---|" + "---:|" * (rounds + 1) + "---|"]
  labels = {"greedy": "greedy", "mcts": "eta-MCTS",
            "sft_demos_greedy": f"SFT on demonstrations only ({rounds} rounds' steps), greedy"}
  for name, label in labels.items():
    cells = [_pm(by.get((name, k))) for k in range(rounds + 1)]
    if name == "sft_demos_greedy":
      cells = ["-"] * rounds + [_pm(by.get((name, rounds)))]
    paper = " / ".join(x for x in PAPER_TABLE2[name] if x)
    lines.append(f"| {label} | " + " | ".join(cells) + f" | {paper} |")
  lines += ["", "## Table 3: eta-MCTS ablation (round-0 policy and critics)", "",
            "3a adds components one by one from vanilla MCTS (no calculator); 3b starts from "
            "the loop's eta-MCTS at token level without the tool ORM (calculator).", "",
            "| variant | accuracy | forward passes / problem | paper |", "|---|---:|---:|---|"]
  for variant, label, paper in TABLE3:
    a = by.get((f"t3/{variant}", 0))
    fwd = f"{a['forward_passes_mean']:.0f}" if a else "-"
    lines.append(f"| {label} (`t3/{variant}`) | {_pm(a)} | {fwd} | {paper} |")
  lines += ["", "## Table 7: accuracy vs compute (round-0 policy)", "",
            "ORM re-rank: N samples re-ranked by the trained critic (tool-augmented); "
            "forward passes include one critic pass per candidate.", "",
            "| method | accuracy | forward passes / problem | rollouts / problem | paper |",
            "|---|---:|---:|---:|---|"]
  t7 = sorted((a for a in agg if a["table"] == "table7"),
              key=lambda a: (("greedy", "self_consistency", "orm_rerank", "mcts").index(
                  _family(a["decoding"])) if _family(a["decoding"]) in PAPER_TABLE7 else 9,
                             _budget(a["decoding"])))
  seen = set()
  for a in t7:
    fam = _family(a["decoding"])
    paper = PAPER_TABLE7.get(fam, "") if fam not in seen else ""
    seen.add(fam)
    lines.append(f"| {a['decoding'][3:]} | {_pm(a)} | {a['forward_passes_mean']:.0f} "
                 f"| {a['rollouts_mean']:.1f} | {paper} |")
  lines += ["", "## Plots", "", f"![accuracy vs round]({PLOTS_DIR}/{ROUND_PLOT})", "",
            f"![accuracy vs forward passes]({PLOTS_DIR}/{COMPUTE_PLOT})", ""]
  return "\n".join(lines)


def write_plots(agg: Sequence[Mapping[str, Any]], workdir: str, rounds: int) -> list[str]:
  """Accuracy vs round (Table 2) and vs forward passes (Table 7), as PNGs."""
  out_dir = os.path.join(workdir, PLOTS_DIR)
  os.makedirs(out_dir, exist_ok=True)
  paths = []

  def save(fig, name):
    path = os.path.join(out_dir, name)
    FigureCanvasAgg(fig)
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    os.replace(tmp, path)
    paths.append(path)

  fig = Figure(figsize=(5.5, 4))
  ax = fig.add_subplot()
  for name, label, marker in (("greedy", "greedy", "o"), ("mcts", "eta-MCTS", "s")):
    pts = [a for a in agg if a["table"] == "table2" and a["decoding"] == name]
    pts.sort(key=lambda a: a["round"])
    if pts:
      ax.errorbar([a["round"] for a in pts], [100 * a["accuracy_mean"] for a in pts],
                  yerr=[100 * a["accuracy_std"] for a in pts], marker=marker, capsize=3,
                  label=label)
  base = [a for a in agg if a["decoding"] == "sft_demos_greedy"]
  if base:
    ax.errorbar([a["round"] for a in base], [100 * a["accuracy_mean"] for a in base],
                yerr=[100 * a["accuracy_std"] for a in base], marker="x", linestyle="none",
                capsize=3, color="k", label="SFT on demos only, greedy")
  ax.set_xticks(range(rounds + 1))
  ax.set_xlabel("self-improvement round")
  ax.set_ylabel("accuracy (%)")
  ax.set_title("Table 2: accuracy vs round")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  save(fig, ROUND_PLOT)

  fig = Figure(figsize=(5.5, 4))
  ax = fig.add_subplot()
  fams = collections.defaultdict(list)
  for a in agg:
    if a["table"] == "table7":
      fams[_family(a["decoding"])].append(a)
  for fam, marker in zip(("greedy", "self_consistency", "orm_rerank", "mcts"), "o^Ds"):
    pts = sorted(fams.get(fam, []), key=lambda a: a["forward_passes_mean"])
    if pts:
      ax.errorbar([a["forward_passes_mean"] for a in pts],
                  [100 * a["accuracy_mean"] for a in pts],
                  yerr=[100 * a["accuracy_std"] for a in pts], marker=marker, capsize=3,
                  label=fam)
  ax.set_xscale("log")
  ax.set_xlabel("forward passes per problem")
  ax.set_ylabel("accuracy (%)")
  ax.set_title("Table 7: accuracy vs compute (round 0)")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  save(fig, COMPUTE_PLOT)
  return paths


def write_outputs(workdir: str, rows: list[dict[str, Any]], seeds: Sequence[int],
                  rounds: int, timings: Mapping[int, float] | None = None) -> dict[str, Any]:
  """``results.json`` (rows, aggregate, seconds per seed), ``results.md`` and the plots."""
  agg = aggregate(rows)
  obj = {"rows": rows, "aggregate": agg,
         "seconds_per_seed": {str(k): round(v, 1) for k, v in (timings or {}).items()}}
  io_utils.atomic_write_json(os.path.join(workdir, "results.json"), obj)
  io_utils.atomic_write_text(os.path.join(workdir, "results.md"),
                             to_markdown(agg, seeds, rounds))
  write_plots(agg, workdir, rounds)
  return obj


def run(workdir: str, seeds: Sequence[int], quick: bool = False) -> dict[str, Any]:
  """Every seed (resumable), then the aggregated tables and plots."""
  base = load_base()
  tables = base.get_tables_config(quick)
  rows, timings = [], {}
  rounds = 0
  for seed in seeds:
    config = base.get_config(seed, quick=quick)
    rounds = config.loop.rounds
    t0 = time.time()
    rows += run_seed(config, tables, os.path.join(workdir, f"seed{seed}"))
    timings[seed] = time.time() - t0
  return write_outputs(workdir, rows, seeds, rounds, timings)


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
  parser.add_argument("--quick", action="store_true",
                      help="toy sizes and one seed (the first of --seeds): about a minute")
  args = parser.parse_args(argv)
  try:
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
  except ValueError:
    parser.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
  if not seeds:
    parser.error("--seeds is empty")
  if args.quick:
    seeds = seeds[:1]
  os.makedirs(args.workdir, exist_ok=True)
  if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    # Seeds after the first load the programs the first one compiled.
    jax.config.update("jax_compilation_cache_dir", os.path.join(args.workdir, ".jax_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
  obj = run(args.workdir, seeds, quick=args.quick)
  print(f"wrote {os.path.join(args.workdir, 'results.md')} "
        f"({len(obj['rows'])} rows; seconds per seed: "
        f"{obj['seconds_per_seed']})", file=sys.stderr)


if __name__ == "__main__":
  main()
