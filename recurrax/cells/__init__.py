"""Cell families, the cell protocol and the name registry.

The protocol (what any family, built-in or a user's own, provides) is written out in
``recurrax.cells._family``; ``CellFamily`` is how the library holds a family. The built-in
families are registered here under their names, through ``register_cell`` like any other: the
classic cells (``elman``, ``lstm``, ``gru``, ``reservoir``), the minimal and linear ones
(``mingru``, ``minlstm``, ``indrnn``, ``lru``), the ``ntm``, and the modern recurrences
(``slstm``, ``mlstm``, ``rglru``, ``selective_ssm``, ``cfc``, ``ltc``; their blocks are in
``recurrax.blocks``).
"""

from __future__ import annotations

from recurrax.cells import (cfc, elman, gru, indrnn, lru, lstm, ltc, mingru, minlstm, mlstm, ntm, reservoir,
                            rglru, selective_ssm, slstm)
from recurrax.cells._family import CellFamily as CellFamily
from recurrax.cells._family import as_family as as_family
from recurrax.cells._family import check_family as check_family
from recurrax.cells._family import register_cell as register_cell
from recurrax.cells._family import registered_cells as registered_cells
from recurrax.cells._family import resolve_family as resolve_family
from recurrax.cells._family import unregister_cell as unregister_cell

for _module in (elman, lstm, gru, reservoir, mingru, minlstm, indrnn, lru, ntm,
                slstm, mlstm, rglru, selective_ssm, cfc, ltc):
    register_cell(_module)
del _module
