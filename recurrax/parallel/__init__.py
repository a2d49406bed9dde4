"""Parallel-in-time evaluation of recurrent layers: associative scans, DEER, quasi-DEER, ELK.

A layer's time loop is T dependent steps of ``lax.scan`` by default. The methods here evaluate
the whole sequence with associative scans instead (O(log T) depth), each through the cell
protocol (``recurrax.cells``), so any cell, built-in or user-written, can use them:

- ``"associative"``: exact, for cells linear in their carry (``linear_recurrence``: minGRU,
  minLSTM, LRU); ``associative(log_space=True)`` for cells with ``log_linear_recurrence``.
- ``"deer"`` (dense Jacobians), ``"quasi_deer"`` (diagonal), ``"elk"`` (diagonal, damped):
  Newton's method on the trajectory, any cell (see ``recurrax.parallel._newton``), converged to a
  tolerance, gradients by implicit differentiation.

Use them through the layers, ``rnn(params, xs, method="elk")`` (also ``bidirectional`` and
``stack``, hence the topologies and training), or ``solve`` to see the iterations and residual.

When it pays: on the 2-core CPU the sequential scan is faster (``python -m experiments
parallel_in_time`` measures it); the parallel methods are for accelerators, where T dependent
kernel launches are the bottleneck. The default stays ``"scan"``.
"""

from recurrax.parallel._layer import (
    METHODS,
    Method,
    Solution,
    as_method,
    associative,
    deer,
    elk,
    methods_for,
    quasi_deer,
    solve,
)
from recurrax.parallel._scans import linear_scan, log_linear_scan, matrix_scan, tridiagonal_solve

__all__ = [
    "METHODS",
    "Method",
    "Solution",
    "as_method",
    "associative",
    "deer",
    "elk",
    "linear_scan",
    "log_linear_scan",
    "matrix_scan",
    "methods_for",
    "quasi_deer",
    "solve",
    "tridiagonal_solve",
]
