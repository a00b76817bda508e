"""Reads a log's Iceberg table the way an analytics team would, and checks it
against what `dlog read --json` printed for the log:

- pyiceberg loads the table from the same SQL catalog (SQLite) and scans it
  from the S3 server: its rows must equal the dlog read rows one for one
  (offset, append time, producer time, txid, key, headers in order with
  repeats, payload or null);
- DuckDB runs an aggregate over the rows pyiceberg scanned;
- DataFusion reads the table's current data files straight from S3 and runs
  the same aggregate, which must agree.

usage: check_iceberg.py CATALOG_URI S3_ENDPOINT BUCKET ACCESS_KEY SECRET_KEY
                        TABLE DLOG_READ_JSONL
CATALOG_URI is SQLAlchemy's (sqlite:////abs/path/catalog.db); TABLE is
"namespace.log". Prints one JSON line with what it found; exits 1 on any
mismatch.
"""

import base64
import datetime
import json
import sys

import datafusion
import duckdb
import pyarrow as pa
import pyarrow.compute as pc
from datafusion.object_store import AmazonS3

from iceberg_catalog import open_catalog

EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def millis(text):
    if text is None:
        return None
    moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (moment - EPOCH) // datetime.timedelta(milliseconds=1)


def blob(obj, name):
    """A dlog read --json byte field: text, or base64 under NAME_b64."""
    if f"{name}_b64" in obj:
        return base64.b64decode(obj[f"{name}_b64"])
    value = obj.get(name)
    return None if value is None else value.encode()


def from_dlog_read(line):
    obj = json.loads(line)
    return {
        "offset": obj["offset"],
        "time_ms": millis(obj["timestamp"]),
        "producer_ms": millis(obj.get("producer_time")),
        "txid": obj.get("txid"),
        "key": blob(obj, "key"),
        "headers": [(h["name"], blob(h, "value")) for h in obj.get("headers") or []],
        "payload": blob(obj, "payload"),
    }


def from_table(table):
    times = pc.cast(table.column("append_time"), pa.int64()).to_pylist()
    producer = pc.cast(table.column("producer_time"), pa.int64()).to_pylist()
    rows = []
    columns = {name: table.column(name).to_pylist() for name in
               ["log_offset", "txid", "key", "headers", "payload"]}
    for i in range(table.num_rows):
        headers = columns["headers"][i] or []
        rows.append({
            "offset": columns["log_offset"][i],
            "time_ms": times[i] // 1000,
            "producer_ms": None if producer[i] is None else producer[i] // 1000,
            "txid": columns["txid"][i],
            "key": columns["key"][i],
            "headers": [(h["name"], h["value"]) for h in headers],
            "payload": columns["payload"][i],
        })
    return rows


AGGREGATE = (
    "select count(*) as n, count(distinct log_offset) as distinct_offsets, "
    "min(log_offset) as first, max(log_offset) as last, "
    "count(key) as keyed, count(payload) as with_payload from {}"
)


def main() -> int:
    uri, endpoint, bucket, access_key, secret_key, table_name, read_path = sys.argv[1:8]
    catalog = open_catalog(uri, endpoint, access_key, secret_key)
    table = catalog.load_table(table_name)
    scanned = table.scan().to_arrow().sort_by("log_offset")
    with open(read_path) as lines:
        expected = [from_dlog_read(line) for line in lines if line.strip()]
    got = from_table(scanned)
    problems = []
    if len(got) != len(expected):
        problems.append(f"{len(got)} rows in the table, {len(expected)} from dlog read")
    for want, have in zip(expected, got):
        if want != have:
            problems.append(f"offset {want['offset']}: dlog read {want}, table {have}")
            break

    # DuckDB over the scanned rows (Arrow, zero-copy).
    rows = scanned  # noqa: F841 (DuckDB finds it by name)
    duck = duckdb.sql(AGGREGATE.format("rows")).fetchall()[0]
    # DataFusion over the table's current data files, read from S3.
    files = [task.file.file_path for task in table.scan().plan_files()]
    ctx = datafusion.SessionContext()
    scheme, host = endpoint.split("://", 1)
    store = AmazonS3(
        bucket_name=bucket,
        region="us-east-1",
        access_key_id=access_key,
        secret_access_key=secret_key,
        endpoint=endpoint,
        allow_http=scheme == "http",
    )
    ctx.register_object_store("s3://", store, bucket)
    for i, path in enumerate(sorted(files)):
        ctx.register_parquet(f"f{i}", path)
    union = " union all ".join(f"select * from f{i}" for i in range(len(files)))
    fusion = ctx.sql(AGGREGATE.format(f"({union})")).to_pylist()[0] if files else {}
    duck_dict = dict(zip(["n", "distinct_offsets", "first", "last", "keyed", "with_payload"], duck))
    if files and {k: fusion[k] for k in duck_dict} != duck_dict:
        problems.append(f"DataFusion {fusion} and DuckDB {duck_dict} disagree")
    if duck_dict["n"] != len(expected) or duck_dict["distinct_offsets"] != len(expected):
        problems.append(f"DuckDB counted {duck_dict}, dlog read {len(expected)} rows")

    snapshots = table.metadata.snapshots
    print(json.dumps({
        "rows": len(got),
        "files": len(files),
        "snapshots": len(snapshots),
        "operations": [s.summary.operation.value for s in snapshots if s.summary],
        "duckdb": duck_dict,
        "first": got[0]["offset"] if got else None,
        "last": got[-1]["offset"] if got else None,
    }, default=str))
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
