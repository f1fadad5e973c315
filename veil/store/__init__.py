"""Provider data stores: each unit's own database behind SQLAlchemy, mapped to the catalog.

* :mod:`veil.store.mapping`: the per-unit mapping files (catalog ids -> tables/columns).
* :mod:`veil.store.engine`: engines (SQLite WAL + foreign keys; any SQLAlchemy URL).
* :mod:`veil.store.store`: :class:`ProviderStore`, reads and writes in catalog terms.
"""

from veil.store.engine import (
    bulk_load,
    insert_if_new,
    insert_if_new_is_one_statement,
    make_engine,
    write_transaction,
)
from veil.store.mapping import (
    IDENTITY_NAME,
    IDENTITY_USCC,
    ColumnMap,
    Mapping,
    TableMap,
    Transform,
    load_mapping,
    mapping_path,
    parse_mapping,
)
from veil.store.store import ProviderStore

__all__ = [
    "IDENTITY_NAME",
    "IDENTITY_USCC",
    "ColumnMap",
    "Mapping",
    "ProviderStore",
    "TableMap",
    "Transform",
    "bulk_load",
    "insert_if_new",
    "insert_if_new_is_one_statement",
    "load_mapping",
    "make_engine",
    "mapping_path",
    "parse_mapping",
    "write_transaction",
]
