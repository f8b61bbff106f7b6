"""eta-MCTS: option-level (or token-level) tree search as one jitted function.

``make_search(...)`` builds ``search(params, prompt [B, P], prompt_mask [B, P],
rng, critic_params=None, rollout_params=None) -> SearchOutput``: a batched
Monte Carlo tree search over B problems. There is no Python per node or per
simulation: the simulations run in a ``lax.fori_loop`` (``engine``), and each
adds at most one node per problem.

Actions. Option level (default): an action is one reasoning step, a token
sequence ended by a delimiter token, EOS, or ``max_option_len``. Children are
created on demand: a node starts with no children; a simulation that selects
the node's next empty slot (progressive widening, capped by adaptive
branching) samples one new option there from the node's KV cache, and
resamples it while it is the same step as a sibling (``expansion``). The
keys/values computed while sampling are the child's path KV: expanding never
re-encodes. Token level: child i is the node's i-th most probable next token
(never PAD or BOS, see ``never_proposed``).

Selection (``tree_ops``): ``policy`` "uct" (the paper's UCT as printed),
"puct" or "gumbel"; a finished subtree (terminal, or all children closed and
no more allowed) or an exhausted node (no new step found) is closed and draws
no more simulations.

Evaluation: each critic fills its own slot (``Critics``: value, PRM, ORM);
the node score is the weighted sum of ``node_score``. A node reaching the
completion limit without an answer scores 0. Fast rollouts (optional) add
the mean ORM of sampled completions; their best completion is kept as an
answer candidate, and ``min_solutions`` completes unfinished leaves after the
search (``rollouts``).

Memory. The prompt's KV cache ``[L, B, P, K, H]`` is computed once per
problem; a node stores its completion path's keys/values ``[L, C, K, H]``,
its tokens and its next-token logits ``[V]`` (``bytes_per_node``).

Compute accounting per problem (``SearchOutput``): ``forward_passes``
(``alphallm.decoding``'s: a prefill counts 1; each sampled token 1, rejected
draws included; each token a critic re-encodes 1), ``tokens`` (generated),
and for FLOPs ``policy_tokens`` (the prefill counted as its prompt tokens),
``critic_tokens`` and ``rollout_tokens``. ``stats``: ``TreeStats``.

Axis letters: B problems, N nodes (``num_simulations + 1``), A child slots,
O option length, C completion slots, P prompt slots, L layers, K kv heads,
H head dim, V vocabulary.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax.numpy as jnp

from alphallm import model as model_lib
from alphallm.search import engine
from alphallm.search.nodes import (Critics, CriticFn, NodeEmbedding, SearchOutput,  # noqa: F401
                                   TreeStats, last_real_index, node_score, value_head_critic)
from alphallm.search.settings import (ANSWER_SELECTIONS, GRANULARITIES, POLICIES,  # noqa: F401
                                      PRIORS, AdaptiveBranchingConfig, MergeConfig,
                                      RolloutConfig, SearchConfig, WeightsConfig,
                                      WideningConfig, default_search_config)
from alphallm.tokenizer import BOS_ID, PAD_ID

count_trace = engine.count_trace
num_traces = engine.num_traces


def bytes_per_node(model_config: model_lib.TransformerConfig, search_config: Any) -> dict:
  """Bytes one tree node costs: its embedding and the tree's per-node arrays.

  Returns ``{"path_kv": ..., "embedding": ..., "tree_arrays": ..., "total": ...}``.
  None of it depends on the prompt length.
  """
  cfg = SearchConfig.from_config(search_config)
  c, a, o = cfg.max_completion_len, cfg.tree_actions, cfg.option_len
  kv_item = jnp.dtype(model_config.dtype).itemsize
  path_kv = 0 if cfg.recompute_prefix else (
      2 * model_config.num_layers * c * model_config.num_kv_heads * model_config.head_dim
      * kv_item)
  # tokens + rollout tokens [C], option [O], next logits [V], children's options [A, O],
  # 3 [A] arrays, and about 20 scalars.
  emb = (path_kv + 4 * 2 * c + 4 * o + 4 * model_config.vocab_size + 4 * a * o + 9 * a
         + 20 * 4)
  # visits, value sum, parent, action, num children, 2 flags, and [A] children / priors /
  # visits / rewards / discounts / values.
  tree = 5 * 4 + 2 + 6 * 4 * a
  return {"path_kv": path_kv, "embedding": emb, "tree_arrays": tree, "total": emb + tree}


def never_proposed(pad_id: int, bos_id: int, eos_id: int) -> tuple[int, ...]:
  """Token ids token-level search gives no action: PAD and BOS, unless either is EOS.

  A tokenizer without a PAD or BOS token falls back to its EOS
  (``alphallm.hf_tokenizer``; e.g. Qwen2's BOS), and EOS must stay reachable.
  """
  out = []
  for i in (pad_id, bos_id):
    if i != eos_id and i not in out:
      out.append(i)
  return tuple(out)


def make_search(model_config: model_lib.TransformerConfig, search_config: Any, eos_id: int,
                delimiter_ids: Sequence[int], critics: Critics | None = None, *,
                answer_prefix_ids: Sequence[int] | None = None,
                rollout_model_config: model_lib.TransformerConfig | None = None,
                pad_id: int = PAD_ID, bos_id: int = BOS_ID,
                same_step_ignored_ids: Sequence[int] = ()) -> Callable[..., SearchOutput]:
  """Builds the jitted ``search(params, prompt, prompt_mask, rng, critic_params=None,
  rollout_params=None) -> SearchOutput``.

  Args:
    model_config: the policy/value model.
    search_config: a ``default_search_config()``-like ConfigDict or a SearchConfig.
    eos_id: the end-of-solution token.
    delimiter_ids: tokens that end an option (e.g. the ids ending with "\\n").
    critics: the value / PRM / ORM slots (default: the policy's value head).
    answer_prefix_ids: ids of the answer line's prefix (e.g. "A: "): an option
      starting with them ends the solution. None: EOS and the length limit only.
    rollout_model_config: config of a separate (smaller) fast-rollout policy;
      its params are ``search``'s ``rollout_params``. None: the policy itself.
    pad_id, bos_id: the tokenizer's PAD / BOS (``never_proposed``).
    same_step_ignored_ids: the task's same-step hook as token ids
      (``Task.same_step_ignored`` encoded): with ``merge.enabled`` two
      options equal once these are dropped are the same step.

  Equal arguments share one compiled search.
  """
  cfg = SearchConfig.from_config(search_config)
  return _make_search(engine.SearchSpec(
      model_config=model_config, cfg=cfg, eos_id=int(eos_id),
      delimiter_ids=tuple(int(i) for i in delimiter_ids), critics=critics or Critics(),
      answer_prefix_ids=None if answer_prefix_ids is None else tuple(
          int(i) for i in answer_prefix_ids),
      rollout_model_config=rollout_model_config, pad_id=int(pad_id), bos_id=int(bos_id),
      banned=never_proposed(int(pad_id), int(bos_id), int(eos_id)),
      same_step_ignored_ids=tuple(int(i) for i in same_step_ignored_ids)))


@functools.lru_cache(maxsize=64)
def _make_search(spec: engine.SearchSpec):
  return engine.build(spec)


def same_step_token_ids(tokenizer, chars: str) -> tuple[int, ...]:
  """Token ids of the single characters of ``chars`` (``Task.same_step_ignored``).

  Characters the tokenizer cannot encode as one token are skipped (with a
  subword tokenizer a space fused into a word token is not dropped: the
  normalisation is then partial, never wrong).
  """
  out = []
  for ch in chars:
    try:
      ids = tokenizer.encode(ch)
    except Exception:  # an unknown character  # pylint: disable=broad-except
      continue
    if len(ids) == 1 and ids[0] not in out:
      out.append(int(ids[0]))
  return tuple(out)
