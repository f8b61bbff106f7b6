"""Answer selection from a finished eta-MCTS tree (host side, numpy).

Four rules pick one node per problem (``select_nodes``):

* ``most_visited``: from the root follow the most visited child (ties: the
  higher Q) until a terminal node or a node without expanded children;
* ``best_leaf``: the finished leaf (terminal with an answer) with the
  highest node score s; without one, the best-scored leaf (training
  selection: the loop's filter then judges the chosen solution);
* ``orm_rerank``: the answer candidate with the highest ORM score;
* ``orm_vote``: answer candidates vote for their extracted answer with weight
  ``max(ORM, 0)`` (ties: more votes); the winner's highest-ORM one is taken.

Answer candidates are the terminal nodes and the finished fast rollouts /
leaf completions the search kept (index ``N + node``, see
``TreeArrays.completion``).

The re-rank and vote fall back to ``most_visited`` when the tree has no
terminal node (vote: none with an answer). A chosen node that is not terminal
is completed greedily by the policy (``complete_greedily``), and those passes
are added to the accounting. ``make_search_decoder`` wraps search, selection
and completion into the ``alphallm.decoding`` interface.

Absorbing dummies (below terminal nodes) are never candidates.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from alphallm import decoding
from alphallm import model as model_lib
from alphallm import sampling
from alphallm.search import mcts
from alphallm.search import options as opt_lib
from alphallm.tokenizer import BOS_ID, PAD_ID, Tokenizer


class TreeArrays:
  """Numpy copies of the fields of a ``SearchOutput`` that selection reads.

  Shapes: ``[B, N]`` per node, ``[B, N, A]`` per child.
  """

  def __init__(self, output: mcts.SearchOutput):
    t, e = output.tree, output.tree.embeddings
    get = lambda x: np.asarray(jax.device_get(x))  # noqa: E731
    self.node_visits = get(t.node_visits)
    self.node_values = get(t.node_values)
    self.parents = get(t.parents)
    self.action_from_parent = get(t.action_from_parent)
    self.children_index = get(t.children_index)
    self.children_visits = get(t.children_visits)
    self.children_prior_logits = get(t.children_prior_logits)
    self.qvalues = get(t.children_rewards + t.children_discounts * t.children_values)
    self.tokens = get(e.tokens)
    self.length = get(e.length)
    self.child_valid = get(e.child_valid)
    self.terminal = get(e.terminal)
    self.absorbing = get(e.absorbing)
    self.value = get(e.value)
    self.prm = get(e.prm)
    self.orm = get(e.orm)
    self.has_orm = get(e.has_orm)
    self.score = get(e.score)
    self.depth = get(e.depth)
    n, c = self.tokens.shape[1], self.tokens.shape[2]
    b = self.tokens.shape[0]
    opt = lambda name, fill, shape, dtype: (  # noqa: E731
        get(getattr(e, name)) if getattr(e, name, None) is not None else np.full(shape, fill, dtype))
    self.has_answer = opt("has_answer", True, (b, n), bool) & self.terminal
    self.rollout_tokens = opt("rollout_tokens", 0, (b, n, c), np.int32)
    self.rollout_len = opt("rollout_len", 0, (b, n), np.int32)
    self.rollout_orm = opt("rollout_orm", 0.0, (b, n), np.float32)
    self.rollout_finished = opt("rollout_finished", False, (b, n), bool)

  @property
  def batch_size(self) -> int:
    return self.node_visits.shape[0]

  def real(self, b: int) -> np.ndarray:
    """``[N]`` True for real nodes (the root and non-absorbing expanded nodes)."""
    r = ~self.absorbing[b]
    r[0] = True
    return r

  def real_children(self, b: int, n: int) -> list[int]:
    """Actions of node n whose child is an expanded real node."""
    out = []
    for a, child in enumerate(self.children_index[b, n]):
      if child >= 0 and self.child_valid[b, n, a] and not self.absorbing[b, child]:
        out.append(a)
    return out

  @property
  def num_nodes(self) -> int:
    return self.node_visits.shape[1]

  def completion(self, b: int, n: int) -> np.ndarray:
    """Candidate ``n``'s tokens: node n, or for ``n >= N`` node ``n - N``'s kept rollout."""
    if n >= self.num_nodes:
      m = n - self.num_nodes
      return self.rollout_tokens[b, m, :self.rollout_len[b, m]]
    return self.tokens[b, n, :self.length[b, n]]

  def candidate_orm(self, b: int, n: int) -> float:
    if n >= self.num_nodes:
      return float(self.rollout_orm[b, n - self.num_nodes])
    return float(self.orm[b, n])


def most_visited_node(t: TreeArrays, b: int) -> int:
  n = 0
  while not t.terminal[b, n]:
    actions = t.real_children(b, n)
    if not actions:
      break
    a = max(actions, key=lambda a: (t.children_visits[b, n, a], t.qvalues[b, n, a]))
    n = int(t.children_index[b, n, a])
  return n


def best_leaf_node(t: TreeArrays, b: int) -> int:
  """The best-scored finished leaf (terminal with an answer); else the best leaf."""
  real = t.real(b)
  finished = [n for n in range(1, real.shape[0]) if real[n] and t.has_answer[b, n]]
  if finished:
    return max(finished, key=lambda n: t.score[b, n])
  leaves = [n for n in range(1, real.shape[0]) if real[n] and not t.real_children(b, n)]
  if not leaves:
    return 0
  return max(leaves, key=lambda n: t.score[b, n])


def terminal_nodes(t: TreeArrays, b: int) -> list[int]:
  real = t.real(b)
  return [n for n in range(1, real.shape[0]) if real[n] and t.terminal[b, n]]


def answer_candidates(t: TreeArrays, b: int, include_rollouts: bool = True) -> list[int]:
  """Finished nodes (terminal with an answer), then kept finished rollouts (``N + node``).

  A node cut by the completion limit, or ended without the answer line, is
  no candidate (it scores 0 in the search).
  """
  nodes = [n for n in terminal_nodes(t, b) if t.has_answer[b, n]]
  if not include_rollouts:
    return nodes
  real = t.real(b)
  kept = [t.num_nodes + n for n in range(real.shape[0]) if real[n] and t.rollout_finished[b, n]]
  return nodes + kept


def orm_rerank_node(t: TreeArrays, b: int, include_rollouts: bool = True) -> int:
  nodes = answer_candidates(t, b, include_rollouts)
  if not nodes:
    return most_visited_node(t, b)
  return max(nodes, key=lambda n: t.candidate_orm(b, n))


def orm_vote_node(t: TreeArrays, b: int, answer_of: Callable[[np.ndarray], str | None],
                  include_rollouts: bool = True) -> int:
  groups: dict[str, list[int]] = {}
  for n in answer_candidates(t, b, include_rollouts):
    ans = answer_of(t.completion(b, n))
    if ans is not None:
      groups.setdefault(ans, []).append(n)
  if not groups:
    return most_visited_node(t, b)

  def weight(nodes):
    return sum(max(t.candidate_orm(b, n), 0.0) for n in nodes), len(nodes)

  best = max(groups.values(), key=weight)
  return max(best, key=lambda n: t.candidate_orm(b, n))


def select_nodes(output: mcts.SearchOutput | TreeArrays, method: str, *,
                 tokenizer: Tokenizer | None = None,
                 extract_answer: Callable[[str], str | None] | None = None,
                 include_rollouts: bool = False) -> np.ndarray:
  """``[B]`` chosen node index per problem (see the module doc for ``method``).

  With ``include_rollouts`` the re-rank and vote also consider kept
  rollouts, returned as ``N + node`` (read them with ``node_completions``);
  without, every index is a tree node.
  """
  t = output if isinstance(output, TreeArrays) else TreeArrays(output)
  if method == "most_visited":
    pick = functools.partial(most_visited_node, t)
  elif method == "best_leaf":
    pick = functools.partial(best_leaf_node, t)
  elif method == "orm_rerank":
    pick = functools.partial(orm_rerank_node, t, include_rollouts=include_rollouts)
  elif method == "orm_vote":
    if tokenizer is None or extract_answer is None:
      raise ValueError("answer selection 'orm_vote' needs a tokenizer and extract_answer")
    answer_of = lambda ids: extract_answer(tokenizer.decode(ids))  # noqa: E731
    pick = functools.partial(orm_vote_node, t, answer_of=answer_of,
                             include_rollouts=include_rollouts)
  else:
    raise ValueError(f"unknown answer selection {method!r}; expected one of "
                     f"{mcts.ANSWER_SELECTIONS}")
  return np.array([pick(b) for b in range(t.batch_size)], np.int32)


def node_completions(output: mcts.SearchOutput | TreeArrays, nodes: Sequence[int]
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """``(tokens [B, C], lengths [B], terminal [B])`` of the chosen nodes."""
  t = output if isinstance(output, TreeArrays) else TreeArrays(output)
  rows = np.arange(t.batch_size)
  nodes = np.asarray(nodes)
  kept = nodes >= t.num_nodes
  idx = np.where(kept, nodes - t.num_nodes, nodes)
  tokens = np.where(kept[:, None], t.rollout_tokens[rows, idx], t.tokens[rows, idx])
  lengths = np.where(kept, t.rollout_len[rows, idx], t.length[rows, idx])
  return tokens, lengths, t.terminal[rows, idx] | kept


@functools.partial(jax.jit, static_argnames=("config", "eos_id", "pad_id"))
def complete_greedily(params, config: model_lib.TransformerConfig, prompt: jax.Array,
                      prompt_mask: jax.Array, partial: jax.Array, partial_len: jax.Array, *,
                      eos_id: int, pad_id: int = PAD_ID
                      ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Greedy continuation of ``prompt ++ partial[:partial_len]`` up to ``C`` tokens.

  Returns ``(completions [B, C], forward_passes [B], tokens [B])``: the
  re-encoded prefix counts ``1 + partial_len`` (prompt prefill + the partial
  completion re-encoded) plus one pass per generated token within the cap.
  ``partial`` holds ``pad_id`` beyond ``partial_len`` (only the length is
  read), and so do the completions beyond their ends.
  """
  c = partial.shape[1]
  seq = jnp.concatenate([prompt, partial], axis=1)
  mask = jnp.concatenate([prompt_mask, jnp.arange(c)[None, :] < partial_len[:, None]], axis=1)
  order = jnp.argsort(mask, axis=1, stable=True)          # left-pad: PAD slots first
  seq = jnp.take_along_axis(seq, order, axis=1)
  mask = jnp.take_along_axis(mask, order, axis=1)
  out = sampling.generate(params, config, seq, mask, jax.random.key(0), max_new_tokens=c,
                          stop_tokens=jnp.array([eos_id], jnp.int32), pad_id=pad_id)
  completions = opt_lib.splice(partial, out.tokens, partial_len, pad_id)
  generated = jnp.minimum(out.lengths, c - partial_len).astype(jnp.float32)
  return completions, 1.0 + partial_len + generated, generated


