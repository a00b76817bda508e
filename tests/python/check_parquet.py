"""Reads the offloaded Parquet files of one log in place on an S3 server with
pyarrow, the way an analytics engine would, and checks them against what
the manifest says: per file the row count and min/max(log_offset), and the
log's total rows through a Hive-partitioned dataset.

usage: check_parquet.py ENDPOINT BUCKET ACCESS_KEY SECRET_KEY EXPECTED_JSON
EXPECTED_JSON: {"dataset": "bucket/prefix/ns=N/log=L", "log_id": I,
                "files": [{"key": "...", "rows": N, "min": A, "max": B}, ...]}
The files of one log id are in "<dataset>/id=I/".
Prints one JSON line with what it found; exits 1 on any mismatch.
"""

import json
import sys

import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq


def main() -> int:
    endpoint, bucket, access_key, secret_key, expected_json = sys.argv[1:6]
    expected = json.loads(expected_json)
    scheme, host = endpoint.split("://", 1)
    fs = pafs.S3FileSystem(
        endpoint_override=host,
        scheme=scheme,
        access_key=access_key,
        secret_key=secret_key,
        region="us-east-1",
    )
    found = []
    problems = []
    for file in expected["files"]:
        table = pq.read_table(f"{bucket}/{file['key']}", filesystem=fs)
        bounds = pc.min_max(table.column("log_offset"))
        got = {
            "key": file["key"],
            "rows": table.num_rows,
            "min": bounds["min"].as_py(),
            "max": bounds["max"].as_py(),
        }
        found.append(got)
        if got != file:
            problems.append(f"{file['key']}: expected {file}, found {got}")
    # Listed rather than opened as a directory: s3s-fs answers HEAD on a
    # folder key with an error, real S3 and MinIO list the same way.
    listing = fs.get_file_info(pafs.FileSelector(expected["dataset"], recursive=True))
    # Only the Parquet files: an Iceberg table keeps its metadata in the
    # same folder.
    paths = sorted(
        f.path for f in listing if f.type == pafs.FileType.File and f.path.endswith(".parquet")
    )
    dataset = ds.dataset(
        paths,
        filesystem=fs,
        format="parquet",
        partitioning="hive",
        partition_base_dir=expected["dataset"].rsplit("/", 2)[0],
    )
    total = dataset.count_rows()
    # The Hive folders become columns an engine can filter on.
    log_name = expected["dataset"].rsplit("log=", 1)[1]
    matching = dataset.count_rows(filter=ds.field("log") == log_name)
    if matching != total:
        problems.append(f"only {matching} of {total} rows have partition log={log_name}")
    with_id = dataset.count_rows(filter=ds.field("id") == expected["log_id"])
    if with_id != total:
        problems.append(f"only {with_id} of {total} rows have partition id={expected['log_id']}")
    want = sum(f["rows"] for f in expected["files"])
    if total != want:
        problems.append(f"dataset has {total} rows, expected {want}")
    print(json.dumps({"files": found, "dataset_rows": total}))
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
