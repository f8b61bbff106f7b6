"""Tree export: one problem's search tree as graphviz DOT text.

No graphviz dependency: ``tree_to_dot`` returns the text, e.g. to write to a
``.dot`` file and render with ``dot -Tsvg``. Each real node is labelled with
its option text (decoded with the tokenizer, escaped), visits N, Q (the
parent's Q-value of the edge, reward + discount * mean value, as the search
sees it; the root's mean value), prior probability p (from its parent's prior logits),
value-head value v and node score s; terminal nodes are boxes. Absorbing
dummies below terminal nodes are left out unless asked for.
"""

from __future__ import annotations

import numpy as np

from alphallm.search import mcts
from alphallm.search.selection import TreeArrays
from alphallm.tokenizer import Tokenizer


def escape(text: str) -> str:
  """Text safe inside a DOT double-quoted string; newlines shown as ``\\n``."""
  return (text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\\\n")
          .replace("\r", "\\\\r").replace("\t", "\\\\t"))


def _softmax(x: np.ndarray) -> np.ndarray:
  z = np.exp(x - x.max())
  return z / z.sum()


def option_text(t: TreeArrays, b: int, n: int, tokenizer: Tokenizer | None) -> str:
  """The tokens node n added to its parent's completion, as text (ids if no tokenizer)."""
  parent = t.parents[b, n]
  start = t.length[b, parent] if parent >= 0 else 0
  ids = t.tokens[b, n, start:t.length[b, n]]
  if tokenizer is None:
    return " ".join(str(int(i)) for i in ids)
  eos = [i for i, x in enumerate(ids) if int(x) == tokenizer.eos_id]
  text = tokenizer.decode(ids)
  return text + ("<eos>" if eos else "")


def tree_to_dot(output: mcts.SearchOutput | TreeArrays, batch_index: int = 0,
                tokenizer: Tokenizer | None = None, *, include_absorbing: bool = False,
                max_label_chars: int = 48) -> str:
  """DOT text of problem ``batch_index``'s tree."""
  t = output if isinstance(output, TreeArrays) else TreeArrays(output)
  b = batch_index
  real = t.real(b)
  lines = [f"digraph search_tree_{b} {{", "  node [fontname=\"monospace\", fontsize=10];"]
  shown = set()
  for n in range(real.shape[0]):
    if not (real[n] or include_absorbing) or (n > 0 and t.node_visits[b, n] == 0):
      continue
    shown.add(n)
    parent = t.parents[b, n]
    if n == 0:
      text, prior, q = "<root>", 1.0, float(t.node_values[b, 0])
    else:
      text = option_text(t, b, n, tokenizer)
      a = t.action_from_parent[b, n]
      prior = float(_softmax(t.children_prior_logits[b, parent])[a])
      q = float(t.qvalues[b, parent, a])
    if len(text) > max_label_chars:
      text = text[:max_label_chars] + "..."
    kind = "absorbing" if not real[n] else ("terminal" if t.terminal[b, n] else "")
    label = (f"{escape(text)}\\nN={int(t.node_visits[b, n])} Q={q:.3f} "
             f"p={prior:.3f}\\nv={t.value[b, n]:.3f} s={t.score[b, n]:.3f}"
             + (f"\\n{kind}" if kind else ""))
    shape = "box" if t.terminal[b, n] else ("point" if not real[n] else "ellipse")
    lines.append(f"  n{n} [label=\"{label}\", shape={shape}];")
  for n in sorted(shown):
    parent = t.parents[b, n]
    if n > 0 and parent in shown:
      a = t.action_from_parent[b, n]
      visits = int(t.children_visits[b, parent, a])
      lines.append(f"  n{parent} -> n{n} [label=\"a{a} N={visits}\"];")
  lines.append("}")
  return "\n".join(lines) + "\n"
