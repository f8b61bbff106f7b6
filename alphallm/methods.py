"""Decoding methods by name, eta-MCTS included, for this run's model, task and critics.

``build_methods`` is the one registry of methods by name (their compute
accounting is ``alphallm.decoding``'s); the ``Context`` functions bind it to a run: the eval settings come
from ``config.eval``, the search's from ``config.search``, the critic slots
from ``critic_lifecycle.search_slots``. Every method is a
``decoding.DecodeFn`` that sees only the prompts.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections

from alphallm import critic_lifecycle
from alphallm import decoding
from alphallm.context import Context
from alphallm.search import mcts
from alphallm.search import selection


MULTI_SAMPLE = ("self_consistency", "best_of", "weighted_vote", "orm_rerank", "pass")


def build_methods(names, *, model_cfg, tokenizer, task, eval_settings, search_settings=None,
                  critics=None, critic_params=None, keep_search_output: bool = False
                  ) -> dict:
  """Every decoding method of ``names``: ``{name: (DecodeFn, Selector | None)}``.

  Plain values only: ``eval_settings`` is a mapping / object with
  ``max_new_tokens`` and ``temperature``; ``search_settings`` a search config
  (``mcts.default_search_config()``-like); ``critics`` / ``critic_params`` the
  search's critic slots (``alphallm.search.critic_slots``).

  Names: ``greedy``, ``sampling``, ``self_consistency@N`` (majority vote),
  ``best_of@N`` (the highest-scored of N by the trained critic: the value
  slot, else the ORM slot), ``weighted_vote@N`` (answers weighted by that
  critic), ``orm_rerank@N`` (the ORM slot's best), ``pass@N`` (N samples,
  the first returned: for pass@N / coverage reporting), ``mcts`` (eta-MCTS
  with ``search_settings``' answer selection) and ``mcts_token`` (the same at
  token granularity). Without trained critics the re-rankers use the
  policy's value head.
  """
  get = (lambda k: eval_settings[k]) if isinstance(eval_settings, dict) else (
      lambda k: getattr(eval_settings, k))
  max_new, temp = int(get("max_new_tokens")), float(get("temperature"))
  tok, eos, pad = tokenizer, tokenizer.eos_id, tokenizer.pad_id
  critics = critics or mcts.Critics()
  size = decoding.critic_size(critic_params)
  ranker = critics.value or critics.orm
  out = {}
  for name in names:
    base, _, n = name.partition("@")
    if name == "greedy":
      out[name] = (decoding.make_sampler(model_cfg, max_new, eos, pad_id=pad), None)
    elif name == "sampling":
      out[name] = (decoding.make_sampler(model_cfg, max_new, eos, temperature=temp, pad_id=pad), None)
    elif base in MULTI_SAMPLE and n.isdigit() and int(n) > 0:
      fn = decoding.make_multi_sampler(model_cfg, int(n), max_new, eos, temp, pad_id=pad)
      critic = critics.orm if base == "orm_rerank" else ranker
      if base in ("best_of", "weighted_vote", "orm_rerank") and critic is not None:
        fn = decoding.make_critic_reranker(fn, critic, critic_params, size, pad_id=pad, eos_id=eos)
      selector = {"self_consistency": decoding.select_majority, "best_of": decoding.select_max_score,
                  "weighted_vote": decoding.select_weighted_vote, "orm_rerank": decoding.select_max_score,
                  "pass": None}[base]
      out[name] = (fn, selector)
    elif name in ("mcts", "mcts_token"):
      if search_settings is None:
        raise ValueError(f"decoding method {name!r} needs search settings")
      cfg = mcts.SearchConfig.from_config(search_settings)
      if name == "mcts_token":
        cfg = dataclasses.replace(cfg, granularity="token",
                                  merge=dataclasses.replace(cfg.merge, enabled=False))
      out[name] = (selection.make_search_decoder(
          model_cfg, cfg, eos, tok.token_ids_ending_with(task.step_delimiter), critics,
          tokenizer=tok, extract_answer=task.extract_answer,
          answer_prefix_ids=tok.encode(task.answer_prefix), critic_params=critic_params,
          pad_id=pad, bos_id=tok.bos_id,
          same_step_ignored_ids=mcts.same_step_token_ids(tok, task.same_step_ignored),
          keep_output=keep_search_output), None)
    else:
      raise ValueError(f"unknown decoding method {name!r}; known: 'greedy', 'sampling', "
                       "'mcts', 'mcts_token', " + ", ".join(f"'{m}@N'" for m in MULTI_SAMPLE))
  return out


def _build(ctx: Context, names, critics, search_cfg=None) -> dict[str, tuple[Any, Any]]:
  slots, params = critic_lifecycle.search_slots(ctx, critics or {})
  return build_methods(
      tuple(names), model_cfg=ctx.model_cfg, tokenizer=ctx.tokenizer, task=ctx.task,
      eval_settings=ctx.config.eval,
      search_settings=search_cfg if search_cfg is not None else ctx.config.search,
      critics=slots, critic_params=params, keep_search_output=True)


def build_all(ctx: Context, critics) -> dict[str, tuple[Any, Any]]:
  """Every method of ``config.eval.methods``, in order: ``{name: (decode_fn, selector)}``."""
  return _build(ctx, ctx.config.eval.methods, critics)


def baselines(ctx: Context, names, critics=None) -> dict[str, tuple[Any, Any]]:
  """The methods ``names`` with ``config.eval``'s settings."""
  return _build(ctx, names, critics)


def baseline(name: str, ctx: Context, critics=None) -> tuple[Any, Any]:
  """The one method ``name``: ``(decode_fn, selector)``."""
  return baselines(ctx, [name], critics)[name]


def search_decoder(ctx: Context, critics, search_cfg=None) -> decoding.DecodeFn:
  """eta-MCTS with its answer selection as a ``decoding.DecodeFn`` (prompts only)."""
  return _build(ctx, ["mcts"], critics, search_cfg)["mcts"][0]


def build_search(ctx: Context, critics, search_cfg: ml_collections.ConfigDict | None = None):
  """``(search_fn, critic_params)``: the jitted eta-MCTS over this run's model and task."""
  cfg = search_cfg if search_cfg is not None else ctx.config.search
  slots, crit_params = critic_lifecycle.search_slots(ctx, critics)
  tok = ctx.tokenizer
  fn = mcts.make_search(
      ctx.model_cfg, cfg, tok.eos_id, tok.token_ids_ending_with(ctx.task.step_delimiter), slots,
      answer_prefix_ids=tok.encode(ctx.task.answer_prefix), pad_id=tok.pad_id,
      bos_id=tok.bos_id,
      same_step_ignored_ids=mcts.same_step_token_ids(tok, ctx.task.same_step_ignored))
  return fn, crit_params
