"""Search quality: does eta-MCTS find more correct answers than sampling at equal compute?

On a dev split (generated with its own seed, disjoint from the run's eval
split and demonstrations: nothing here looks at the eval split), for a
trained quickstart workdir's round-0 policy and value critic:

* tree statistics of eta-MCTS at several simulation budgets (real nodes,
  nodes per simulation, distinct root children, revisit fraction, finished
  solutions, depth) and tree-contains-correct (computed after the search from
  the answer key, for reporting only);
* accuracy of eta-MCTS (its configured answer selection) against pass@N,
  self-consistency@N and critic re-rank@N at matched ``flops_per_problem``
  (``alphallm.decoding.flops``), with paired-bootstrap 95% intervals.

Usage::

  python -m benchmarks.search_quality --workdir /tmp/qs_base --out /tmp/sq.json \\
      --num_problems 64 --simulations 16,32,64,128

``--workdir`` is read only (the checkpoints are restored without writing).
"""

from __future__ import annotations

import argparse
import json
import os
import time
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from alphallm import critics as critics_lib
from alphallm import decoding
from alphallm import evaluation
from alphallm import model as model_lib
from alphallm import sampling
from alphallm import tools
from alphallm.search import critic_slots
from alphallm.search import mcts
from alphallm.search import selection
from alphallm.tasks import Problem, get_task
from alphallm.tokenizer import CharTokenizer


def latest_step_dir(path: str) -> str:
  """The highest numbered step directory under ``path`` (or ``path`` if it is one)."""
  if os.path.isdir(os.path.join(path, "state")):
    return path
  steps = sorted((int(d) for d in os.listdir(path) if d.isdigit()), reverse=True)
  if not steps:
    raise ValueError(f"{path}: no checkpoint step directory")
  return os.path.join(path, str(steps[0]))


def restore_params(path: str):
  """The ``params`` of the latest orbax step under ``path`` (read only)."""
  state = ocp.StandardCheckpointer().restore(os.path.join(latest_step_dir(path), "state"))
  return state["params"]


def load_quickstart(workdir: str):
  """``(config dict, tokenizer, task, model_cfg, params, critic)`` of a quickstart workdir."""
  with open(os.path.join(workdir, "config.json")) as f:
    config = json.load(f)
  tok = CharTokenizer()
  task = get_task(config["task"]["name"], **config["task"].get("knobs", {}))
  arch = {k: v for k, v in config["model"].items()
          if k in ("embed_dim", "head_dim", "mlp_dim", "num_heads", "num_kv_heads",
                   "num_layers", "rope_theta", "tie_embeddings", "dtype", "param_dtype")}
  model_cfg = model_lib.TransformerConfig.from_dict(
      {**arch, "vocab_size": tok.vocab_size, "max_len": config["data"]["seq_len"]})
  ckpts = os.path.join(workdir, "checkpoints")
  params = restore_params(os.path.join(ckpts, "sft_round0"))
  critic = None
  if os.path.isdir(os.path.join(ckpts, "critic_value")):
    cm = dict(config["critics"]["critic"]["model"])
    ccfg = model_lib.TransformerConfig.from_dict(
        {**arch, **cm, "vocab_size": tok.vocab_size,
         "max_len": max(config["critics"]["critic"]["seq_len"], 256)})
    critic = critics_lib.Critic("value", ccfg, restore_params(os.path.join(ckpts, "critic_value")),
                                shared_trunk=False)
  return config, tok, task, model_cfg, params, critic


def dev_problems(task, config: dict, num: int) -> list[Problem]:
  """``num`` problems from a dev seed stream, none in the run's eval split or demos."""
  from alphallm.tasks import make_splits  # pylint: disable=g-import-not-at-top
  seed = int(config.get("seed", 0))
  demos, evals = make_splits(task, seed, int(config["data"]["num_demos"]),
                             int(config["data"]["num_eval"]))
  taken = {p.question for p in demos} | {p.question for p in evals}
  out: list[Problem] = []
  for attempt in range(50):
    for p in task.generate(zlib.crc32(f"dev/{seed}/{attempt}".encode()) & 0x7FFFFFFF, num):
      if p.question not in taken:
        taken.add(p.question)
        out.append(p)
        if len(out) == num:
          return out
  raise ValueError(f"only {len(out)} dev problems outside eval/demos")


def tree_correct(task, tok, problems, out: mcts.SearchOutput) -> np.ndarray:
  """``[B]`` whether any finished node or kept rollout is correct (reporting only)."""
  return evaluation.tree_contains_correct(task, tok, problems, out)


