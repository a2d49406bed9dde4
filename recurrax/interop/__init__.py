"""Weight and state converters to and from PyTorch, Keras 3, flax.linen and Equinox.

One module per library, each with ``from_*`` / ``to_*`` for parameters and ``carry_from_*`` /
``carry_to_*`` for initial and final states in that library's order. Conversions are NumPy and
JAX only: no import needs the other library installed (``to_torch(tensors=True)`` and
``to_equinox`` import theirs, as they build its objects).

- ``pytorch``: ``nn.RNN`` (tanh, relu), ``nn.LSTM``, ``nn.GRU`` (any ``num_layers``,
  ``bidirectional``, ``bias=False``) and ``nn.RNNCell`` / ``nn.LSTMCell`` / ``nn.GRUCell``
  ``state_dict``s.
- ``keras``: ``LSTM``, ``GRU`` (both ``reset_after``), ``SimpleRNN`` and ``Bidirectional``
  ``get_weights()`` lists.
- ``flax_linen``: ``LSTMCell``, ``OptimizedLSTMCell``, ``GRUCell``, ``SimpleCell`` param dicts
  (their LSTM carry is ``(c, h)``, recurrax's is ``LSTMCarry(h, c)``).
- ``equinox``: ``eqx.nn.LSTMCell`` and ``eqx.nn.GRUCell`` modules.
- The modern cells' reference implementations, each with its own ``from_*`` (not re-exported
  here): ``recurrentgemma`` (the RG-LRU and Hawk's recurrent block), ``xlstm`` (sLSTM, mLSTM),
  ``mambapy`` (the selective SSM and the Mamba block) and ``ncps`` (CfC, LTC).

Dense output heads convert through the same functions: ``torch.nn.Linear``,
``keras.layers.Dense``, ``flax.linen.Dense`` and ``equinox.nn.Linear`` (the module, or its
weights with the kind ``"Linear"`` / ``"Dense"``) give a ``DenseParams`` for ``recurrax.dense``,
and ``to_*`` exports a ``DenseParams`` back.

>>> import jax, recurrax
>>> from recurrax import interop
>>> params = recurrax.init_rnn(jax.random.key(0), "lstm", 3, 4)
>>> back = interop.from_flax_linen(interop.to_flax_linen(params), "LSTMCell")
>>> bool((back.cell.w_h == params.cell.w_h).all())
True
"""

from recurrax.interop import equinox as equinox
from recurrax.interop import flax_linen as flax_linen
from recurrax.interop import keras as keras
from recurrax.interop import pytorch as pytorch
from recurrax.interop import mambapy as mambapy
from recurrax.interop import ncps as ncps
from recurrax.interop import recurrentgemma as recurrentgemma
from recurrax.interop import xlstm as xlstm
from recurrax.interop.equinox import carry_from_equinox as carry_from_equinox
from recurrax.interop.equinox import carry_to_equinox as carry_to_equinox
from recurrax.interop.equinox import from_equinox as from_equinox
from recurrax.interop.equinox import to_equinox as to_equinox
from recurrax.interop.flax_linen import carry_from_flax_linen as carry_from_flax_linen
from recurrax.interop.flax_linen import carry_to_flax_linen as carry_to_flax_linen
from recurrax.interop.flax_linen import from_flax_linen as from_flax_linen
from recurrax.interop.flax_linen import to_flax_linen as to_flax_linen
from recurrax.interop.keras import carry_from_keras as carry_from_keras
from recurrax.interop.keras import carry_to_keras as carry_to_keras
from recurrax.interop.keras import from_keras as from_keras
from recurrax.interop.keras import to_keras as to_keras
from recurrax.interop.pytorch import carry_from_torch as carry_from_torch
from recurrax.interop.pytorch import carry_to_torch as carry_to_torch
from recurrax.interop.pytorch import from_torch as from_torch
from recurrax.interop.pytorch import to_torch as to_torch

__all__ = [
    "carry_from_equinox",
    "carry_from_flax_linen",
    "carry_from_keras",
    "carry_from_torch",
    "carry_to_equinox",
    "carry_to_flax_linen",
    "carry_to_keras",
    "carry_to_torch",
    "equinox",
    "flax_linen",
    "from_equinox",
    "from_flax_linen",
    "from_keras",
    "from_torch",
    "keras",
    "mambapy",
    "ncps",
    "pytorch",
    "recurrentgemma",
    "to_equinox",
    "to_flax_linen",
    "to_keras",
    "to_torch",
    "xlstm",
]
