"""Cell families, the cell protocol and the name registry.

The protocol (what any family, built-in or a user's own, provides) is written out in
``recurrax.cells._family``; ``CellFamily`` is how the library holds a family. The built-in
families are registered here under their names, through ``register_cell`` like any other.
"""

from __future__ import annotations

from recurrax.cells import elman, gru, indrnn, lru, lstm, mingru, minlstm, ntm, reservoir
from recurrax.cells._family import CellFamily as CellFamily
from recurrax.cells._family import as_family as as_family
from recurrax.cells._family import check_family as check_family
from recurrax.cells._family import register_cell as register_cell
from recurrax.cells._family import registered_cells as registered_cells
from recurrax.cells._family import resolve_family as resolve_family
from recurrax.cells._family import unregister_cell as unregister_cell

for _module in (elman, lstm, gru, reservoir, mingru, minlstm, indrnn, lru, ntm):
    register_cell(_module)
del _module