def make_search_decoder(model_config: model_lib.TransformerConfig, search_config: Any,
                        eos_id: int, delimiter_ids: Sequence[int],
                        critics: mcts.Critics | None = None, *, tokenizer: Tokenizer | None = None,
                        extract_answer: Callable[[str], str | None] | None = None,
                        answer_prefix_ids: Sequence[int] | None = None, critic_params: Any = None,
                        rollout_model_config: model_lib.TransformerConfig | None = None,
                        rollout_params: Any = None, pad_id: int = PAD_ID,
                        bos_id: int = BOS_ID, same_step_ignored_ids: Sequence[int] = (),
                        keep_output: bool = False) -> decoding.DecodeFn:
  """eta-MCTS + ``search_config.answer_selection`` as a ``decoding.DecodeFn``.

  ``critic_params`` / ``rollout_params`` are bound here (the interface passes
  only the policy params); see ``mcts.make_search`` for the other arguments
  (``pad_id`` / ``bos_id``: the tokenizer's). The result carries the
  search's ``TreeStats`` (``DecodeResult.stats``) and, with ``keep_output``,
  the whole ``SearchOutput`` (``DecodeResult.search``, for reporting).
  The returned function runs on the host (the vote calls ``extract_answer``
  on text); the search and the greedy completion inside are jitted. It sees
  only the prompts.
  """
  cfg = mcts.SearchConfig.from_config(search_config)
  critic_size = decoding.critic_size(critic_params)
  rollout_size = decoding.param_count(rollout_params) if rollout_params is not None else 0
  search = mcts.make_search(model_config, cfg, eos_id, delimiter_ids, critics,
                            answer_prefix_ids=answer_prefix_ids,
                            rollout_model_config=rollout_model_config, pad_id=pad_id,
                            bos_id=bos_id, same_step_ignored_ids=same_step_ignored_ids)

  def decode(params, prompt, prompt_mask, rng) -> decoding.DecodeResult:
    out = search(params, prompt, prompt_mask, rng, critic_params, rollout_params)
    t = TreeArrays(out)
    nodes = select_nodes(t, cfg.answer_selection, tokenizer=tokenizer,
                         extract_answer=extract_answer, include_rollouts=True)
    tokens, lengths, terminal = node_completions(t, nodes)
    fwd = np.asarray(out.forward_passes, np.float32)
    toks = np.asarray(out.tokens, np.float32)
    policy = np.asarray(out.policy_tokens, np.float32)
    if not terminal.all():
      done, extra_fwd, extra_toks = complete_greedily(
          params, model_config, prompt, prompt_mask, jnp.asarray(tokens),
          jnp.asarray(lengths), eos_id=eos_id, pad_id=pad_id)
      need = ~terminal
      tokens = np.where(need[:, None], np.asarray(done), tokens)
      fwd = fwd + need * np.asarray(extra_fwd)
      toks = toks + need * np.asarray(extra_toks)
      # The greedy completion re-encodes prompt + partial path, then decodes.
      policy = policy + need * (np.asarray(prompt_mask).sum(1) + np.asarray(extra_fwd) - 1.0)
    crit = np.asarray(out.critic_tokens["critics"], np.float32)
    roll = np.asarray(out.rollout_tokens, np.float32)
    csize = critic_size if critic_params is not None else decoding.param_count(params)
    total = decoding.flops(policy, decoding.param_count(params), crit, csize, roll,
                           rollout_size)
    return decoding.DecodeResult(
        completions=jnp.asarray(tokens), forward_passes=jnp.asarray(fwd),
        flops=jnp.asarray(total, jnp.float32),
        tokens=jnp.asarray(toks), rollouts=out.rollouts, policy_tokens=jnp.asarray(policy),
        critic_tokens=jnp.asarray(crit), rollout_tokens=jnp.asarray(roll), stats=out.stats, search=out if keep_output else None)

  return decode
