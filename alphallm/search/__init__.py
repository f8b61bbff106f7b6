"""Searching (the paper's eta-MCTS), batched and jit-compiled on mctx.

Modules:

* ``mcts``      -- ``make_search(...) -> search(params, prompt, prompt_mask, rng)``:
  option- or token-level eta-MCTS (Gumbel MuZero or PUCT) with adaptive
  branching, state merge, fast rollouts and pluggable critics; the search
  config (``default_search_config``) and ``SearchOutput``.
* ``options``   -- options (reasoning steps): sampling, termination, edit
  distance, sibling merge, adaptive branching, priors.
* ``selection`` -- answer selection from a finished tree (most visited path,
  best leaf, ORM re-rank, ORM-weighted vote) and the ``decoding`` interface.
* ``beam``      -- step-level beam search baseline.
* ``export``    -- a tree as graphviz DOT text.
"""

from alphallm.search.beam import BeamConfig, make_beam_search
from alphallm.search.export import tree_to_dot
from alphallm.search.mcts import (Critics, NodeEmbedding, SearchConfig, SearchOutput,
                                  bytes_per_node, default_search_config, make_search,
                                  node_score, value_head_critic)
from alphallm.search.selection import make_search_decoder, select_nodes

__all__ = [
    "BeamConfig", "Critics", "NodeEmbedding", "SearchConfig", "SearchOutput",
    "bytes_per_node", "default_search_config", "make_beam_search", "make_search",
    "make_search_decoder", "node_score", "select_nodes", "tree_to_dot", "value_head_critic",
]
