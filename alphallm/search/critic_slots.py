"""The search's critic slots, assembled from trained critics and tools.

``critic_slots(value=..., prm=..., orm=..., step_checker=...)`` returns
``(mcts.Critics, critic_params)``: each trained critic fills its own slot
(the value function v(s), the PRM, the ORM), so a run with all three uses all
three. A critic is anything with ``score(params, tokens, mask) -> [N]`` and
``params`` (``alphallm.critics.Critic``); the same critic may fill several
slots. ``step_checker`` (a tool ``CriticFn`` that ignores its params, e.g. the
arithmetic calculator of ``alphallm.tools``) multiplies the PRM and ORM slots
(and the value slot when one is filled), so a state with a wrong step scores
0; with no learned PRM / ORM the checker alone fills that slot.

``critic_params`` is ``{slot: params}``; each bound function picks its own
entry, so the compiled search takes the critics' weights as arguments and is
shared by equal configurations (bound functions are cached per (slot, fn)).
"""

from __future__ import annotations

import functools
from typing import Any

from alphallm.search.nodes import CriticFn, Critics

SLOTS = ("value", "prm", "orm")


@functools.lru_cache(maxsize=None)
def _bound(slot: str, fn: CriticFn) -> CriticFn:
  return lambda p, tokens, mask: fn(p[slot], tokens, mask)


@functools.lru_cache(maxsize=None)
def _checked(fn: CriticFn | None, checker: CriticFn) -> CriticFn:
  """``checker * fn`` (the checker alone when ``fn`` is None)."""
  if fn is None:
    return checker
  return lambda p, tokens, mask: checker(p, tokens, mask) * fn(p, tokens, mask)


def critic_slots(value: Any = None, prm: Any = None, orm: Any = None,
                 step_checker: CriticFn | None = None) -> tuple[Critics, dict]:
  """``(Critics, critic_params)`` for ``mcts.make_search`` (see the module doc)."""
  params: dict[str, Any] = {}
  fns: dict[str, CriticFn | None] = {}
  for slot, critic in (("value", value), ("prm", prm), ("orm", orm)):
    if critic is None:
      fns[slot] = None
      continue
    for attr in ("score", "params"):
      if not hasattr(critic, attr):
        raise TypeError(f"critic_slots: the {slot} critic has no {attr!r} "
                        f"(got {type(critic).__name__})")
    params[slot] = critic.params
    fns[slot] = _bound(slot, critic.score)
  if step_checker is not None:
    for slot in ("prm", "orm"):
      fns[slot] = _checked(fns[slot], step_checker)
    if fns["value"] is not None:
      fns["value"] = _checked(fns["value"], step_checker)
  return Critics(value=fns["value"], prm=fns["prm"], orm=fns["orm"]), params