def search_settings(config: dict, simulations: int, **overrides) -> mcts.SearchConfig:
  """The workdir's search config at ``simulations``, with the on-demand defaults."""
  s = dict(config["search"])
  s.update(num_simulations=simulations, **overrides)
  known = {f for f in mcts.SearchConfig.__dataclass_fields__}
  return mcts.SearchConfig.from_config({k: v for k, v in s.items() if k in known})


def run_tree_stats(workdir: str, num_problems: int, sims: list[int], batch: int,
                   overrides: dict) -> dict:
  config, tok, task, model_cfg, params, critic = load_quickstart(workdir)
  problems = dev_problems(task, config, num_problems)
  calc = tools.make_task_checker(tok, task, bool(config["critics"].get("calculator")))
  crit, crit_params = critic_slots.critic_slots(
      value=None, prm=critic, orm=critic, step_checker=calc)
  rows = []
  for n_sim in sims:
    sc = search_settings(config, n_sim, **overrides)
    search = mcts.make_search(model_cfg, sc, tok.eos_id, tok.token_ids_ending_with("\n"), crit,
                              answer_prefix_ids=tok.encode(task.answer_prefix), pad_id=tok.pad_id,
                              bos_id=tok.bos_id,
                              same_step_ignored_ids=mcts.same_step_token_ids(tok, task.same_step_ignored))
    stats, correct, t0 = [], [], time.time()
    for i in range(0, len(problems), batch):
      chunk = problems[i:i + batch]
      ids, mask = sampling.encode_prompts(tok, [task.prompt(p) for p in chunk])
      out = search(params, jnp.asarray(ids), jnp.asarray(mask),
                   jax.random.key(1000 + i), crit_params, None)
      stats.append(jax.device_get(out.stats))
      correct.append(tree_correct(task, tok, chunk, out))
    cat = lambda f: np.concatenate([np.asarray(getattr(s, f)) for s in stats])  # noqa: E731
    row = {"simulations": n_sim, "problems": len(problems), "seconds": time.time() - t0}
    for f in ("real_nodes", "distinct_root", "children_per_interior", "revisit_fraction",
              "finished", "max_depth"):
      row[f] = float(cat(f).mean())
    row["nodes_per_simulation"] = (row["real_nodes"] - 1) / n_sim
    row["tree_contains_correct"] = float(np.concatenate(correct).mean())
    print(json.dumps(row), flush=True)
    rows.append(row)
  return {"workdir": workdir, "overrides": overrides, "split": "dev", "tree_stats": rows}


def paired_bootstrap(a: np.ndarray, b: np.ndarray, num: int = 2000, seed: int = 0) -> list:
  """95% interval of mean(a - b) over problems (paired resampling of problems)."""
  rng = np.random.default_rng(seed)
  d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
  idx = rng.integers(0, len(d), size=(num, len(d)))
  means = d[idx].mean(axis=1)
  return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def sample_baselines(task, tok, model_cfg, params, problems, crit, crit_params, n_max: int,
                     batch: int, max_new: int, temperature: float, seed: int = 0) -> dict:
  """``n_max`` i.i.d. samples per problem, each verified and scored by the ORM slot.

  Returns per problem and sample: ``correct [P, n]``, ``answers``, ``scores [P, n]``,
  ``policy_tokens [P, n]`` (prompt + generated) and ``critic_tokens [P, n]``.
  Prefixes of the n samples are N-sample draws, so every N <= n_max is read from them.
  """
  fn = decoding.make_multi_sampler(model_cfg, n_max, max_new, tok.eos_id, temperature,
                                   pad_id=tok.pad_id)
  correct, answers, scores, ptoks, ctoks = [], [], [], [], []

  @jax.jit
  def score(cp, seq, mask):
    return crit.orm(cp, seq, mask)

  for i in range(0, len(problems), batch):
    chunk = problems[i:i + batch]
    ids, mask = sampling.encode_prompts(tok, [task.prompt(p) for p in chunk])
    ids, mask = jnp.asarray(ids), jnp.asarray(mask)
    res = fn(params, ids, mask, jax.random.key(seed + i))
    cand = np.asarray(res.candidates)                                   # [b, n, C]
    b, n, c = cand.shape
    real = np.asarray(sampling.completion_mask(jnp.asarray(cand.reshape(b * n, c)), tok.pad_id,
                                               tok.eos_id)).reshape(b, n, c)
    plen = np.asarray(mask).sum(1)[:, None]
    ptoks.append(plen + real.sum(-1))
    ctoks.append(plen + real.sum(-1))
    seq = jnp.concatenate([jnp.repeat(ids, n, 0), jnp.asarray(cand.reshape(b * n, c))], 1)
    m = jnp.concatenate([jnp.repeat(mask, n, 0), jnp.asarray(real.reshape(b * n, c))], 1)
    scores.append(np.asarray(score(crit_params, seq, m)).reshape(b, n))
    for j, prob in enumerate(chunk):
      texts = sampling.decode_completions(tok, cand[j])
      correct.append([task.verify(prob, t) for t in texts])
      answers.append([task.extract_answer(t) for t in texts])
  return {"correct": np.asarray(correct), "answers": answers, "scores": np.concatenate(scores),
          "policy_tokens": np.concatenate(ptoks).astype(np.float64),
          "critic_tokens": np.concatenate(ctoks).astype(np.float64)}


