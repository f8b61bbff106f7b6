"""The paper-small recipe: the quickstart loop, evaluated for Tables 2, 3 and 7.

Run (three seeds, writes DIR/results.md, results.json and plots/):

  python -m alphallm.paper_small --workdir=/tmp/alphallm_paper_small --seeds=0,1,2

``get_config(seed)`` is ``experiments/quickstart.py`` with that seed and the
loop's per-round evaluation reduced to greedy decoding and eta-MCTS (Table
2); the other decoding methods are evaluated once, on the round-0 policy, by
``alphallm.paper_small`` (Tables 3 and 7). ``get_config(seed, quick=True)``
shrinks every phase to toy sizes (the ``tests/test_experiment.py`` recipe) so
the whole pipeline runs in about a minute.

``get_tables_config(quick)`` holds the knobs of the extra evaluations.
"""

import os

import ml_collections

from alphallm import config_files

_QUICKSTART = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "quickstart.py")


def _quickstart():
  return config_files.load(_QUICKSTART, "_paper_small_quickstart")


def get_config(seed: int = 0, quick: bool = False) -> ml_collections.ConfigDict:
  """The loop's config for one seed (Table 2: rounds 0..2 x greedy, eta-MCTS)."""
  c = _quickstart().get_config()
  c.seed = seed
  c.eval.methods = ("greedy", "mcts")
  if quick:
    c.data.num_demos, c.data.num_eval = 64, 16
    c.model.num_layers, c.model.embed_dim, c.model.mlp_dim = 1, 32, 64
    c.sft.steps, c.sft.batch_size, c.sft.checkpoint_every, c.sft.warmup_steps = 6, 8, 3, 1
    c.critics.num_problems, c.critics.num_calibration_problems = 16, 8
    c.critics.critic.collect.batch_size = 32
    c.critics.critic.collect.num_samples = 2
    c.critics.critic.train.steps, c.critics.critic.train.checkpoint_every = 4, 2
    c.critics.critic.model = dict(num_layers=1, embed_dim=32, num_heads=4, num_kv_heads=2,
                                  head_dim=8, mlp_dim=64)
    c.search.num_simulations, c.search.num_actions = 4, 2
    c.search.max_completion_len = 24
    c.eval.batch_size = c.eval.search_batch_size = 16
    c.eval.max_new_tokens = 24
    c.loop.rounds = 2
    c.loop.prompts_per_round, c.loop.search_batch_size = 8, 8
    c.loop.sft.steps, c.loop.sft.checkpoint_every, c.loop.sft.batch_size = 2, 2, 8
  return c


def get_tables_config(quick: bool = False) -> ml_collections.ConfigDict:
  """Budgets of the Table 3 ablation and the Table 7 compute sweep."""
  t = ml_collections.ConfigDict()
  # Tables 3 and 7 are evaluated on the first num_problems eval problems (0: all
  # of them; Table 2 always uses all): 17 extra evaluations per seed must fit
  # the 60-minute budget of three seeds on a 2-core CPU.
  t.num_problems = 0 if quick else 128
  # Table 7: samples per problem of self-consistency / ORM re-rank, and the
  # eta-MCTS simulation budgets.
  t.num_samples = (2,) if quick else (4, 8, 16)
  t.mcts_simulations = (2,) if quick else (8, 16, 32)
  # Table 3: fast rollouts per new node, and the factor of "+ more rollouts"
  # (the paper's 55 -> 230 tree nodes: more simulations).
  t.fast_rollouts = 1
  t.more_simulations_factor = 2
  # Table 3 variants to evaluate (empty: all). Every variant compiles its own
  # search, so the quick mode keeps the two ends of the ablation.
  t.table3_variants = ("vanilla", "option_level_tool") if quick else ()
  return t
