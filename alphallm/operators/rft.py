"""Rejection sampling (STaR / RFT): N samples per prompt, keep the verified ones, SFT on them.

The baseline the search must beat at equal compute: the same prompts, N
independent samples each (``alphallm.decoding.make_multi_sampler``), the
exact verifier as the filter, then the ``sft`` objective on what passed.

``select_verified`` keeps, per prompt, the verified samples in sampling order,
drops exact duplicates of a kept completion (RFT's "distinct reasoning
paths"; compared as strings with surrounding whitespace stripped) and keeps
at most ``max_per_prompt``.

FLOP matching (``alphallm.decoding``'s accounting, ``2 x parameters x
tokens processed``): one sample costs its prompt prefill plus its generated
tokens, ``2 P (prompt_tokens + completion_tokens)``, so a search that spent
``F`` FLOPs per problem buys ``N = floor(F / (2 P (prompt + completion)))``
samples (``samples_matching_flops``, at least 1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from alphallm import data
from alphallm import decoding


def select_verified(prompts: Sequence[str], samples: Sequence[Sequence[str]],
                    verified: Sequence[Sequence[bool]], max_per_prompt: int = 0
                    ) -> list[tuple[str, str]]:
  """``[(prompt, completion)]`` SFT rows: verified, deduplicated, at most ``max_per_prompt``.

  ``samples[i]`` / ``verified[i]`` are prompt i's N completions and their
  verifier labels; ``max_per_prompt`` 0 means no cap.
  """
  if not len(prompts) == len(samples) == len(verified):
    raise ValueError(f"select_verified: {len(prompts)} prompts, {len(samples)} sample lists, "
                     f"{len(verified)} label lists")
  if max_per_prompt < 0:
    raise ValueError(f"select_verified: max_per_prompt must be >= 0, got {max_per_prompt!r}")
  rows = []
  for i, (prompt, outs, labels) in enumerate(zip(prompts, samples, verified)):
    if len(outs) != len(labels):
      raise ValueError(f"select_verified: prompt {i} has {len(outs)} samples but "
                       f"{len(labels)} labels")
    seen: set[str] = set()
    for text, ok in zip(outs, labels):
      key = text.strip()
      if not ok or key in seen:
        continue
      seen.add(key)
      rows.append((prompt, text))
      if max_per_prompt and len(seen) >= max_per_prompt:
        break
  return rows


def rft_dataset(tokenizer: Any, rows: Sequence[tuple[str, str]], seq_len: int,
                prompt_loss_weight: float = 0.0) -> dict[str, np.ndarray] | None:
  """The SFT batch of ``rows`` (``data.encode_examples``), None when nothing passed."""
  if not rows:
    return None
  return data.encode_examples(tokenizer, [p for p, _ in rows], [c for _, c in rows], seq_len,
                              prompt_loss_weight=prompt_loss_weight)


def sample_flops(num_params: int, prompt_tokens: float, completion_tokens: float) -> float:
  """FLOPs of one sample: ``2 x params x (prompt + completion tokens)`` (``decoding.flops``)."""
  return float(decoding.flops(float(prompt_tokens) + float(completion_tokens), num_params))


def samples_matching_flops(search_flops_per_problem: float, num_params: int,
                           prompt_tokens: float, completion_tokens: float) -> int:
  """How many samples per prompt cost at most the search's FLOPs per problem (>= 1).

  ``prompt_tokens``/``completion_tokens`` are the mean prompt length and the
  mean generated length per sample (measure them with a small pilot, or use
  the search's own mean completion length).
  """
  for name, value in (("search_flops_per_problem", search_flops_per_problem),
                      ("num_params", num_params), ("completion_tokens", completion_tokens)):
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
      raise ValueError(f"samples_matching_flops: {name} must be a positive number, got {value!r}")
  if not (math.isfinite(prompt_tokens) and prompt_tokens >= 0):
    raise ValueError(f"samples_matching_flops: prompt_tokens must be >= 0, got {prompt_tokens!r}")
  per_sample = sample_flops(num_params, prompt_tokens, completion_tokens)
  return max(1, int(math.floor(search_flops_per_problem / per_sample + 1e-9)))