def baseline_curves(s: dict, n: int, problems, task, p_policy: int, p_critic: int) -> dict:
  """pass@n, self-consistency@n, critic re-rank@n from the first n samples (per problem)."""
  corr, ans, sc = s["correct"][:, :n], [a[:n] for a in s["answers"]], s["scores"][:, :n]
  sc_ok, rr_ok = [], []
  for i in range(len(problems)):
    votes: dict = {}
    for j, a in enumerate(ans[i]):
      if a is not None:
        votes.setdefault(a, []).append(j)
    if votes:
      best = max(votes.values(), key=lambda js: (len(js), -js[0]))
      sc_ok.append(bool(corr[i, best[0]]))
    else:
      sc_ok.append(bool(corr[i, 0]))
    rr_ok.append(bool(corr[i, int(np.argmax(sc[i]))]))
  pol = s["policy_tokens"][:, :n].sum(1)
  crit = s["critic_tokens"][:, :n].sum(1)
  return {"pass": corr.any(1), "self_consistency": np.asarray(sc_ok),
          "critic_rerank": np.asarray(rr_ok),
          "flops_sampling": decoding.flops(pol, p_policy),
          "flops_rerank": decoding.flops(pol, p_policy, crit, p_critic)}


def run_quality(workdir: str, num_problems: int, sims: list[int], batch: int, overrides: dict,
                n_max: int) -> dict:
  """Accuracy / coverage of eta-MCTS against sampling baselines at matched FLOPs (dev split)."""
  config, tok, task, model_cfg, params, critic = load_quickstart(workdir)
  problems = dev_problems(task, config, num_problems)
  calc = tools.make_task_checker(tok, task, bool(config["critics"].get("calculator")))
  crit, crit_params = critic_slots.critic_slots(prm=critic, orm=critic, step_checker=calc)
  p_policy = decoding.param_count(params)
  p_critic = decoding.critic_size(crit_params) if crit_params else p_policy
  ev = config["eval"]
  samples = sample_baselines(task, tok, model_cfg, params, problems, crit, crit_params, n_max,
                             batch, int(ev["max_new_tokens"]), float(ev["temperature"]))
  base = {n: baseline_curves(samples, n, problems, task, p_policy, p_critic)
          for n in sorted({2 ** k for k in range(0, 12) if 2 ** k <= n_max} | {n_max})}
  rows = []
  for n_sim in sims:
    sc = search_settings(config, n_sim, **overrides)
    decode = selection.make_search_decoder(
        model_cfg, sc, tok.eos_id, tok.token_ids_ending_with(task.step_delimiter), crit,
        tokenizer=tok, extract_answer=task.extract_answer,
        answer_prefix_ids=tok.encode(task.answer_prefix), critic_params=crit_params,
        pad_id=tok.pad_id, bos_id=tok.bos_id,
        same_step_ignored_ids=mcts.same_step_token_ids(tok, task.same_step_ignored),
        keep_output=True)
    ok, inside, flops, stats, t0 = [], [], [], [], time.time()
    for i in range(0, len(problems), batch):
      chunk = problems[i:i + batch]
      ids, mask = sampling.encode_prompts(tok, [task.prompt(p) for p in chunk])
      res = decode(params, jnp.asarray(ids), jnp.asarray(mask), jax.random.key(1000 + i))
      texts = sampling.decode_completions(tok, np.asarray(res.completions))
      ok.extend(task.verify(p, t) for p, t in zip(chunk, texts))
      inside.append(tree_correct(task, tok, chunk, res.search))
      flops.append(np.asarray(res.flops))
      stats.append(jax.device_get(res.stats))
    ok, inside, flops = np.asarray(ok), np.concatenate(inside), np.concatenate(flops)
    f = float(flops.mean())
    # The baseline N whose FLOPs per problem is closest to the search's, at or below it.
    pick = lambda key: max([n for n in base if base[n][key].mean() <= f] or [min(base)])  # noqa
    n_s, n_r = pick("flops_sampling"), pick("flops_rerank")
    row = {"simulations": n_sim, "flops_per_problem": f, "seconds": time.time() - t0,
           "mcts_accuracy": float(ok.mean()), "tree_contains_correct": float(inside.mean()),
           "matched_n_sampling": n_s, "matched_n_rerank": n_r,
           "pass_at_n": float(base[n_s]["pass"].mean()),
           "self_consistency": float(base[n_s]["self_consistency"].mean()),
           "critic_rerank": float(base[n_r]["critic_rerank"].mean()),
           "flops_sampling_n": float(base[n_s]["flops_sampling"].mean()),
           "flops_rerank_n": float(base[n_r]["flops_rerank"].mean()),
           "ci95_tree_minus_pass": paired_bootstrap(inside, base[n_s]["pass"]),
           "ci95_mcts_minus_rerank": paired_bootstrap(ok, base[n_r]["critic_rerank"]),
           "ci95_mcts_minus_self_consistency": paired_bootstrap(ok,
                                                                base[n_s]["self_consistency"])}
    for k in stats[0].__dataclass_fields__:
      row[f"tree_{k}"] = float(np.concatenate([np.asarray(getattr(x, k)) for x in stats]).mean())
    print(json.dumps(row), flush=True)
    rows.append(row)
  curves = {str(n): {"flops_sampling": float(v["flops_sampling"].mean()),
                     "flops_rerank": float(v["flops_rerank"].mean()),
                     "pass": float(v["pass"].mean()),
                     "self_consistency": float(v["self_consistency"].mean()),
                     "critic_rerank": float(v["critic_rerank"].mean())} for n, v in base.items()}
  return {"task": task.name, "workdir": workdir, "split": "dev", "problems": len(problems),
          "overrides": overrides, "policy_params": p_policy, "critic_params": p_critic,
          "mcts": rows, "baselines": curves}


