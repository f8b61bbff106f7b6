"""Tokenizers over local tokenizer.json / sentencepiece files, and prompt templates.

The tokenizer files are trained here, on a few lines of text: nothing is
downloaded.
"""

import json
import os

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from alphallm import hf_tokenizer as hft
from alphallm import sampling
from alphallm.tokenizer import Tokenizer

CORPUS = [
    "Q: what is 12 + 35?", "Step 1: 12 + 35 = 47", "A: 47",
    "the quick brown fox jumps over the lazy dog", "hello world, hello tokenizer",
    "[INST] Solve it. [/INST] Sure.",
] * 20
BOS, EOS = "<|begin_of_text|>", "<|end_of_text|>"
TEXTS = ["hello world", " hello", "A: 47\nStep 2: x", "€ ünïcode\t tab  two", "", "\n\n"]


def _train_byte_level_bpe(directory, specials, config=None, post_bos=True):
  """A Llama-3-style byte-level BPE tokenizer.json (+ tokenizer_config.json)."""
  tokenizers = pytest.importorskip("tokenizers", reason="needs the `tokenizers` library")
  from tokenizers import decoders, models, pre_tokenizers, processors, trainers
  tok = tokenizers.Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=specials,
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                show_progress=False)
  tok.train_from_iterator(CORPUS, trainer)
  if post_bos:  # as Llama-3's: BOS added by the post-processor unless told not to
    tok.post_processor = processors.TemplateProcessing(
        single=f"{specials[0]} $A", special_tokens=[(specials[0], tok.token_to_id(specials[0]))])
  os.makedirs(directory, exist_ok=True)
  tok.save(os.path.join(directory, hft.TOKENIZER_JSON))
  if config is not None:
    with open(os.path.join(directory, hft.TOKENIZER_CONFIG), "w") as f:
      json.dump(config, f)
  return tok


@pytest.fixture(scope="module")
def bpe_dir(tmp_path_factory):
  d = str(tmp_path_factory.mktemp("bpe"))
  _train_byte_level_bpe(d, [BOS, EOS, "<|eot_id|>"], config={
      "bos_token": BOS,
      "eos_token": {"__type": "AddedToken", "content": EOS, "special": True},
      "pad_token": None})
  return d


@pytest.fixture(scope="module")
def bpe(bpe_dir):
  return hft.HFTokenizer.from_file(bpe_dir)


@pytest.fixture(scope="module")
def sp_model(tmp_path_factory):
  spm = pytest.importorskip("sentencepiece", reason="needs the `sentencepiece` library")
  d = tmp_path_factory.mktemp("sp")
  corpus = d / "corpus.txt"
  corpus.write_text("\n".join(CORPUS))
  # Llama-2's settings: identity normalisation, byte fallback, unk/bos/eos = 0/1/2, no pad.
  spm.SentencePieceTrainer.train(
      input=str(corpus), model_prefix=str(d / "tokenizer"), vocab_size=400, model_type="bpe",
      byte_fallback=True, normalization_rule_name="identity", remove_extra_whitespaces=False,
      hard_vocab_limit=False, split_digits=True, minloglevel=2)
  return str(d / "tokenizer.model")


# ---------------------------------------------------------------- tokenizer.json


def test_hf_special_ids_from_tokenizer_config(bpe):
  assert (bpe.bos_id, bpe.eos_id) == (0, 1)
  assert bpe.pad_id == bpe.eos_id  # no pad, no unk: the documented fallback
  assert bpe.vocab_size == 300


@pytest.mark.parametrize("text", TEXTS)
def test_hf_roundtrip_and_no_special_tokens_added(bpe, text):
  ids = bpe.encode(text)
  assert bpe.bos_id not in ids  # the post-processor's BOS is not added
  assert bpe.decode(ids) == text


@settings(max_examples=50, deadline=None)
@given(st.text(max_size=40))
def test_hf_roundtrip_any_text(bpe, text):
  if BOS in text or EOS in text:
    return
  assert bpe.decode(bpe.encode(text)) == text


def test_hf_decode_stops_at_eos_and_drops_bos_pad(bpe_dir):
  tok = hft.HFTokenizer.from_file(bpe_dir, pad="<|eot_id|>")
  assert tok.pad_id == 2
  ab, cd = tok.encode("ab"), tok.encode("cd")
  assert tok.decode([tok.pad_id, tok.bos_id] + ab + [tok.eos_id] + cd) == "ab"
  with pytest.raises(ValueError, match="outside the vocabulary"):
    tok.decode([tok.vocab_size + 3])


def test_hf_special_token_text_is_one_token(bpe):
  ids = bpe.encode("a<|eot_id|>b")
  assert 2 in ids and bpe.decode(ids) == "a<|eot_id|>b"


def test_hf_token_ids_ending_with_matches_base_class(bpe):
  fast = bpe.token_ids_ending_with("\n")
  assert fast == Tokenizer.token_ids_ending_with(bpe, "\n")
  assert fast and all(bpe.decode([i]).endswith("\n") for i in fast)


def test_hf_explicit_specials_and_errors(tmp_path):
  d = str(tmp_path)
  _train_byte_level_bpe(d, ["<s>", "</s>", "<pad>"], post_bos=False)  # no tokenizer_config
  with pytest.raises(hft.SpecialTokenError, match="no EOS token"):
    hft.HFTokenizer.from_file(d)
  tok = hft.HFTokenizer.from_file(os.path.join(d, hft.TOKENIZER_JSON), bos="<s>", eos=1,
                                  pad="<pad>")
  assert (tok.bos_id, tok.eos_id, tok.pad_id) == (0, 1, 2)
  with pytest.raises(hft.SpecialTokenError, match="'<nope>'.*not in the vocabulary"):
    hft.HFTokenizer.from_file(d, eos="<nope>")
  with pytest.raises(hft.SpecialTokenError, match="outside the vocabulary"):
    hft.HFTokenizer.from_file(d, eos=10_000)


