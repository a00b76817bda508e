"""Runs a typed aggregate over a log's typed payload columns the way an
analytics team would, without parsing any JSON, and checks it against the
same aggregate computed from what `dlog read --json` printed:

    select "user", count(*), sum(amount) ... group by "user"

- DuckDB with read_parquet over the log's Parquet files (copies of the
  objects, in FILES_DIR);
- DataFusion over the same files;
- pyiceberg's scan of the log's table (SQL catalog, files on the S3 server),
  grouped with pyarrow; plus a scan filtered on a typed column.

The expected values apply the rule the compactor writes by: a field's value
when the payload is a JSON object and the value has the field's type, else
null (a record appended before the schema, a field missing).

It also checks that each typed column has the same field id in the table's
schema and in every Parquet file (pyiceberg resolves columns by id), and
counts the non-null values of OPTIONAL_COLUMN (a field added later: null in
the files written before it).

usage: check_typed.py CATALOG_URI S3_ENDPOINT ACCESS_KEY SECRET_KEY TABLE
                      DLOG_READ_JSONL FILES_DIR OPTIONAL_COLUMN
Prints one JSON line with what it found; exits 1 on any mismatch.
"""

import base64
import glob
import json
import sys
from collections import defaultdict

import datafusion
import duckdb
import pyarrow.parquet as pq

from iceberg_catalog import open_catalog

I64 = (-(2**63), 2**63 - 1)


def typed(obj, name, kind):
    value = obj.get(name) if isinstance(obj, dict) else None
    if kind is str:
        return value if isinstance(value, str) else None
    ok = isinstance(value, int) and not isinstance(value, bool) and I64[0] <= value <= I64[1]
    return value if ok else None


def payload_object(line):
    record = json.loads(line)
    if "payload_b64" in record:
        text = base64.b64decode(record["payload_b64"])
    elif record.get("payload") is None:
        return None
    else:
        text = record["payload"]
    try:
        return json.loads(text)
    except ValueError:
        return None


def groups(rows):
    """(user, amount) pairs -> {user: [count, sum of amounts or None]}."""
    found = defaultdict(lambda: [0, None])
    for user, amount in rows:
        entry = found[user]
        entry[0] += 1
        if amount is not None:
            entry[1] = (entry[1] or 0) + amount
    return {str(user): tuple(v) for user, v in found.items()}


QUERY = 'select "user", count(*) as n, sum(amount) as total from {} group by "user"'


def main() -> int:
    (uri, endpoint, access_key, secret_key, table_name, read_path, files_dir,
     optional) = sys.argv[1:9]
    problems = []
    with open(read_path) as lines:
        objects = [payload_object(line) for line in lines if line.strip()]
    expected = groups((typed(o, "user", str), typed(o, "amount", int)) for o in objects)
    expected_optional = sum(typed(o, optional, str) is not None for o in objects)

    files = sorted(glob.glob(f"{files_dir}/*.parquet"))
    source = f"read_parquet('{files_dir}/*.parquet', union_by_name = true)"
    duck = {str(u): (n, t) for u, n, t in duckdb.sql(QUERY.format(source)).fetchall()}

    ctx = datafusion.SessionContext()
    ctx.register_parquet("records", files_dir)
    fusion = {str(r["user"]): (r["n"], r["total"]) for r in ctx.sql(QUERY.format("records")).to_pylist()}

    catalog = open_catalog(uri, endpoint, access_key, secret_key)
    table = catalog.load_table(table_name)
    scanned = table.scan(selected_fields=("user", "amount")).to_arrow()
    aggregated = scanned.group_by("user").aggregate([([], "count_all"), ("amount", "sum")])
    iceberg = {
        str(u): (n, t)
        for u, n, t in zip(
            aggregated.column("user").to_pylist(),
            aggregated.column("count_all").to_pylist(),
            aggregated.column("amount_sum").to_pylist(),
        )
    }
    filtered = table.scan(row_filter="amount >= 100", selected_fields=("amount",)).to_arrow()
    expected_filtered = sum(1 for o in objects if (typed(o, "amount", int) or -1) >= 100)
    optional_rows = table.scan(selected_fields=(optional,)).to_arrow()
    optional_count = optional_rows.num_rows - optional_rows.column(optional).null_count

    for name, got in [("DuckDB", duck), ("DataFusion", fusion), ("pyiceberg", iceberg)]:
        if got != expected:
            problems.append(f"{name} grouped {got}, dlog read gives {expected}")
    if filtered.num_rows != expected_filtered:
        problems.append(f"pyiceberg found {filtered.num_rows} rows with amount >= 100, "
                        f"dlog read {expected_filtered}")
    if optional_count != expected_optional:
        problems.append(f"pyiceberg found {optional_count} values of {optional}, "
                        f"dlog read {expected_optional}")

    # Field ids: the table's schema and every file agree.
    schema = table.schema()
    ids = {}
    for field in schema.fields:
        if field.field_id >= 1000:
            ids[field.name] = field.field_id
    for path in files:
        arrow_schema = pq.read_schema(path)
        for name, field_id in ids.items():
            if name not in arrow_schema.names:
                continue
            meta = arrow_schema.field(name).metadata or {}
            in_file = int(meta.get(b"PARQUET:field_id", b"-1"))
            if in_file != field_id:
                problems.append(f"{path}: column {name} has field id {in_file}, the table {field_id}")

    print(json.dumps({
        "expected": expected,
        "duckdb": duck,
        "datafusion": fusion,
        "pyiceberg": iceberg,
        "filtered": filtered.num_rows,
        "optional": optional_count,
        "ids": ids,
        "files": len(files),
        "rows": len(objects),
    }, default=str, sort_keys=True))
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