def plot(result: dict, path: str) -> None:
  """Accuracy against FLOPs per problem: eta-MCTS and the sampling baselines."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(6, 4))
  b = result["baselines"]
  ns = sorted(b, key=int)
  ax.plot([b[n]["flops_sampling"] for n in ns], [b[n]["pass"] for n in ns], "k:", label="pass@N")
  ax.plot([b[n]["flops_sampling"] for n in ns], [b[n]["self_consistency"] for n in ns], "b-",
          label="self-consistency@N")
  ax.plot([b[n]["flops_rerank"] for n in ns], [b[n]["critic_rerank"] for n in ns], "g-",
          label="critic re-rank@N")
  m = result["mcts"]
  ax.plot([r["flops_per_problem"] for r in m], [r["mcts_accuracy"] for r in m], "ro-",
          label="eta-MCTS")
  ax.plot([r["flops_per_problem"] for r in m], [r["tree_contains_correct"] for r in m], "r--",
          label="tree contains correct")
  ax.set_xscale("log")
  ax.set_xlabel("FLOPs per problem")
  ax.set_ylabel("accuracy (dev split)")
  ax.set_title(f"{result['task']}: {result['problems']} dev problems")
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--workdir", required=True)
  ap.add_argument("--out", required=True)
  ap.add_argument("--num_problems", type=int, default=64)
  ap.add_argument("--batch", type=int, default=64)
  ap.add_argument("--simulations", default="32,128")
  ap.add_argument("--tree_stats_only", action="store_true")
  ap.add_argument("--n_max", type=int, default=64, help="most samples per problem (baselines)")
  ap.add_argument("--override", action="append", default=[],
                  help="search key=value (JSON value), e.g. policy=\"uct\"")
  args = ap.parse_args(argv)
  overrides = {}
  for item in args.override:
    key, _, value = item.partition("=")
    overrides[key] = json.loads(value)
  sims = [int(s) for s in args.simulations.split(",")]
  if args.tree_stats_only:
    res = run_tree_stats(args.workdir, args.num_problems, sims, args.batch, overrides)
  else:
    res = run_quality(args.workdir, args.num_problems, sims, args.batch, overrides, args.n_max)
    plot(res, os.path.splitext(args.out)[0] + ".png")
  with open(args.out, "w") as f:
    json.dump(res, f, indent=2)


if __name__ == "__main__":
  main()
