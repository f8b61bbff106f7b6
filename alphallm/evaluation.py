"""Accuracy of a decoding method on held-out problems, with its compute.

The decoding method only ever receives encoded prompts; the answer key is
used afterwards, on the host, by the task's exact verifier.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
import tqdm

from alphallm import decoding
from alphallm import sampling
from alphallm.search import selection
from alphallm.tasks import Problem, Task
from alphallm.tokenizer import Tokenizer


def padded_batches(prompts: Sequence[str], batch_size: int):
  """Yields ``(start, prompts)`` with the last batch padded by repeating its first item.

  Keeping every batch the same size means the decode function compiles once.
  """
  for start in range(0, len(prompts), batch_size):
    chunk = list(prompts[start:start + batch_size])
    yield start, chunk + [chunk[0]] * (batch_size - len(chunk))


Selector = Callable[[Sequence[str], Sequence[float], Callable[[str], Any]], int]


def run_decoding(decode_fn: decoding.DecodeFn, params, tokenizer: Tokenizer,
                 prompts: Sequence[str], *, batch_size: int, prompt_len: int,
                 rng: jax.Array, desc: str = "decode", select: Selector | None = None,
                 extract_answer: Callable[[str], Any] | None = None,
                 problems: Sequence[Problem] | None = None, task: Task | None = None
                 ) -> tuple[list[str], dict[str, float]]:
  """Runs ``decode_fn`` over all prompts in fixed-size batches.

  With ``select`` (a host-side selector from ``decoding.SELECTORS``), the
  method's ``candidates`` are decoded and one is chosen per problem.

  Returns the completion texts and the per-problem means of the compute
  counters (``forward_passes``, ``tokens``, ``rollouts``, and ``flops``,
  ``policy_tokens``, ``critic_tokens`` when the method reports them); search
  methods add their tree statistics (``tree/<stat>``) and, when the method
  keeps its search output and ``problems`` are given, ``tree/contains_correct``
  (computed here from the answer key after the search, for reporting only).
  """
  if not prompts:
    raise ValueError("run_decoding: no prompts (empty split)")
  texts: list[str] = []
  totals = {"forward_passes": 0.0, "tokens": 0.0, "rollouts": 0.0}
  for start, chunk in tqdm.tqdm(list(padded_batches(prompts, batch_size)), desc=desc,
                                leave=False, disable=None):
    ids, mask = sampling.encode_prompts(tokenizer, chunk, length=prompt_len)
    result = decode_fn(params, ids, mask, jax.random.fold_in(rng, start))
    real = min(batch_size, len(prompts) - start)
    if select is None:
      completions = np.asarray(jax.device_get(result.completions))[:real]
      texts.extend(sampling.decode_completions(tokenizer, completions))
    else:
      candidates = np.asarray(jax.device_get(result.candidates))[:real]
      scores = np.asarray(jax.device_get(result.candidate_scores))[:real]
      for row, row_scores in zip(candidates, scores):
        options = sampling.decode_completions(tokenizer, row)
        texts.append(options[select(options, row_scores, extract_answer)])
    for key in ("flops", "policy_tokens", "critic_tokens"):
      if getattr(result, key, None) is not None:
        totals.setdefault(key, 0.0)
    if getattr(result, "stats", None) is not None:
      stats = jax.device_get(result.stats)
      for key in stats.__dataclass_fields__:
        totals.setdefault(f"tree/{key}", 0.0)
        totals[f"tree/{key}"] += float(np.asarray(getattr(stats, key))[:real].sum())
    if getattr(result, "search", None) is not None and problems is not None and task is not None:
      hit = tree_contains_correct(task, tokenizer, problems[start:start + real], result.search)
      totals["tree/contains_correct"] = totals.get("tree/contains_correct", 0.0) + hit.sum()
    for key in totals:
      if not key.startswith("tree/"):
        totals[key] += float(np.asarray(getattr(result, key))[:real].sum())
  return texts, {k: v / len(prompts) for k, v in totals.items()}


def tree_contains_correct(task: Task, tokenizer: Tokenizer, problems: Sequence[Problem],
                          output) -> np.ndarray:
  """``[len(problems)]``: whether a finished node or kept rollout of each tree is correct.

  Reads the answer key, so it runs only after the search, for reporting;
  nothing the search returns depends on it.
  """
  t = selection.TreeArrays(output)
  out = []
  for b, prob in enumerate(problems):
    cands = selection.answer_candidates(t, b)
    out.append(any(task.verify(prob, tokenizer.decode(t.completion(b, n))) for n in cands))
  return np.asarray(out, bool)


def accuracy(task: Task, problems: Sequence[Problem], completions: Sequence[str]) -> float:
  """Fraction of completions the task's exact verifier accepts."""
  if len(problems) != len(completions):
    raise ValueError(f"{len(problems)} problems but {len(completions)} completions")
  return float(np.mean([task.verify(p, c) for p, c in zip(problems, completions)]))


def evaluate(decode_fn: decoding.DecodeFn, params, task: Task, tokenizer: Tokenizer,
             problems: Sequence[Problem], *, name: str, round_: int, batch_size: int,
             prompt_len: int, rng: jax.Array, seed: int = 0, select: Selector | None = None
             ) -> tuple[dict[str, Any], list[str]]:
  """A ``results.json`` row for one method, and its completions."""
  prompts = [task.prompt(p) for p in problems]
  texts, compute = run_decoding(decode_fn, params, tokenizer, prompts, batch_size=batch_size,
                                prompt_len=prompt_len, rng=rng, desc=f"eval {name}",
                                select=select, extract_answer=task.extract_answer,
                                problems=problems, task=task)
  row = {"task": task.name, "round": round_, "decoding": name,
         "accuracy": accuracy(task, problems, texts), "num_problems": len(problems),
         "forward_passes_per_problem": compute["forward_passes"],
         "tokens_per_problem": compute["tokens"],
         "rollouts_per_problem": compute["rollouts"], "seed": seed}
  for key in ("flops", "policy_tokens", "critic_tokens"):
    if key in compute:
      row[f"{key}_per_problem"] = compute[key]
  for key, value in compute.items():
    if key.startswith("tree/"):
      row[key.replace("/", "_")] = value
  return row, texts
