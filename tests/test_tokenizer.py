import pytest
from hypothesis import given, strategies as st

from alphallm.tokenizer import DEFAULT_CHARSET, CharTokenizer, UnknownCharacterError

TOK = CharTokenizer()


@given(st.text(alphabet=DEFAULT_CHARSET, max_size=200))
def test_roundtrip(text):
  assert TOK.decode(TOK.encode(text)) == text


def test_unknown_character_names_it_and_position():
  with pytest.raises(UnknownCharacterError, match=r"'€'.*position 4"):
    TOK.encode("1+2=€")


def test_specials_and_stop_ids():
  assert TOK.decode([TOK.bos_id] + TOK.encode("ab") + [TOK.eos_id] + TOK.encode("cd")) == "ab"
  assert TOK.token_ids_ending_with("\n") == TOK.encode("\n")
  with pytest.raises(ValueError, match="outside the vocabulary"):
    TOK.decode([TOK.vocab_size + 5])


def test_duplicate_charset_rejected():
  with pytest.raises(ValueError, match="duplicate"):
    CharTokenizer("abca")
