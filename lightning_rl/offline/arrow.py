"""pyarrow for lightning-rl's offline modules, imported when a run first calls it.

Every training run imports the offline modules' types (a runner spec names the recorder's
recipe, the DataModules name the offline row requirements), but only runs that record
(``output=``) or read (``input_=``) Parquet call pyarrow. Importing it costs a process about
40 ms and 29 MB (its shared libraries and allocator), so these modules take ``pa`` and ``pq``
from here: stand-ins that import pyarrow on first use. Type checkers see the real modules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lightning_rl._imports import ModuleOnFirstUse

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.parquet as pq
else:
    pa = ModuleOnFirstUse("pyarrow")
    pq = ModuleOnFirstUse("pyarrow.parquet")

__all__ = ["pa", "pq"]
