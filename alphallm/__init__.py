"""alphallm: self-improving LMs with imagination, eta-MCTS and critics (JAX/Flax).

The paper's parts map to modules:

* ``alphallm.model``        -- policy/value transformer (shared trunk, two heads).
* ``alphallm.sampling``     -- batched, jit-compiled decoding with a KV cache.
* ``alphallm.tokenizer``    -- tokenizer interface and the character tokenizer.
* ``alphallm.tasks``        -- verifiable tasks (prompt, steps, answer, verifier).
* ``alphallm.train``        -- SFT with a data-parallel (shard_map + pmean) step.
* ``alphallm.checkpoint``   -- orbax checkpoints of the training state.
* ``alphallm.evaluation``   -- accuracy of decoding methods, results.json/.md.
* ``alphallm.experiment``   -- ``train_and_evaluate(config, workdir)``.
"""

__version__ = "0.1.0"
