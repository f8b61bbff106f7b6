"""Sibling groups: each expanded node's children with their values and visits (host side).

Step-level DPO (``dpo.pairs_from_groups``) and node-level distillation
(``distill.rows_from_groups``) read a finished search as a list of groups,
one per expanded node ``s`` with at least one real child::

  SiblingGroup(prefix   = the completion text up to s (root: ""),
               options  = the text each child's option adds, one per child,
               values   = Q(s, a) of each child's edge (reward + discount * mean value),
               visits   = N(s, a) of each child,
               terminal = whether each child ends the solution,
               node, children = tree indices of s and of each child)

``sibling_groups(tree, b, tokenizer)`` builds them from an
``alphallm.search.selection.TreeArrays`` (any object with its numpy fields
``parents, action_from_parent, children_index, children_visits, child_valid,
absorbing, qvalues, tokens, length, terminal``), reading every child's option
from its own tokens (``tokens[b, child, length[b, s]:length[b, child]]``).
A record stores them under ``extra["sibling_groups"]`` (``groups_to_json``);
``groups_from_json`` reads them back, naming the bad key.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class SiblingGroup:
  """One expanded node's real children (see the module doc); tuples of one length."""

  prefix: str
  options: tuple[str, ...]
  values: tuple[float, ...]
  visits: tuple[int, ...]
  terminal: tuple[bool, ...]
  node: int = 0
  children: tuple[int, ...] = ()

  def __post_init__(self):
    n = len(self.options)
    for name in ("values", "visits", "terminal"):
      if len(getattr(self, name)) != n:
        raise ValueError(f"SiblingGroup.{name} has {len(getattr(self, name))} entries, "
                         f"options has {n}")
    if self.children and len(self.children) != n:
      raise ValueError(f"SiblingGroup.children has {len(self.children)} entries, options has {n}")


def real_children(tree: Any, b: int, n: int) -> list[tuple[int, int]]:
  """``[(action, child)]`` of node ``n``'s expanded, non-absorbing children."""
  out = []
  for a, child in enumerate(np.asarray(tree.children_index[b, n])):
    child = int(child)
    if child >= 0 and bool(tree.child_valid[b, n, a]) and not bool(tree.absorbing[b, child]):
      out.append((a, child))
  return out


def _decode(tokenizer: Any, ids: np.ndarray) -> str:
  ids = [int(i) for i in ids]
  return tokenizer.decode(ids) if tokenizer is not None else " ".join(map(str, ids))


def _option_ids(tree: Any, b: int, child: int, start: int) -> np.ndarray:
  """The ids ``child`` added after its parent's ``start`` completion tokens."""
  return np.asarray(tree.tokens[b, child, start:int(tree.length[b, child])])


def sibling_groups(tree: Any, b: int, tokenizer: Any = None, min_visits: int = 1
                   ) -> list[SiblingGroup]:
  """Every expanded node of problem ``b`` with its real children visited ``>= min_visits``.

  A node is included when it is the root or real, is not terminal, and has at
  least one such child. Without a tokenizer texts are space-separated ids.
  """
  groups = []
  num_nodes = np.asarray(tree.parents).shape[1]
  for n in range(num_nodes):
    if (n > 0 and bool(tree.absorbing[b, n])) or bool(tree.terminal[b, n]):
      continue
    kids = [(a, c) for a, c in real_children(tree, b, n)
            if int(tree.children_visits[b, n, a]) >= min_visits]
    if not kids:
      continue
    start = int(tree.length[b, n])
    groups.append(SiblingGroup(
        prefix=_decode(tokenizer, np.asarray(tree.tokens[b, n, :start])),
        options=tuple(_decode(tokenizer, _option_ids(tree, b, c, start))
                      for _, c in kids),
        values=tuple(float(tree.qvalues[b, n, a]) for a, _ in kids),
        visits=tuple(int(tree.children_visits[b, n, a]) for a, _ in kids),
        terminal=tuple(bool(tree.terminal[b, c]) for _, c in kids),
        node=n, children=tuple(c for _, c in kids)))
  return groups


def groups_to_json(groups: Sequence[SiblingGroup]) -> list[dict[str, Any]]:
  """Plain JSON (for a record's ``extra["sibling_groups"]``)."""
  return [{"prefix": g.prefix, "options": list(g.options), "values": list(g.values),
           "visits": list(g.visits), "terminal": list(g.terminal), "node": g.node,
           "children": list(g.children)} for g in groups]


def _check_list(item: dict, key: str, where: str, ok) -> list:
  value = item.get(key)
  if not isinstance(value, list) or not all(ok(v) for v in value):
    raise ValueError(f"{where}: key {key!r} must be a list of the right type, got {value!r:.60}")
  return value


def groups_from_json(items: Any, where: str = "extra.sibling_groups") -> list[SiblingGroup]:
  """``groups_to_json``'s output back; a bad entry is an error naming it and its key."""
  if not isinstance(items, list):
    raise ValueError(f"{where} must be a list, got {type(items).__name__}")
  is_num = lambda v: (isinstance(v, (int, float)) and not isinstance(v, bool)  # noqa: E731
                      and math.isfinite(v))
  is_count = lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0  # noqa: E731
  out = []
  for i, item in enumerate(items):
    w = f"{where}[{i}]"
    if not isinstance(item, dict) or not isinstance(item.get("prefix"), str):
      raise ValueError(f"{w}: must be an object with a string 'prefix'")
    try:
      out.append(SiblingGroup(
          prefix=item["prefix"],
          options=tuple(_check_list(item, "options", w, lambda v: isinstance(v, str))),
          values=tuple(float(v) for v in _check_list(item, "values", w, is_num)),
          visits=tuple(_check_list(item, "visits", w, is_count)),
          terminal=tuple(_check_list(item, "terminal", w, lambda v: isinstance(v, bool))),
          node=int(item.get("node", 0)),
          children=tuple(_check_list(item, "children", w, is_count)) if "children" in item
          else ()))
    except ValueError as e:
      if str(e).startswith(w):
        raise
      raise ValueError(f"{w}: {e}") from None
  return out
