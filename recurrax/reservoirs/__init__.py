"""Reservoir computing: echo state networks and the time series they are tested on.

- ``esn``: ridge readouts, teacher-forced and free-running runs, diagnostics, sweeps;
- ``timeseries``: Mackey–Glass, Lorenz, NARMA, generated in code.

The reservoir itself is a cell family like the others (``recurrax.cells.reservoir``). Public
paths stay at the top level: ``recurrax.esn``, ``recurrax.timeseries``.
"""

from recurrax.reservoirs import esn as esn
from recurrax.reservoirs import timeseries as timeseries

__all__ = ["esn", "timeseries"]
