"""Main job: a short character-level LSTM run on CPython's help text; the loss falls in minutes.

The ``char_lm`` study (``experiments/char_lm.py``: data, model, training, validation in bits per
character against the unigram entropy, samples) with a shorter budget: ``steps`` updates on
windows of ``seq_len`` characters. ``python -m experiments char_lm`` runs the full study.
"""

from __future__ import annotations

import dataclasses

from experiments import char_lm


@dataclasses.dataclass(frozen=True)
class Config(char_lm.Config):
    seq_len: int = 64
    steps: int = 400
    eval_every: int = 100
    num_sample_chars: int = 200


QUICK = char_lm.QUICK
run = char_lm.run
