"""Native kernels behind ``rnn``: oneDNN's fused RNN primitives on the CPU, through XLA's FFI.

``rnn``, ``bidirectional`` and ``stack`` take ``kernel="auto" | "scan" | "onednn"``; which calls
the kernel runs, and why the others take the scan, is the table in ``recurrax.kernels._layer``.
The kernel is built when recurrax is installed where a C++ compiler is present (oneDNN comes
from the ``onednn-cpu-gomp`` wheel); without it everything runs on the pure-JAX scan.

>>> import recurrax
>>> isinstance(recurrax.kernels.available(), bool)
True
"""

from recurrax.kernels._layer import KERNELS as KERNELS
from recurrax.kernels._onednn import available as available
from recurrax.kernels._onednn import onednn_version as onednn_version
from recurrax.kernels._onednn import unavailable_reason as unavailable_reason

__all__ = ["KERNELS", "available", "onednn_version", "unavailable_reason"]
