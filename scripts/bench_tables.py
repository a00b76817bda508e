"""Renders the results of scripts/bench.sh (one `dlog bench --json` object
per line) as the Markdown tables of BENCHMARKS.md.

usage: bench_tables.py RESULTS.jsonl [MORE.jsonl ...] > tables.md

With several files (rounds of the same script), every figure is the median
of the rounds, and the latency table gives the spread of p99 over them.
"""

import json
import statistics
import sys


def load(path):
    with open(path) as f:
        return {r["label"]: r for r in map(json.loads, filter(str.strip, f))}


def median_of(values):
    """The median of numbers; of dicts, key by key; else the first value."""
    first = values[0]
    if isinstance(first, bool) or first is None or isinstance(first, str):
        return first
    if isinstance(first, (int, float)):
        return statistics.median(values)
    if isinstance(first, dict):
        return {k: median_of([v[k] for v in values if isinstance(v, dict) and k in v]) for k in first}
    return first


def load_rounds(paths):
    rounds = [load(p) for p in paths]
    merged, spread = {}, {}
    for label in rounds[0]:
        found = [r[label] for r in rounds if label in r]
        merged[label] = median_of(found)
        p99s = [f["latency_ms"]["p99"] for f in found if "latency_ms" in f]
        if len(p99s) > 1:
            spread[label] = (min(p99s), max(p99s))
    return merged, spread, len(rounds)


def ms(value):
    return f"{value:.2f}" if value < 10 else f"{value:.0f}"


def row(cells):
    return "| " + " | ".join(str(c) for c in cells) + " |"


def table(header, rows):
    lines = [row(header), row(["---"] * len(header))]
    lines += [row(r) for r in rows]
    return "\n".join(lines) + "\n"


def latency_row(name, r, spread=None):
    lat = r["latency_ms"]
    return [
        name,
        f"{r['records_per_s']:.0f}",
        f"{r['mb_per_s']:.1f}",
        ms(lat["p50"]),
        ms(lat["p90"]),
        ms(lat["p99"]),
        ms(lat["p999"]),
        ms(lat["max"]),
        r["errors"],
        f"{ms(spread[0])}–{ms(spread[1])}" if spread else "",
    ]


LATENCY_HEADER = ["scenario", "records/s", "MB/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms", "errors", "p99 over rounds"]


def main():
    results, spread, rounds = load_rounds(sys.argv[1:])
    out = []
    if rounds > 1:
        out.append(f"Median of {rounds} rounds of the same script.\n")
    disk = results.get("machine disk")
    if disk:
        lat = disk["latency_ms"]
        out.append("### The machine\n")
        out.append(
            table(
                ["measure", "p50 ms", "p99 ms", "max ms", "MB/s"],
                [
                    ["4 KiB write + fdatasync", ms(lat["p50"]), ms(lat["p99"]), ms(lat["max"]), ""],
                    ["sequential 1 MiB writes, fdatasync each", "", "", "", f"{disk['mb_per_s']:.0f}"],
                ],
            )
        )
    out.append("### distributedlog\n")
    rows = []
    for setup in ["standalone", "cluster"]:
        for name in [
            "latency 1000/s 100B",
            "latency 1000/s 1024B",
            "max 100B",
            "80% 100B",
            "max 1024B",
            "80% 1024B",
            "10000 logs",
            "tail 1000 readers",
        ]:
            r = results.get(f"{setup} {name}")
            if r:
                rows.append(latency_row(f"{setup} {name}", r, spread.get(f"{setup} {name}")))
                if r.get("e2e_ms"):
                    e2e = dict(r, latency_ms=r["e2e_ms"])
                    rows.append(latency_row(f"{setup} {name}: append → reader", e2e))
    out.append(table(LATENCY_HEADER, rows))
    idle = results.get("standalone idle logs")
    if idle:
        out.append("### Idle logs on one standalone node\n")
        out.append(
            table(
                ["logs opened", "resident before MiB", "resident after MiB", "bytes per log"],
                [[f"{idle['idle_logs']:.0f}", f"{idle['rss_before'] / 2**20:.0f}", f"{idle['rss_after'] / 2**20:.0f}", f"{idle['bytes_per_log']:.0f}"]],
            )
        )
    cold = [results.get(f"cluster cold read {s}B") for s in (100, 1024)]
    if any(cold):
        out.append("### Cold reads from Parquet on the S3 server (cluster)\n")
        out.append(
            table(
                ["record", "records", "records/s", "MB/s", "first record ms"],
                [
                    [f"{r['record_size']} B", r["records"], f"{r['records_per_s']:.0f}", f"{r['mb_per_s']:.1f}", ms(r["latency_ms"]["p50"])]
                    for r in cold
                    if r
                ],
            )
        )
    out.append("### Side by side with peers (same load generator, fsync before ack)\n")
    systems = ["standalone", "cluster", "redis", "nats", "etcd1", "etcd3"]
    rows = []
    for size in ("100B", "1024B"):
        base = results.get(f"standalone single {size}")
        for system in systems:
            single = results.get(f"{system} single {size}")
            pipe = results.get(f"{system} pipeline100 {size}")
            if not single:
                continue
            lat = single["latency_ms"]
            ratio = ""
            if base and base is not single:
                ratio = f"{lat['p50'] / base['latency_ms']['p50']:.2f} / {lat['p99'] / base['latency_ms']['p99']:.2f}"
            rows.append(
                [
                    size,
                    system,
                    ms(lat["p50"]),
                    ms(lat["p99"]),
                    ratio,
                    f"{pipe['records_per_s']:.0f}" if pipe else "",
                    f"{pipe['mb_per_s']:.1f}" if pipe else "",
                ]
            )
    out.append(
        table(
            ["record", "system", "single p50 ms", "single p99 ms", "p50 / p99 vs standalone", "pipeline-100 records/s", "pipeline-100 MB/s"],
            rows,
        )
    )
    durability = {
        r["target"].split("://")[0]: r["durability"]
        for r in results.values()
        if r.get("durability") and r.get("workload") != "disk"
    }
    out.append("Durability of each target, as checked at the start of its runs:\n")
    out.append("\n".join(f"- {t}: {d}" for t, d in sorted(durability.items())) + "\n")
    print("\n".join(out))


if __name__ == "__main__":
    main()
