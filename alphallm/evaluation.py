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
                 extract_answer: Callable[[str], Any] | None = None
                 ) -> tuple[list[str], dict[str, float]]:
  """Runs ``decode_fn`` over all prompts in fixed-size batches.

  With ``select`` (a host-side selector from ``decoding.SELECTORS``), the
  method's ``candidates`` are decoded and one is chosen per problem.

  Returns the completion texts and the per-problem means of the compute
  counters (``forward_passes``, ``tokens``, ``rollouts``).
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
    for key in totals:
      totals[key] += float(np.asarray(getattr(result, key))[:real].sum())
  return texts, {k: v / len(prompts) for k, v in totals.items()}


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
                                select=select, extract_answer=task.extract_answer)
  row = {"task": task.name, "round": round_, "decoding": name,
         "accuracy": accuracy(task, problems, texts), "num_problems": len(problems),
         "forward_passes_per_problem": compute["forward_passes"],
         "tokens_per_problem": compute["tokens"],
         "rollouts_per_problem": compute["rollouts"], "seed": seed}
  return row, texts
