"""Sequence to sequence: encoder–decoder models with optional attention (Sutskever et al. 2014;
Luong et al. 2015), and the parts they are made of.

Submodules: ``vocab`` (tokens and padded batches), ``attention`` (Bahdanau and Luong scores),
``decoding`` (greedy, sampling, beam search), ``char_lm`` (character language models). The
model itself (``_model``) is re-exported here: ``recurrax.seq2seq.init_seq2seq``, ``loss``,
``translate``, ... Public paths stay at the top level too: ``recurrax.vocab``,
``recurrax.attention``, ``recurrax.decoding``, ``recurrax.char_lm``.

Encoder: source embedding → any stack (deep, bidirectional, any cells) over the padded source.
Its top layer's final state (forward and backward concatenated for a bidirectional top layer) is
the context vector; each decoder layer starts from it, through a learned bridge
``h_0 = tanh(context W + b)`` when the sizes differ (identity when they match; an LSTM
decoder's cell state starts at zero).

Decoder step, from the previous target token ``y_{t-1}``:

    s_t = stack_step(decoder, embed(y_{t-1}))
    without attention:  logits_t = s_t W_o + b_o
    with attention:     c_t, α_t = attend(s_t, encoder states, source mask)
                        h̃_t = tanh([s_t; c_t] W_c + b_c),  logits_t = h̃_t W_o + b_o

(Luong's "global attention" with any of the additive, dot or general scores). Training uses
teacher forcing: decoder inputs ``<sos> y_1 … y_n``, targets ``y_1 … y_n <eos>``, loss over the
``n + 1`` valid steps; ``sampling_ratio`` > 0 feeds the model's own previous prediction instead
of the true token with that probability (scheduled sampling, Bengio et al. 2015). Decoding uses
``recurrax.decoding`` (greedy, sampling, beam search) with the same decoder step.

Token ids follow ``recurrax.vocab``: ``<pad>`` 0, ``<sos>`` 1, ``<eos>`` 2.
"""

from recurrax.seq2seq import attention as attention
from recurrax.seq2seq import char_lm as char_lm
from recurrax.seq2seq import decoding as decoding
from recurrax.seq2seq import vocab as vocab
from recurrax.seq2seq._model import DecoderState as DecoderState
from recurrax.seq2seq._model import Seq2SeqParams as Seq2SeqParams
from recurrax.seq2seq._model import attention_map as attention_map
from recurrax.seq2seq._model import decode_teacher_forced as decode_teacher_forced
from recurrax.seq2seq._model import decoder_step as decoder_step
from recurrax.seq2seq._model import encode_source as encode_source
from recurrax.seq2seq._model import init_seq2seq as init_seq2seq
from recurrax.seq2seq._model import loss as loss
from recurrax.seq2seq._model import teacher_forcing as teacher_forcing
from recurrax.seq2seq._model import translate as translate

__all__ = [
    "DecoderState", "Seq2SeqParams", "attention", "attention_map", "char_lm", "decode_teacher_forced",
    "decoder_step", "decoding", "encode_source", "init_seq2seq", "loss", "teacher_forcing",
    "translate", "vocab",
]
