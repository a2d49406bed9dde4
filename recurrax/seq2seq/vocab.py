"""Vocabularies: tokens ↔ integer ids with ``<pad>``, ``<sos>``, ``<eos>``, ``<unk>``, and padded batches.

A ``Vocabulary`` is built from a corpus at character or word level. The special tokens take
the first ids in a fixed order (``PAD = 0``, ``SOS = 1``, ``EOS = 2``, ``UNK = 3``), so padding
is id 0 everywhere; the other tokens follow in order of decreasing frequency (ties broken by
first appearance), and tokens seen fewer than ``min_freq`` times map to ``<unk>``.

>>> vocab = Vocabulary.build(["hello", "help"], level="char")
>>> vocab.encode("hello")
[5, 6, 4, 4, 7]
>>> vocab.decode(vocab.encode("hex", add_eos=True))
'he<unk>'
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Iterable, Sequence, Union

import numpy as np

PAD, SOS, EOS, UNK = "<pad>", "<sos>", "<eos>", "<unk>"
SPECIALS = (PAD, SOS, EOS, UNK)
PAD_ID, SOS_ID, EOS_ID, UNK_ID = range(4)
LEVELS = ("char", "word")


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    """An immutable token ↔ id mapping; build one with ``Vocabulary.build``."""

    tokens: tuple[str, ...]  # id -> token; the four specials first
    level: str = "char"

    def __post_init__(self):
        if self.level not in LEVELS:
            raise ValueError(f"Expected level in {LEVELS}, got {self.level!r}.")
        if tuple(self.tokens[: len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"Expected the tokens to start with {SPECIALS}, got {tuple(self.tokens[:4])}.")
        if len(set(self.tokens)) != len(self.tokens):
            raise ValueError("Expected distinct tokens.")
        object.__setattr__(self, "_ids", {token: i for i, token in enumerate(self.tokens)})

    @classmethod
    def build(cls, texts: Iterable[str], *, level: str = "char", min_freq: int = 1) -> "Vocabulary":
        """The vocabulary of ``texts``: tokens seen at least ``min_freq`` times, most frequent first."""
        if level not in LEVELS:
            raise ValueError(f"Expected level in {LEVELS}, got {level!r}.")
        if isinstance(min_freq, bool) or not isinstance(min_freq, int) or min_freq < 1:
            raise ValueError(f"Expected min_freq to be a positive integer, got {min_freq!r}.")
        counts: collections.Counter = collections.Counter()
        for text in texts:
            if not isinstance(text, str):
                raise ValueError(f"Expected texts to be strings, got {type(text).__name__}.")
            counts.update(_split(text, level))
        kept = [token for token, count in counts.items() if count >= min_freq and token not in SPECIALS]
        # Counter keeps first-appearance order, and sorted() is stable: ties stay in that order.
        kept.sort(key=lambda token: -counts[token])
        return cls(SPECIALS + tuple(kept), level)

    def __len__(self) -> int:
        return len(self.tokens)

    def id(self, token: str) -> int:
        """The id of ``token``, or ``UNK_ID`` if it is not in the vocabulary."""
        return self._ids.get(token, UNK_ID)

    def encode(self, text: str, *, add_sos: bool = False, add_eos: bool = False) -> list[int]:
        """Ids of the tokens of ``text`` (unknown tokens → ``<unk>``), optionally framed by ``<sos>``/``<eos>``."""
        if not isinstance(text, str):
            raise ValueError(f"Expected a string to encode, got {type(text).__name__}.")
        ids = [self.id(token) for token in _split(text, self.level)]
        return ([SOS_ID] if add_sos else []) + ids + ([EOS_ID] if add_eos else [])

    def decode(self, ids: Union[Sequence[int], np.ndarray], *, strip: bool = True) -> str:
        """The text of ``ids``. With ``strip``, stops at the first ``<eos>`` and drops ``<pad>``/``<sos>``."""
        ids = np.asarray(ids)
        if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer) and ids.size:
            raise ValueError(f"Expected a 1-D sequence of integer ids, got shape {ids.shape}, dtype {ids.dtype}.")
        if ids.size and (ids.min() < 0 or ids.max() >= len(self)):
            raise ValueError(f"Expected ids in [0, {len(self)}), got values in [{ids.min()}, {ids.max()}].")
        tokens = []
        for i in ids.tolist():
            if strip and i == EOS_ID:
                break
            if strip and i in (PAD_ID, SOS_ID):
                continue
            tokens.append(self.tokens[i])
        return ("" if self.level == "char" else " ").join(tokens)

    def pad_batch(
        self, texts: Sequence[str], *, add_sos: bool = False, add_eos: bool = False, length: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Encode and right-pad ``texts`` with ``<pad>`` (id 0): ``(ids (B, T) int32, lengths (B,) int32)``.

        ``T`` is the longest encoding, or ``length`` if given (a longer text is an error, never
        truncated).
        """
        encoded = [self.encode(text, add_sos=add_sos, add_eos=add_eos) for text in texts]
        if not encoded:
            raise ValueError("Expected at least one text to pad.")
        lengths = np.array([len(ids) for ids in encoded], np.int32)
        width = int(lengths.max()) if length is None else length
        if lengths.max() > width:
            raise ValueError(f"Expected every encoding to fit length={width}, got one of {int(lengths.max())} tokens.")
        batch = np.full((len(encoded), width), PAD_ID, np.int32)
        for row, ids in zip(batch, encoded):
            row[: len(ids)] = ids
        return batch, lengths


def _split(text: str, level: str) -> list[str]:
    return list(text) if level == "char" else text.split()
