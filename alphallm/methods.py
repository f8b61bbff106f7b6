"""Decoding methods by name, eta-MCTS included: the one place ``config.eval.methods`` is read.

Names: ``greedy``, ``sampling``, ``self_consistency@N`` (majority vote),
``best_of@N`` (value-head re-rank), ``weighted_vote@N`` (value-weighted
vote) and ``mcts`` (eta-MCTS with ``config.search.answer_selection``). Every
method is a ``decoding.DecodeFn`` that sees only the prompts; the search's
critics come from ``critic_lifecycle.search_slots``.
"""

from __future__ import annotations

from typing import Any

import ml_collections

from alphallm import critic_lifecycle
from alphallm import decoding
from alphallm import evaluation
from alphallm.context import Context
from alphallm.search import mcts
from alphallm.search import selection

# Methods named "NAME@N" draw N samples and choose one on the host with a selector.
MULTI_SAMPLE = {"self_consistency": "majority", "best_of": "max_score",
                "weighted_vote": "weighted_vote"}


def baseline(name: str, ctx: Context) -> tuple[decoding.DecodeFn, evaluation.Selector | None]:
  """The sampling-based method called ``name`` (validated by ``alphallm.validation``)."""
  ev, tok, model_cfg = ctx.config.eval, ctx.tokenizer, ctx.model_cfg
  base, _, n = name.partition("@")
  if name == "greedy":
    return decoding.make_sampler(model_cfg, ev.max_new_tokens, tok.eos_id,
                                 pad_id=tok.pad_id), None
  if name == "sampling":
    return decoding.make_sampler(model_cfg, ev.max_new_tokens, tok.eos_id,
                                 temperature=ev.temperature, pad_id=tok.pad_id), None
  if base in MULTI_SAMPLE and n.isdigit() and int(n) > 0:
    return (decoding.make_multi_sampler(model_cfg, int(n), ev.max_new_tokens, tok.eos_id,
                                        ev.temperature, pad_id=tok.pad_id),
            decoding.SELECTORS[MULTI_SAMPLE[base]])
  raise ValueError(f"config.eval.methods: unknown method {name!r}; known: 'greedy', "
                   "'sampling', 'mcts', " + ", ".join(f"'{m}@N'" for m in MULTI_SAMPLE))


def build_search(ctx: Context, critics, search_cfg: ml_collections.ConfigDict | None = None):
  """``(search_fn, critic_params)``: the jitted eta-MCTS over this run's model and task."""
  cfg = search_cfg if search_cfg is not None else ctx.config.search
  crit, crit_params = critic_lifecycle.search_slots(ctx, critics)
  tok = ctx.tokenizer
  fn = mcts.make_search(ctx.model_cfg, cfg, tok.eos_id, tok.token_ids_ending_with(
      ctx.task.step_delimiter), crit, answer_prefix_ids=tok.encode(ctx.task.answer_prefix),
      pad_id=tok.pad_id, bos_id=tok.bos_id)
  return fn, crit_params


def search_decoder(ctx: Context, critics, search_cfg=None) -> decoding.DecodeFn:
  """eta-MCTS with its answer selection as a ``decoding.DecodeFn`` (prompts only)."""
  cfg = mcts.SearchConfig.from_config(search_cfg if search_cfg is not None
                                      else ctx.config.search)
  crit, crit_params = critic_lifecycle.search_slots(ctx, critics)
  tok = ctx.tokenizer
  return selection.make_search_decoder(
      ctx.model_cfg, cfg, tok.eos_id, tok.token_ids_ending_with(ctx.task.step_delimiter), crit,
      tokenizer=tok, extract_answer=ctx.task.extract_answer,
      answer_prefix_ids=tok.encode(ctx.task.answer_prefix), critic_params=crit_params,
      pad_id=tok.pad_id, bos_id=tok.bos_id)


def build_all(ctx: Context, critics) -> dict[str, tuple[Any, Any]]:
  """Every method of ``config.eval.methods``, in order: ``{name: (decode_fn, selector)}``."""
  return {name: ((search_decoder(ctx, critics), None) if name == "mcts"
                 else baseline(name, ctx))
          for name in ctx.config.eval.methods}


def baselines(ctx: Context, names) -> dict[str, tuple[Any, Any]]:
  """The sampling-based methods ``names`` (no search), with ``config.eval``'s settings."""
  return {name: baseline(name, ctx) for name in names}
