"""Real tokenizers (local tokenizer.json / sentencepiece .model) and prompt templates.

Two :class:`~alphallm.tokenizer.Tokenizer` implementations for pretrained
models, both read from local files only (nothing is downloaded):

* :class:`HFTokenizer`: a ``tokenizer.json`` through the ``tokenizers``
  library (Llama-3, Qwen2/2.5, and Llama-2's converted tokenizer), with
  special tokens from the ``tokenizer_config.json`` next to it or given
  explicitly;
* :class:`SentencePieceTokenizer`: a sentencepiece ``.model`` (Llama-2's
  original ``tokenizer.model``), special ids from the model itself.

Special ids, which the ``Tokenizer`` interface needs as plain ints:

* ``eos_id``: the tokenizer's EOS token (required).
* ``bos_id``: its BOS token; a tokenizer without one (Qwen2's ``bos_token``
  is null) falls back to the EOS token, the document separator such models
  were pretrained with, because the library prepends ``bos_id`` to every
  prompt.
* ``pad_id``: its PAD token, else its UNK token (Llama-2: id 0, which is
  also ``alphallm.tokenizer.PAD_ID``), else the EOS token (Llama-3 base).
  It only fills the slots around sequences, which the library always masks
  out with explicit masks or lengths (never ``tokens != pad_id``), so
  ``pad_id == eos_id`` is fine. ``decode`` drops ``pad_id``, so with the UNK
  fallback unknown tokens vanish from decoded text; pass an explicit ``pad``
  token when the vocabulary has a spare one (e.g. Llama-3.1's
  ``<|finetune_right_pad_id|>``).

A tokenizer without an EOS token is the one that cannot work (there is
nothing to stop generation at, nor for BOS and PAD to fall back on):
``SpecialTokenError``.

Every special id can be overridden with a token string or an int id.

Prompt templates are plain functions and a config-friendly
:class:`PromptTemplate` (strings and tuples only): the Llama-2 chat format
the paper prompts with, and a k-shot template that puts solved examples
before the question.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

from alphallm import hf_families, io_utils
from alphallm.tokenizer import Tokenizer

TOKENIZER_JSON = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
SENTENCEPIECE_MODEL = "tokenizer.model"

SpecialToken = str | int | None


class SpecialTokenError(ValueError):
  """A special token is missing from the vocabulary or not configured."""


def _resolve_special(name: str, value: SpecialToken, token_to_id, vocab_size: int,
                     source: str) -> int | None:
  """A special token given as text or id -> its id (None stays None)."""
  if value is None:
    return None
  if isinstance(value, bool) or not isinstance(value, (int, str)):
    raise SpecialTokenError(f"{name} must be a token string or an int id, got {value!r}")
  if isinstance(value, int):
    if not 0 <= value < vocab_size:
      raise SpecialTokenError(
          f"{name} id {value} ({source}) is outside the vocabulary [0, {vocab_size})")
    return value
  i = token_to_id(value)
  if i is None:
    raise SpecialTokenError(f"{name} token {value!r} ({source}) is not in the vocabulary")
  return int(i)


def _choose_specials(bos: int | None, eos: int | None, pad: int | None, unk: int | None,
                     source: str) -> tuple[int, int, int]:
  """Applies the documented fallbacks: ``(bos, eos, pad)``."""
  if eos is None:
    raise SpecialTokenError(
        f"no EOS token for {source}: set eos_token in {TOKENIZER_CONFIG} or pass eos=")
  bos = eos if bos is None else bos
  if pad is None:
    pad = unk if unk is not None else eos
  return bos, eos, pad


def _filter_ids(ids: Sequence[int], tok: Tokenizer) -> list[int]:
  """Ids up to the first EOS, without PAD and BOS; range-checked."""
  out = []
  for i in ids:
    i = int(i)
    if i == tok.eos_id:
      break
    if i in (tok.pad_id, tok.bos_id):
      continue
    if not 0 <= i < tok.vocab_size:
      raise ValueError(f"token id {i} is outside the vocabulary [0, {tok.vocab_size})")
    out.append(i)
  return out


def _config_token(config: Mapping[str, Any], key: str) -> str | None:
  """A special token of tokenizer_config.json: a string or an AddedToken dict."""
  value = config.get(key)
  if isinstance(value, Mapping):
    value = value.get("content")
  return value if isinstance(value, str) else None


class HFTokenizer(Tokenizer):
  """A ``tokenizers.Tokenizer`` (tokenizer.json) behind the library's interface.

  ``encode`` adds no special tokens (the library adds BOS/EOS itself); text
  spelling a special token (e.g. ``<|im_start|>``) is encoded as that token.
  ``decode`` keeps special tokens other than BOS/PAD in the text.
  """

  def __init__(self, tokenizer: Any, *, bos: SpecialToken = None, eos: SpecialToken = None,
               pad: SpecialToken = None, unk: SpecialToken = None, source: str = "tokenizer"):
    """Wraps a loaded ``tokenizers.Tokenizer``; see the module doc for fallbacks."""
    self._tok = tokenizer
    self._vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
    ids = {name: _resolve_special(name, value, tokenizer.token_to_id, self._vocab_size, source)
           for name, value in (("bos", bos), ("eos", eos), ("pad", pad), ("unk", unk))}
    self.bos_id, self.eos_id, self.pad_id = _choose_specials(
        ids["bos"], ids["eos"], ids["pad"], ids["unk"], source)

  @classmethod
  def from_file(cls, path: str, *, bos: SpecialToken = None, eos: SpecialToken = None,
                pad: SpecialToken = None) -> "HFTokenizer":
    """Loads ``tokenizer.json`` (a file, or a directory holding one).

    Special tokens not given explicitly are read from ``tokenizer_config.json``
    in the same directory (``bos_token``, ``eos_token``, ``pad_token``,
    ``unk_token``), when there is one.
    """
    file = os.path.join(path, TOKENIZER_JSON) if os.path.isdir(path) else path
    if not os.path.isfile(file):
      raise FileNotFoundError(f"no tokenizer file at {file!r}")
    rust = hf_families.import_hf_extra("tokenizers", f"reading {file}")
    config_file = os.path.join(os.path.dirname(file), TOKENIZER_CONFIG)
    config = io_utils.read_json(config_file) if os.path.isfile(config_file) else {}
    source = f"{file}" + (f" + {config_file}" if config else "")

    def pick(explicit, key):
      return explicit if explicit is not None else _config_token(config, key)

    return cls(rust.Tokenizer.from_file(file), bos=pick(bos, "bos_token"),
               eos=pick(eos, "eos_token"), pad=pick(pad, "pad_token"),
               unk=_config_token(config, "unk_token"), source=source)

  @property
  def vocab_size(self) -> int:
    return self._vocab_size

  def encode(self, text: str) -> list[int]:
    return list(self._tok.encode(text, add_special_tokens=False).ids)

  def decode(self, ids: Sequence[int]) -> str:
    return self._tok.decode(_filter_ids(ids, self), skip_special_tokens=False)

  def token_ids_ending_with(self, suffix: str) -> list[int]:
    """As the base class, with one batched decode over the vocabulary."""
    specials = {self.pad_id, self.bos_id, self.eos_id}
    texts = self._tok.decode_batch([[i] for i in range(self.vocab_size)],
                                   skip_special_tokens=False)
    return [i for i, t in enumerate(texts) if i not in specials and t.endswith(suffix)]


class SentencePieceTokenizer(Tokenizer):
  """A sentencepiece ``.model`` (e.g. Llama-2's ``tokenizer.model``).

  Special ids come from the model (``bos_id()``, ``eos_id()``, ``pad_id()``,
  ``unk_id()``; -1 means none) unless given; see the module doc for fallbacks.
  """

  def __init__(self, model_file: str, *, bos: SpecialToken = None, eos: SpecialToken = None,
               pad: SpecialToken = None):
    if os.path.isdir(model_file):
      model_file = os.path.join(model_file, SENTENCEPIECE_MODEL)
    if not os.path.isfile(model_file):
      raise FileNotFoundError(f"no sentencepiece model at {model_file!r}")
    spm = hf_families.import_hf_extra("sentencepiece", f"reading {model_file}")
    self._sp = spm.SentencePieceProcessor(model_file=model_file)
    self._vocab_size = self._sp.get_piece_size()

    def to_id(piece):
      i = self._sp.piece_to_id(piece)
      return None if i == self._sp.unk_id() and piece != self._sp.id_to_piece(i) else i

    def own(i):
      return None if i < 0 else i

    def resolve(name, value, fallback):
      if value is None:
        return fallback
      return _resolve_special(name, value, to_id, self._vocab_size, model_file)

    self.bos_id, self.eos_id, self.pad_id = _choose_specials(
        resolve("bos", bos, own(self._sp.bos_id())), resolve("eos", eos, own(self._sp.eos_id())),
        resolve("pad", pad, own(self._sp.pad_id())), own(self._sp.unk_id()), model_file)

  @property
  def vocab_size(self) -> int:
    return self._vocab_size

  def encode(self, text: str) -> list[int]:
    return list(self._sp.encode(text, out_type=int))

  def decode(self, ids: Sequence[int]) -> str:
    return self._sp.decode(_filter_ids(ids, self))

  def token_ids_ending_with(self, suffix: str) -> list[int]:
    """As the base class, with one batched decode over the vocabulary."""
    specials = {self.pad_id, self.bos_id, self.eos_id}
    texts = self._sp.decode([[i] for i in range(self.vocab_size)])
    return [i for i, t in enumerate(texts) if i not in specials and t.endswith(suffix)]


def load_tokenizer(path: str, **special: SpecialToken) -> Tokenizer:
  """``tokenizer.json`` (preferred) or ``tokenizer.model`` from a directory, or a file.

  Keyword arguments ``bos``, ``eos``, ``pad`` override the special tokens.
  """
  if os.path.isdir(path):
    if os.path.isfile(os.path.join(path, TOKENIZER_JSON)):
      return HFTokenizer.from_file(path, **special)
    if os.path.isfile(os.path.join(path, SENTENCEPIECE_MODEL)):
      return SentencePieceTokenizer(os.path.join(path, SENTENCEPIECE_MODEL), **special)
    raise FileNotFoundError(
        f"{path!r} has neither {TOKENIZER_JSON} nor {SENTENCEPIECE_MODEL}")
  if path.endswith(".json"):
    return HFTokenizer.from_file(path, **special)
  return SentencePieceTokenizer(path, **special)


# ----------------------------------------------------------------------------
# Prompt templates
# ----------------------------------------------------------------------------

# The Llama-2 chat format (Touvron et al. 2023; the paper prompts Llama-2-70b
# with it). BOS is not part of the text: the library prepends ``bos_id``.
LLAMA2_CHAT = "[INST] {prompt} [/INST]"
LLAMA2_CHAT_WITH_SYSTEM = "[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{prompt} [/INST]"


def llama2_chat(prompt: str, system: str | None = None) -> str:
  """One Llama-2 chat user turn: ``[INST] (<<SYS>> block) prompt [/INST]``.

  As Meta's reference code, the user text and system prompt are stripped of
  surrounding whitespace; the model's reply follows ``[/INST]``.
  """
  if system:
    return LLAMA2_CHAT_WITH_SYSTEM.format(system=system.strip(), prompt=prompt.strip())
  return LLAMA2_CHAT.format(prompt=prompt.strip())


def few_shot(prompt: str, examples: Sequence[tuple[str, str]], separator: str = "\n\n") -> str:
  """``k`` solved examples, then the question.

  Args:
    prompt: the question as the task formats it (``task.prompt(problem)``).
    examples: ``(prompt, solution)`` pairs, e.g.
      ``(task.prompt(p), task.demonstration(p))``; each pair is concatenated
      as is (task prompts end with the step delimiter).
    separator: text between examples and before the question.

  Returns:
    ``p_1 + s_1 + sep + ... + p_k + s_k + sep + prompt`` (just ``prompt`` if
    there are no examples).
  """
  shots = [p + s for p, s in examples]
  return separator.join(shots + [prompt])


CHAT_FORMATS = ("none", "llama2")


@dataclasses.dataclass(frozen=True)
class PromptTemplate:
  """A config-friendly prompt template: few-shot examples, then a chat wrapper.

  Attributes:
    chat: ``"none"`` (raw text) or ``"llama2"`` (``[INST] ... [/INST]``).
    system: Llama-2 system prompt (the ``<<SYS>>`` block); ignored when empty
      or when ``chat == "none"``.
    examples: ``(prompt, solution)`` pairs put before the question.
    separator: between few-shot examples and before the question.
  """

  chat: str = "none"
  system: str = ""
  examples: tuple[tuple[str, str], ...] = ()
  separator: str = "\n\n"

  def __post_init__(self):
    if self.chat not in CHAT_FORMATS:
      raise ValueError(f"PromptTemplate.chat must be one of {CHAT_FORMATS}, got {self.chat!r}")
    examples = tuple(tuple(e) for e in self.examples)
    bad = [e for e in examples if len(e) != 2 or not all(isinstance(x, str) for x in e)]
    if bad:
      raise ValueError(f"PromptTemplate.examples must be (prompt, solution) string pairs, "
                       f"got {bad[0]!r}")
    object.__setattr__(self, "examples", examples)

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "PromptTemplate":
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
      raise ValueError(f"unknown prompt template keys {unknown}; known: {sorted(known)}")
    return cls(**d)

  def format(self, prompt: str) -> str:
    """The text to encode for a task prompt."""
    text = few_shot(prompt, self.examples, self.separator)
    if self.chat == "llama2":
      text = llama2_chat(text, self.system or None)
    return text
