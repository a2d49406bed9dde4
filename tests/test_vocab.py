"""Vocabularies: specials first, frequency order, <unk> under min_freq, round trips, padding."""

import numpy as np
import pytest

from recurrax import vocab as V


def test_char_vocabulary_order_unk_and_round_trip():
    vocab = V.Vocabulary.build(["hello", "help"], level="char")
    assert vocab.tokens == V.SPECIALS + ("l", "h", "e", "o", "p")  # by count, ties by first appearance
    assert vocab.encode("hello", add_sos=True, add_eos=True) == [V.SOS_ID, 5, 6, 4, 4, 7, V.EOS_ID]
    assert vocab.decode(vocab.encode("hello", add_sos=True, add_eos=True)) == "hello"
    assert vocab.decode([5, 6, V.EOS_ID, 4]) == "he"  # stops at <eos>
    assert vocab.decode([5, 6, V.EOS_ID, 4], strip=False) == "he<eos>l"
    rare = V.Vocabulary.build(["hello", "help"], level="char", min_freq=2)
    assert rare.tokens == V.SPECIALS + ("l", "h", "e")
    assert rare.encode("hop") == [5, V.UNK_ID, V.UNK_ID]


def test_word_vocabulary_and_padding():
    vocab = V.Vocabulary.build(["the cat sat", "the dog"], level="word")
    assert vocab.decode(vocab.encode("the dog sat")) == "the dog sat"
    assert vocab.encode("the bird") == [vocab.id("the"), V.UNK_ID]
    ids, lengths = vocab.pad_batch(["the cat", "dog"], add_eos=True)
    np.testing.assert_array_equal(lengths, [3, 2])
    np.testing.assert_array_equal(ids, [[vocab.id("the"), vocab.id("cat"), V.EOS_ID], [vocab.id("dog"), V.EOS_ID, V.PAD_ID]])
    assert ids.dtype == np.int32 and lengths.dtype == np.int32
    assert vocab.pad_batch(["dog"], length=4)[0].shape == (1, 4)


@pytest.mark.parametrize("call, message", [
    (lambda v: v.decode([1, 99]), r"Expected ids in \[0, 9\), got values in \[1, 99\]"),
    (lambda v: v.decode([-1]), r"Expected ids in \[0, 9\)"),
    (lambda v: v.pad_batch(["hello"], length=3), "Expected every encoding to fit length=3, got one of 5 tokens"),
    (lambda v: v.pad_batch([]), "at least one text"),
    (lambda v: v.encode(5), "Expected a string to encode, got int"),
    (lambda v: V.Vocabulary.build(["x"], min_freq=0), "min_freq to be a positive integer"),
    (lambda v: V.Vocabulary.build(["x"], level="byte"), "Expected level in"),
    (lambda v: V.Vocabulary(("a", "b")), "Expected the tokens to start with"),
])
def test_bad_input(call, message):
    vocab = V.Vocabulary.build(["hello", "help"])
    with pytest.raises(ValueError, match=message):
        call(vocab)
