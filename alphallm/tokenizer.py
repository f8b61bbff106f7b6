"""Tokenizers.

``Tokenizer`` is the small surface the rest of the library relies on; the
character tokenizer implements it for the synthetic tasks and a real
tokenizer (tokenizer.json, sentencepiece) can implement it too.

Special ids are fixed for every tokenizer of this library's own making:
``PAD = 0`` (never attended to, never a target), ``BOS = 1``, ``EOS = 2``.
Other tokenizers bring their own (``alphallm.hf_tokenizer``: e.g. Llama-3's
BOS 128000, Qwen2's PAD 151643), and the library takes them from the
tokenizer: sampling and search fill padding with ``tokenizer.pad_id`` (their
``pad_id`` arguments), token-level search never proposes ``pad_id`` or
``bos_id``, and every attention / loss mask is carried explicitly (a
``prompt_mask``, the data's ``token_mask``, or lengths) rather than derived
from ``tokens != pad_id``, so a PAD id shared with EOS or UNK is harmless.
``PAD_ID`` and ``BOS_ID`` below are only the defaults of those arguments.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

PAD_ID = 0
BOS_ID = 1
EOS_ID = 2

# Every character the synthetic tasks use, plus enough of printable ASCII that
# a user's own small task rarely needs to extend it.
DEFAULT_CHARSET = (
    "\n 0123456789+-*/=()<>.,:;?!#%'\"[]_"
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)


class UnknownCharacterError(ValueError):
  """A character the tokenizer cannot encode."""


class Tokenizer(abc.ABC):
  """What the library needs of a tokenizer."""

  pad_id: int
  bos_id: int
  eos_id: int

  @property
  @abc.abstractmethod
  def vocab_size(self) -> int:
    ...

  @abc.abstractmethod
  def encode(self, text: str) -> list[int]:
    """Text to ids, without BOS/EOS."""

  @abc.abstractmethod
  def decode(self, ids: Sequence[int]) -> str:
    """Ids to text. Stops at the first EOS; PAD and BOS are dropped."""

  def token_ids_ending_with(self, suffix: str) -> list[int]:
    """Ids of every token whose text ends with ``suffix``.

    Used to turn a step delimiter (e.g. ``"\\n"``) into a set of stop tokens.
    """
    out = []
    for i in range(self.vocab_size):
      if i in (self.pad_id, self.bos_id, self.eos_id):
        continue
      if self.decode([i]).endswith(suffix):
        out.append(i)
    return out


class CharTokenizer(Tokenizer):
  """Reversible character-level tokenizer: ``decode(encode(s)) == s``."""

  pad_id = PAD_ID
  bos_id = BOS_ID
  eos_id = EOS_ID

  def __init__(self, charset: str = DEFAULT_CHARSET):
    if len(set(charset)) != len(charset):
      dup = sorted({c for c in charset if charset.count(c) > 1})
      raise ValueError(f"CharTokenizer charset has duplicate characters: {dup!r}")
    self.charset = charset
    self._offset = 3
    self._to_id = {c: i + self._offset for i, c in enumerate(charset)}

  @property
  def vocab_size(self) -> int:
    return len(self.charset) + self._offset

  def encode(self, text: str) -> list[int]:
    ids = []
    for pos, ch in enumerate(text):
      i = self._to_id.get(ch)
      if i is None:
        raise UnknownCharacterError(
            f"character {ch!r} (U+{ord(ch):04X}) at position {pos} of "
            f"{_snippet(text, pos)!r} is not in the tokenizer's charset")
      ids.append(i)
    return ids

  def decode(self, ids: Sequence[int]) -> str:
    chars = []
    for i in ids:
      i = int(i)
      if i == self.eos_id:
        break
      if i in (self.pad_id, self.bos_id):
        continue
      j = i - self._offset
      if not 0 <= j < len(self.charset):
        raise ValueError(f"token id {i} is outside the vocabulary [0, {self.vocab_size})")
      chars.append(self.charset[j])
    return "".join(chars)


def _snippet(text: str, pos: int, width: int = 20) -> str:
  return text[max(0, pos - width): pos + width]
