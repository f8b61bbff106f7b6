"""alphallm: self-improving LMs with imagination, eta-MCTS and critics (JAX/Flax).

The paper's parts map to modules (data flows one way, top to bottom):

* ``alphallm.main``          -- the CLI: flags only.
* ``alphallm.experiment``    -- ``train_and_evaluate``: validate, lock the workdir, run.
* ``alphallm.loop``          -- Algorithm 1: imagine, search, collect, improve, evaluate.
* ``alphallm.schema``, ``validation`` -- every config key in one place; checked first.
* ``alphallm.builders``, ``context`` -- tokenizer, tasks, model, mesh: the run's ``Context``.
* Imagination: ``alphallm.imagination`` (+ ``imagination_rules`` for the built-in tasks).
* Searching: ``alphallm.search`` (eta-MCTS on mctx), ``alphallm.methods`` (decoding
  methods by name), ``alphallm.decoding``, ``alphallm.sampling``.
* Criticizing: ``alphallm.critics`` (value / PRM / ORM heads), ``critic_data``
  (trajectories, labels), ``critic_lifecycle`` (train, calibrate, the search's slots),
  ``alphallm.tools`` (the in-graph step calculator), ``alphallm.graders``.
* Improving: ``alphallm.improve`` (SFT on the kept trajectories), ``alphallm.train``
  (the data-parallel ``shard_map`` + ``pmean`` step), ``alphallm.sharding`` (FSDP).
* The model: ``alphallm.model`` (a transformer with a policy head and a value head),
  ``alphallm.hf_import`` / ``hf_tokenizer`` (local HF checkpoints).
* Tasks and data: ``alphallm.tasks``, ``alphallm.datasets``, ``alphallm.data``.
* State on disk: ``alphallm.workdir``, ``checkpoint``, ``trajectories``, ``metrics``,
  ``results``, ``plots``.
"""

# The built-in tasks' imagination rules register themselves (no JAX is imported).
from alphallm import imagination_rules as _imagination_rules  # noqa: F401

__version__ = "0.1.0"
