"""A straightforward Python MCTS over options: the baseline of ``benchmarks/search.py``.

This is how public LLM tree-search code is written: the tree lives in Python
objects, one tree per problem, and each expansion calls the model. It is
written fairly: the same model and the same per-expansion work as the jitted
search (one jitted call per expansion that encodes the chosen option into a
copy of the parent's KV cache and samples the child's A candidate options
with the incremental decoder; identical candidates are de-duplicated with a
count prior), the PUCT rule of ``mctx.muzero_action_selection`` (Q normalised
by the parent and siblings, the same ``pb_c``) in plain Python, no needless
host transfers
(one ``device_get`` of the candidates per expansion, which the tree logic
needs), and terminal leaves are re-scored without a model call.

Each node keeps its full KV cache (``[L, 1, P + C + O, K, H]``) on device.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from alphallm import model as model_lib
from alphallm.search import options as opt_lib
from alphallm.tokenizer import PAD_ID


class Node:
  __slots__ = ("parent", "tokens", "cache", "value", "terminal", "reward", "cands", "counts",
               "children", "visits", "value_sum")

  def __init__(self, parent, tokens, cache, value, terminal, reward, cands, counts):
    self.parent = parent
    self.tokens = tokens          # completion ids (list)
    self.cache = cache            # device KVCache with prompt + completion
    self.value = value
    self.terminal = terminal
    self.reward = reward
    self.cands = cands            # list of candidate options (tuples of ids)
    self.counts = counts          # multiplicity of each candidate
    self.children = {}
    self.visits = 0
    self.value_sum = 0.0


class PythonMCTS:
  """Option-level PUCT search, one problem at a time."""

  def __init__(self, model_config, params, *, num_actions, max_option_len, max_completion_len,
               eos_id, delimiter_ids, temperature=1.0, pb_c_init=1.0, pb_c_base=19652.0):
    self.cfg = model_config
    self.params = params
    self.a, self.o, self.c = num_actions, max_option_len, max_completion_len
    self.eos = eos_id
    self.stop_ids = jnp.asarray(sorted(set(delimiter_ids) | {eos_id}), jnp.int32)
    self.temperature = temperature
    self.pb_c_init, self.pb_c_base = pb_c_init, pb_c_base
    self.expansions = 0
    self._root = jax.jit(self._root_fn)
    self._expand = jax.jit(self._expand_fn)

  # -- jitted model calls (B = 1 problem) ------------------------------------

  def _candidates(self, params, cache, logits, length, prompt_len, rng):
    rows = opt_lib.repeat_cache(cache, self.a)
    p = cache.length - self.c - self.o
    limit = jnp.minimum(self.c - length, self.o)
    s = opt_lib.sample_options(
        self.cfg, params, rows, jnp.repeat(logits, self.a, axis=0),
        jnp.full((self.a,), p) + length, jnp.full((self.a,), prompt_len) + length,
        jnp.full((self.a,), limit), self.stop_ids, rng, max_len=self.o,
        temperature=self.temperature)
    return s.tokens, s.lengths

  def _root_fn(self, params, prompt, prompt_mask, rng):
    p = prompt.shape[1]
    out = model_lib.Transformer(self.cfg).apply(
        {"params": params}, prompt, model_lib.default_positions(prompt_mask), prompt_mask,
        model_lib.KVCache.init(self.cfg, 1, p + self.c + self.o), jnp.zeros((1,), jnp.int32))
    prompt_len = prompt_mask.sum().astype(jnp.int32)
    toks, lens = self._candidates(params, out.cache, out.logits[:, -1], 0, prompt_len, rng)
    return out.cache, out.values[0, -1], toks, lens

  def _expand_fn(self, params, cache, option, opt_len, length, prompt_len, rng):
    p = cache.length - self.c - self.o
    logits, value, cache = opt_lib.encode(
        self.cfg, params, cache, option[None], opt_len[None], (p + length)[None],
        (prompt_len + length)[None])
    toks, lens = self._candidates(params, cache, logits, length + opt_len, prompt_len, rng)
    return cache, value[0], toks, lens

  # -- tree logic in Python ---------------------------------------------------

  def _dedupe(self, toks, lens):
    counts = {}
    for t, n in zip(toks, lens):
      if n > 0:
        key = tuple(int(x) for x in t[:n])
        counts[key] = counts.get(key, 0) + 1
    return list(counts), list(counts.values())

  def _select(self, node):
    """PUCT as mctx: normalised Q (unvisited = min) + pb_c * p * sqrt(N) / (1 + n)."""
    total = sum(node.counts)
    node_value = node.value_sum / max(node.visits, 1)
    qs = {i: c.value_sum / c.visits for i, c in node.children.items() if c.visits}
    lo = min([node_value, *qs.values()])
    hi = max([node_value, *qs.values()])
    pb_c = self.pb_c_init + math.log((node.visits + self.pb_c_base + 1) / self.pb_c_base)
    sqrt_n = math.sqrt(node.visits)
    best, best_score = None, -math.inf
    for i, count in enumerate(node.counts):
      q = (qs.get(i, lo) - lo) / max(hi - lo, 1e-8)
      child = node.children.get(i)
      n = child.visits if child else 0
      score = q + pb_c * (count / total) * sqrt_n / (1 + n)
      if score > best_score:
        best, best_score = i, score
    return best

  def search(self, prompt, prompt_mask, num_simulations, rng):
    """Runs the search for one problem ``[1, P]``; returns the root."""
    prompt_len = int(np.asarray(prompt_mask).sum())
    rng, key = jax.random.split(rng)
    cache, value, toks, lens = self._root(self.params, prompt, prompt_mask, key)
    toks, lens, value = jax.device_get((toks, lens, value))
    cands, counts = self._dedupe(toks, lens)
    root = Node(None, [], cache, float(value), False, 0.0, cands, counts)
    root.visits, root.value_sum = 1, float(value)
    for _ in range(num_simulations):
      node, path = root, [root]
      while True:
        i = self._select(node)
        if i in node.children and not node.children[i].terminal:
          node = node.children[i]
          path.append(node)
          continue
        break
      if i in node.children:                 # a terminal leaf: its reward is known
        leaf = node.children[i]
        path.append(leaf)
      else:
        option = list(node.cands[i])
        padded = jnp.asarray(option + [PAD_ID] * (self.o - len(option)), jnp.int32)
        rng, key = jax.random.split(rng)
        cache, value, toks, lens = self._expand(
            self.params, node.cache, padded, jnp.int32(len(option)), jnp.int32(len(node.tokens)),
            jnp.int32(prompt_len), key)
        toks, lens, value = jax.device_get((toks, lens, value))
        self.expansions += 1
        tokens = node.tokens + option
        terminal = option[-1] == self.eos or len(tokens) >= self.c
        cands, counts = self._dedupe(toks, lens) if not terminal else ([], [])
        leaf = Node(node, tokens, cache, float(value), terminal,
                    float(value) if terminal else 0.0, cands, counts)
        node.children[i] = leaf
        path.append(leaf)
      g = leaf.reward if leaf.terminal else leaf.value   # undiscounted, reward at the end
      for n in path:
        n.visits += 1
        n.value_sum += g
    return root

