"""The package's shape: no import circles, no hidden imports, small files, one-way data flow."""

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "alphallm")
MAX_LINES = 600
MAX_LOOP_LINES = 450
# The spine, top to bottom: a module never imports one above it. The command-line
# entry points (``main``; ``paper_small``, which runs the loop and then its tables) sit on top.
SPINE = ("alphallm.main", "alphallm.experiment", "alphallm.loop")
ENTRY_POINTS = ("alphallm.main", "alphallm.paper_small")


def _modules() -> dict[str, str]:
  out = {}
  for dirpath, _, files in os.walk(PACKAGE):
    for name in files:
      if name.endswith(".py"):
        path = os.path.join(dirpath, name)
        rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
        out[rel[:-len(".__init__")] if rel.endswith(".__init__") else rel] = path
  return out


def _imports(path: str, modules) -> list[tuple[str, bool]]:
  """(alphallm module imported, whether at module level) for every import in ``path``."""
  tree = ast.parse(open(path, encoding="utf-8").read())
  top = set(map(id, tree.body))
  found = []
  for node in ast.walk(tree):
    names = []
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    for name in names:
      if name in modules:
        found.append((name, id(node) in top))
  return found


def _graph():
  modules = _modules()
  graph = {}
  for name, path in modules.items():
    # A package's own __init__ is not an edge of its submodules (Python loads it first).
    graph[name] = {m for m, _ in _imports(path, modules)
                   if m != name and not name.startswith(m + ".")}
  return graph


def _cycle(graph):
  state, stack = {}, []

  def visit(node):
    state[node] = 1
    stack.append(node)
    for nxt in sorted(graph.get(node, ())):
      if state.get(nxt) == 1:
        return stack[stack.index(nxt):] + [nxt]
      if nxt not in state:
        found = visit(nxt)
        if found:
          return found
    stack.pop()
    state[node] = 2
    return None

  for node in sorted(graph):
    if node not in state:
      found = visit(node)
      if found:
        return found
  return None


def test_no_import_circle():
  assert _cycle(_graph()) is None, " -> ".join(_cycle(_graph()))


def test_no_function_level_imports_of_the_package():
  modules = _modules()
  hidden = [f"{os.path.relpath(path, ROOT)}: {m}" for name, path in modules.items()
            for m, at_top in _imports(path, modules) if not at_top]
  assert not hidden, hidden


def test_spine_runs_one_way():
  graph = _graph()
  for i, name in enumerate(SPINE):
    above = set(SPINE[:i])
    assert not graph[name] & above, (name, graph[name] & above)
  parts = set(graph) - set(SPINE) - set(ENTRY_POINTS)
  for part in parts:
    assert not graph[part] & set(SPINE), (part, graph[part] & set(SPINE))


@pytest.mark.parametrize("name", sorted(_modules()))
def test_file_size(name):
  path = _modules()[name]
  lines = sum(1 for _ in open(path, encoding="utf-8"))
  limit = MAX_LOOP_LINES if name == "alphallm.loop" else MAX_LINES
  assert lines <= limit, f"{os.path.relpath(path, ROOT)}: {lines} lines > {limit}"


def test_cycle_detector_finds_a_circle():
  assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
  assert _cycle({"a": {"b"}, "b": set()}) is None
