"""What the database targets (``type: postgres``, ``type: mysql``) share: the apply (grouping a
batch into per-table statements, transactions, positions, retries, schema changes) and the type
mapping. One package rather than a module in ``cdc/``: ``cdc`` imports no driver and holds no
plugin code, and the two targets differ only in their driver glue (``sinks/<name>/_sink.py``).
"""

from cdc.sinks._sql._sink import POSITIONS_TABLE, SqlTarget, TablePlan, TargetTable
from cdc.sinks._sql._types import Mapping, map_column, widens
from cdc.sinks._sql.config import TargetOptions

__all__ = [
    "POSITIONS_TABLE",
    "Mapping",
    "SqlTarget",
    "TablePlan",
    "TargetOptions",
    "TargetTable",
    "map_column",
    "widens",
]
