"""experiments/paper/qwen2_5_1_5b_gsm8k.py's shape on CPU: a tiny random Qwen2.5.

The config file's own keys, pointed at files written into ``tmp_path`` (no
``../shared``, no network): a Qwen2.5-shaped HF checkpoint at toy width
(GQA 6:1, tied embeddings, q/k/v biases, rope_theta 1e6, bf16 safetensors,
vocabulary padded beyond the tokenizer's), a byte-level BPE tokenizer.json
with Qwen's special tokens and Qwen2.5-Instruct's tokenizer_config.json, and
a GSM8K-format dataset. The config validates; then alphallm's own loading
path (``builders``: tokenizer, ChatML-wrapped 4-shot task, model config,
checkpoint) feeds greedy decoding, checked against step-by-step full
forwards, one eta-MCTS search with the config's search features
(adaptive branching, merge, fast rollouts, best-leaf answer), shrunk, and
(with torch + transformers) logit parity with transformers' Qwen2.
The model computes in float32 here (the config's bfloat16 is for GPUs).
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alphallm import builders, config_files, model as model_lib, sampling, validation
from alphallm.search import mcts, selection

CONFIG_FILE = os.path.join(os.path.dirname(__file__), "..", "experiments", "paper",
                           "qwen2_5_1_5b_gsm8k.py")
_NAMES = ("Tom", "Ann", "Raj", "Mia", "Leo", "Zoe")


def _records(num: int, offset: int) -> list[dict[str, str]]:
  out = []
  for i in range(offset, offset + num):
    a, b = 2 + i % 7, 3 + i // 7
    out.append({"question": f"{_NAMES[i % 6]} has {a} pens and gets {b} more. How many now?",
                "answer": f"{a} + {b} = <<{a}+{b}={a + b}>>{a + b} pens.\n#### {a + b}"})
  return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  """``(module, config)``: the config file pointed at a tiny Qwen and a tiny GSM8K."""
  pytest.importorskip("tokenizers", reason="needs the hf extra (tokenizers)")
  pytest.importorskip("safetensors", reason="needs the hf extra (safetensors)")
  module = config_files.load(CONFIG_FILE)
  root = tmp_path_factory.mktemp("small_real")
  gsm8k = root / "gsm8k"
  gsm8k.mkdir()
  train, test = _records(24, 0), _records(8, 100)
  for name, rows in (("train", train), ("test", test)):
    with open(gsm8k / f"{name}.jsonl", "w", encoding="utf-8") as f:
      f.writelines(json.dumps(r) + "\n" for r in rows)
  texts = [module.CHATML.replace("{prompt}", f"Q: {r['question']}\n") + r["answer"]
           for r in train + test]
  ckpt = module.write_tiny_qwen(str(root / "qwen"), texts * 4)
  config = module.get_config()
  config.model.checkpoint = config.model.tokenizer = config.critics.checkpoint = ckpt
  config.task.knobs.data_dir = config.task.eval_knobs.data_dir = str(gsm8k)
  config.model.dtype = config.model.param_dtype = "float32"   # CPU
  return module, config


def test_config_validates_and_builds_the_qwen_shape(setup):
  module, config = setup
  validation.validate_config(config)
  tok = builders.build_tokenizer(config)
  assert tok.encode("<|im_end|>") == [tok.eos_id]                   # one special token each
  assert tok.encode("<|endoftext|>") == [tok.pad_id]
  assert tok.bos_id == tok.eos_id                                    # Qwen has no BOS
  cfg = builders.build_model_config(config, tok)
  assert cfg.vocab_size == tok.vocab_size                           # padding rows cut
  assert cfg.qkv_bias and cfg.tie_embeddings and cfg.rope_theta == 1e6
  assert (cfg.num_heads, cfg.num_kv_heads, cfg.rope_scaling) == (12, 2, "none")
  # The real model's config.json maps to the same family features.
  real = builders.hf_import.config_from_hf(module.QWEN25_15B_INSTRUCT)
  assert (real.num_heads // real.num_kv_heads, real.qkv_bias, real.tie_embeddings,
          real.rope_theta) == (6, True, True, 1e6)


@pytest.fixture(scope="module")
def loaded(setup):
  _, config = setup
  tok = builders.build_tokenizer(config)
  task = builders.build_eval_task(config, builders.build_task(config))
  cfg = builders.build_model_config(config, tok)
  params = builders.initial_policy(config, cfg, builders.build_mesh(config))
  return tok, task, cfg, params


def test_chatml_prompt_and_greedy_decoding(loaded):
  tok, task, cfg, params = loaded
  problem = task.generate(0, 1)[0]
  text = task.prompt(problem)
  assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>assistant\n")
  assert text.count("The answer is") == 4                            # the 4 shots
  ids, mask = sampling.encode_prompts(tok, [text])
  (start,) = tok.encode("<|im_start|>")
  assert list(ids[0]).count(start) == 3                              # special tokens, not text
  n = 6
  out = sampling.generate(params, cfg, jnp.asarray(ids), jnp.asarray(mask), jax.random.key(0),
                          max_new_tokens=n, temperature=0.0, pad_id=tok.pad_id)
  # Reference: argmax of a full causal forward, no cache, over the growing sequence
  # right-padded to one length (causal: the padding never affects earlier positions).
  seq, width = list(ids[0]), ids.shape[1] + n
  apply = jax.jit(lambda p, t: model_lib.Transformer(cfg).apply({"params": p}, t).logits)
  for _ in range(n):
    row = np.asarray(seq + [tok.pad_id] * (width - len(seq)), np.int32)[None]
    seq.append(int(np.argmax(apply(params, jnp.asarray(row))[0, len(seq) - 1])))
  np.testing.assert_array_equal(np.asarray(out.tokens[0]), seq[-n:])
  assert len(set(seq[-n:])) > 1, "a degenerate model: the check would be weak"


def test_one_small_search_with_the_configs_features(setup, loaded):
  _, config = setup
  tok, task, cfg, params = loaded
  s = config.search
  assert s.adaptive_branching.enabled and s.merge.enabled and s.rollout.enabled
  s = s.copy_and_resolve_references()
  s.num_simulations, s.num_actions, s.max_option_len, s.max_completion_len = 3, 3, 6, 12
  ab = s.adaptive_branching
  ab.c_max_root, ab.c_min_root, ab.c_max, ab.c_min = 3, 2, 2, 1
  s.rollout.num_rollouts, s.rollout.max_len = 1, 6
  s.merge.threshold = 1
  decode = selection.make_search_decoder(
      cfg, s, tok.eos_id, tok.token_ids_ending_with(task.step_delimiter), mcts.Critics(),
      tokenizer=tok, extract_answer=task.extract_answer,
      answer_prefix_ids=tok.encode(task.answer_prefix), pad_id=tok.pad_id, bos_id=tok.bos_id)
  ids, mask = sampling.encode_prompts(tok, [task.prompt(p) for p in task.generate(1, 2)])
  result = decode(params, jnp.asarray(ids), jnp.asarray(mask), jax.random.key(1))
  completions = np.asarray(result.completions)
  assert completions.shape[0] == 2 and completions.shape[1] >= 1
  assert (completions >= 0).all() and (completions < cfg.vocab_size).all()
  assert (np.asarray(result.forward_passes) > 1).all()
  texts = sampling.decode_completions(tok, completions)
  assert all(isinstance(t, str) for t in texts)


def test_tiny_qwen_matches_transformers(setup, loaded):
  """The written checkpoint read by transformers gives our logits (1e-4 relative)."""
  torch = pytest.importorskip("torch", reason="parity needs torch (CPU build)")
  transformers = pytest.importorskip("transformers", reason="parity needs transformers")
  _, config = setup
  tok, task, cfg, params = loaded
  hf = transformers.Qwen2ForCausalLM.from_pretrained(config.model.checkpoint,
                                                     dtype=torch.float32).eval()
  ids, _ = sampling.encode_prompts(tok, [task.prompt(task.generate(2, 1)[0])])
  with torch.no_grad():
    ref = hf(torch.tensor(ids, dtype=torch.long)).logits.numpy()[..., :cfg.vocab_size]
  ours = np.asarray(model_lib.Transformer(cfg).apply({"params": params}, jnp.asarray(ids)).logits)
  diff = np.abs(ours - ref).max() / np.abs(ref).max()
  assert diff <= 1e-4, f"relative max |logits - HF logits| = {diff}"
