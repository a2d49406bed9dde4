"""Analysis: the research tools of the lecture notes, and the tasks they are run on.

- ``gradient_flow``: Jacobian products ``∂h_t/∂h_k``, their norms per lag, and the eigenvalue
  bounds of vanishing and exploding gradients (Pascanu et al. 2013);
- ``truncation``: truncated against full BPTT, the gradient's bias and the dependencies a
  truncation can learn;
- ``_bptt_reference``: backpropagation through time derived by hand for Elman and LSTM (the
  seeds' backward pass), re-exported as ``recurrax.elman_bptt``, ``recurrax.lstm_bptt``, ...;
- ``tasks``: synthetic long-range, pathological and sequence-to-sequence tasks, generated from a
  PRNG key.

Public paths stay at the top level: ``recurrax.gradient_flow``, ``recurrax.truncation``,
``recurrax.tasks``.
"""

from recurrax.analysis import gradient_flow as gradient_flow
from recurrax.analysis import tasks as tasks
from recurrax.analysis import truncation as truncation
from recurrax.analysis._bptt_reference import elman_bptt as elman_bptt
from recurrax.analysis._bptt_reference import elman_readout_bptt as elman_readout_bptt
from recurrax.analysis._bptt_reference import lstm_bptt as lstm_bptt

__all__ = ["elman_bptt", "elman_readout_bptt", "gradient_flow", "lstm_bptt", "tasks", "truncation"]