def test_hf_qwen_style_config_without_bos(tmp_path):
  d = str(tmp_path)
  _train_byte_level_bpe(d, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], post_bos=False,
                        config={"bos_token": None, "eos_token": "<|im_end|>",
                                "pad_token": "<|endoftext|>"})
  tok = hft.load_tokenizer(d)
  assert isinstance(tok, hft.HFTokenizer)
  assert (tok.eos_id, tok.bos_id, tok.pad_id) == (2, 2, 0)  # BOS falls back to EOS


def test_encode_prompts_with_hf_tokenizer(bpe):
  ids, mask = sampling.encode_prompts(bpe, ["hello world", "A: 47"])
  assert ids.shape == mask.shape and (ids[:, -1] != bpe.pad_id).all()
  for row, text in zip(range(2), ["hello world", "A: 47"]):
    real = ids[row][mask[row]]
    assert real[0] == bpe.bos_id and bpe.decode(real) == text
    assert (ids[row][~mask[row]] == bpe.pad_id).all()


# ---------------------------------------------------------------- sentencepiece


def test_sp_special_ids(sp_model):
  tok = hft.SentencePieceTokenizer(sp_model)
  assert (tok.pad_id, tok.bos_id, tok.eos_id) == (0, 1, 2)  # pad falls back to unk (id 0)
  assert tok.vocab_size >= 259  # 256 byte pieces + specials
  tok = hft.SentencePieceTokenizer(sp_model, pad=2)
  assert tok.pad_id == 2
  with pytest.raises(hft.SpecialTokenError, match="not in the vocabulary"):
    hft.SentencePieceTokenizer(sp_model, eos="<|nope|>")


@pytest.mark.parametrize("text", TEXTS)
def test_sp_roundtrip(sp_model, text):
  tok = hft.SentencePieceTokenizer(sp_model)
  ids = tok.encode(text)
  assert tok.bos_id not in ids and tok.eos_id not in ids
  assert tok.decode(ids) == text


def test_sp_decode_and_stop_ids(sp_model):
  tok = hft.load_tokenizer(os.path.dirname(sp_model))
  assert isinstance(tok, hft.SentencePieceTokenizer)
  ab, cd = tok.encode("ab"), tok.encode("cd")
  assert tok.decode([tok.pad_id, tok.bos_id] + ab + [tok.eos_id] + cd) == "ab"
  newline = tok.token_ids_ending_with("\n")
  assert newline == Tokenizer.token_ids_ending_with(tok, "\n")
  assert set(tok.encode("\n")) & set(newline)


# ---------------------------------------------------------------- templates


def test_llama2_chat():
  assert hft.llama2_chat(" Solve 2+2.\n") == "[INST] Solve 2+2. [/INST]"
  assert hft.llama2_chat("Q", system="Be brief.") == (
      "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nQ [/INST]")


def test_few_shot():
  examples = [("Q: 1+1\n", "A: 2\n"), ("Q: 2+2\n", "A: 4\n")]
  assert hft.few_shot("Q: 3+3\n", examples) == "Q: 1+1\nA: 2\n\n\nQ: 2+2\nA: 4\n\n\nQ: 3+3\n"
  assert hft.few_shot("Q: 3+3\n", examples, separator="") == "Q: 1+1\nA: 2\nQ: 2+2\nA: 4\nQ: 3+3\n"
  assert hft.few_shot("Q", []) == "Q"


def test_prompt_template_from_config():
  template = hft.PromptTemplate.from_dict(
      {"chat": "llama2", "system": "S", "examples": [["Q: 1\n", "A: 1\n"]], "separator": "\n"})
  assert template.examples == (("Q: 1\n", "A: 1\n"),)
  assert template.format("Q: 2\n") == "[INST] <<SYS>>\nS\n<</SYS>>\n\nQ: 1\nA: 1\n\nQ: 2 [/INST]"
  assert hft.PromptTemplate().format("Q: 2\n") == "Q: 2\n"
  with pytest.raises(ValueError, match="chat must be one of"):
    hft.PromptTemplate(chat="chatml")
  with pytest.raises(ValueError, match="unknown prompt template keys"):
    hft.PromptTemplate.from_dict({"sytem": "typo"})
  with pytest.raises(ValueError, match="string pairs"):
    hft.PromptTemplate(examples=(("only one",),))


def test_template_encodes_with_real_tokenizer(bpe):
  text = hft.PromptTemplate(chat="llama2").format("Solve it.")
  assert bpe.decode(bpe.encode(text)) == "[INST] Solve it. [/INST]"
  assert np.all(np.asarray(bpe.encode(text)) < bpe.vocab_size)


@pytest.mark.parametrize("module, make", [
    ("tokenizers", lambda d: hft.HFTokenizer.from_file(d)),
    ("sentencepiece", lambda d: hft.SentencePieceTokenizer(d)),
])
def test_missing_optional_package_names_the_extra(tmp_path, monkeypatch, module, make):
  """Without the package: one line naming it and `pip install -e ".[hf]"`."""
  (tmp_path / "tokenizer.json").write_text("{}")
  (tmp_path / "tokenizer.model").write_bytes(b"")
  monkeypatch.setitem(__import__("sys").modules, module, None)  # import now fails
  with pytest.raises(ImportError) as e:
    make(str(tmp_path))
  message = str(e.value)
  assert f"'{module}'" in message and 'pip install -e ".[hf]"' in message
  assert "\n" not in message and str(tmp_path) in message
