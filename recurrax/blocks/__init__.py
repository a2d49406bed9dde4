"""The blocks the modern recurrences are used in: projections, a short causal convolution and a
gate around the cell. Each is a cell family of its own (its carry: the convolution's window and
the cell's state), so stacks, lengths, decoding and training take them like any cell, and each
has ``sequence(params, xs)``, the whole block over a sequence with the recurrence evaluated by an
associative scan.

- ``hawk``: Hawk's recurrent block (De et al. 2024, Griffin), around the RG-LRU (``"hawk"``);
- ``mamba``: the Mamba block (Gu & Dao 2023), around the selective SSM (``"mamba"``).
"""

from recurrax.blocks import hawk as hawk
from recurrax.blocks import mamba as mamba
from recurrax.cells._family import register_cell

for _module in (hawk, mamba):
    register_cell(_module)
del _module

__all__ = ["hawk", "mamba"]
