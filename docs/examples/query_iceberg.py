"""Queries a standalone node's Iceberg table of one log with pyiceberg and
DuckDB (docs/iceberg.md).

usage: python3 docs/examples/query_iceberg.py DATA_DIR NAMESPACE.LOG
(pip install 'pyiceberg[sql-sqlite,pyarrow]' duckdb)
"""

import os
import sys

import duckdb
from pyiceberg.catalog.sql import SqlCatalog

data_dir, table_name = sys.argv[1:3]
catalog_file = os.path.abspath(os.path.join(data_dir, "iceberg-catalog.db"))
catalog = SqlCatalog("dlog", uri=f"sqlite:///{catalog_file}")

table = catalog.load_table(table_name)
print(f"{table_name}: {len(table.metadata.snapshots)} snapshots, schema {table.schema()}")

# pyiceberg plans the scan from the table's current snapshot.
events = table.scan().to_arrow()

# DuckDB queries the Arrow table in place.
print(duckdb.sql("""
    select count(*)                        as records,
           min(log_offset)                 as first_offset,
           max(log_offset)                 as last_offset,
           max(append_time)                as newest,
           count(*) filter (payload is null) as tombstones
    from events
""").fetchall())
