"""Policy-improvement operators: ways to turn search (or sampling) into a better policy.

One module per operator, chosen by name (``base.OPERATORS``, ``module_of``):

* ``sft``: filtered SFT on the best kept trajectory (the paper's; ``alphallm.improve``);
* ``distill``: the search's improved policy at every expanded node as weighted SFT rows;
* ``dpo``: step-level DPO on sibling options with a value gap, its implicit-reward critic;
* ``rft``: rejection sampling (STaR/RFT) at the search's FLOPs;
* ``grpo``: GRPO with a verifiable reward and a k3 KL penalty to the reference.

``tree`` reads sibling groups (a node's expanded children with their values
and visits) from a finished search, the input of ``dpo`` and ``distill``.
"""

from types import ModuleType

from alphallm.operators import distill, dpo, grpo, rft, sft
from alphallm.operators.base import OPERATORS, Operator, get_operator  # noqa: F401

_MODULES = {"sft": sft, "distill": distill, "dpo": dpo, "rft": rft, "grpo": grpo}
assert set(_MODULES) == set(OPERATORS), (sorted(_MODULES), sorted(OPERATORS))


def module_of(name: str) -> ModuleType:
  """The module of operator ``name`` (an unknown name is an error listing the known ones)."""
  return _MODULES[get_operator(name).name]
