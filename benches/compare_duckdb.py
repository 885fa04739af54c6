#!/usr/bin/env python3
"""twinhub against SQLite and DuckDB on the same NDJSON export, in one run window.

    python3 benches/compare_duckdb.py                       # 100,000 twins, both shapes
    python3 benches/compare_duckdb.py --twins 1000000
    python3 benches/compare_duckdb.py --twins 1000000 --shapes timed

For each corpus shape (``preview``: benches/corpus, 20 device properties sharing mostly
one report time; ``timed``: every property with its own ``lastUpdatedTime`` and more
distinct values) it

1. runs ``cargo bench --bench query_file`` (which writes the export from the corpus when
   it is missing, parses it on every core into borrowed rows, and measures the queries
   with criterion), then reads criterion's medians;
2. in a fresh Python process, loads the same file into DuckDB (``read_json`` into a
   table, all cores) and times the same queries in SQL;
3. in another, loads it into SQLite in memory (the JSON text per twin, expression indexes
   on the queried paths and a (tag, id) table, as benches/query_compare.rs does) and
   times them;

and prints one table: medians, and each engine's time over ours (above 1: we are faster).

The SQL engines' times include what a Python caller pays to receive the rows (100 rows
of tuples, or 100 JSON strings); ours include building the page (and, for ``*_json``,
serde_json writing it). An import is timed on the wall clock and in CPU time (every
thread of the process, user and system): on a shared host the wall-clock ratio moves
with the neighbours, the CPU-time ratio much less. Memory is the resident growth of the process across the load
(``/proc/self/status``), and peak resident memory. Loads are timed once (a load per
engine and shape per run). DuckDB is installed from PyPI if missing.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

ROWS = [
    ("load", "NDJSON import (s)"),
    ("load_cpu", "NDJSON import, CPU time (s)"),
    ("fleet_mib", "memory after import (MiB)"),
    ("peak_mib", "peak memory (MiB)"),
    ("count_one_eq", "count, one value"),
    ("count_filter", "count, tag/eq/range"),
    ("first_100_full", "first 100 in id order, full"),
    ("first_100_device_id", "first 100, deviceId only"),
    ("first_100_full_json", "first 100, full, JSON text"),
    ("first_100_device_id_json", "first 100, deviceId, JSON text"),
    ("group_count_firmware", "group-by FirmwareVersion, count"),
]


def status_mib(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) / 1024.0
    return 0.0


def cpu_seconds():
    """CPU time (user + system) of every thread of this process so far."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def median_seconds(run, budget=2.0, max_runs=2000):
    """Median wall time of `run()`, after 3 warm-up calls, over at most `budget` seconds."""
    for _ in range(3):
        run()
    times = []
    start = time.perf_counter()
    while len(times) < max_runs and (len(times) < 5 or time.perf_counter() - start < budget):
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


# ---- the SQL engines (each run in its own process: --engine) --------------------------

def measure(con, queries, load, load_cpu, fleet_mib):
    """The counts (to check against ours), each query's median, and the import's figures."""
    checks = {
        "count_one_eq": con.execute(queries["count_one_eq"]).fetchone()[0],
        "count_filter": con.execute(queries["count_filter"]).fetchone()[0],
    }
    result = {
        name: median_seconds(lambda q=q: con.execute(q).fetchall())
        for name, q in queries.items()
    }
    result.update(
        load=load,
        load_cpu=load_cpu,
        fleet_mib=fleet_mib,
        peak_mib=status_mib("VmHWM:"),
        checks=checks,
    )
    return result


def duckdb_engine(path):
    import duckdb

    con = duckdb.connect()
    before = status_mib("VmRSS:")
    cpu = cpu_seconds()
    t = time.perf_counter()
    con.execute(
        "CREATE TABLE twins AS SELECT * FROM read_json(?, format = 'newline_delimited')",
        [path],
    )
    load = time.perf_counter() - t
    load_cpu = cpu_seconds() - cpu
    after = status_mib("VmRSS:")
    where = (
        "deviceProperties.FirmwareVersion.value = '4.4' "
        "AND deviceProperties.BatteryLevel.value >= 20 "
        "AND deviceProperties.BatteryLevel.value < 60 "
        "AND list_contains(serviceProperties.tags, 'batch-0')"
    )
    queries = {
        "count_one_eq": "SELECT count(*) FROM twins "
        "WHERE deviceProperties.FirmwareVersion.value = '4.4'",
        "count_filter": f"SELECT count(*) FROM twins WHERE {where}",
        "first_100_full": f"SELECT * FROM twins WHERE {where} ORDER BY deviceId LIMIT 100",
        "first_100_device_id": f"SELECT deviceId FROM twins WHERE {where} "
        "ORDER BY deviceId LIMIT 100",
        "first_100_full_json": f"SELECT to_json(t) FROM twins t WHERE {where} "
        "ORDER BY deviceId LIMIT 100",
        "first_100_device_id_json": "SELECT to_json({'deviceId': deviceId}) FROM twins "
        f"WHERE {where} ORDER BY deviceId LIMIT 100",
        "group_count_firmware": "SELECT deviceProperties.FirmwareVersion.value, count(*) "
        "FROM twins GROUP BY 1",
    }
    result = measure(con, queries, load, load_cpu, after - before)
    result.update(
        version=duckdb.__version__,
        threads=con.execute("SELECT current_setting('threads')").fetchone()[0],
    )
    return result


def sqlite_engine(path):
    import sqlite3

    con = sqlite3.connect(":memory:")
    before = status_mib("VmRSS:")
    cpu = cpu_seconds()
    t = time.perf_counter()
    con.execute("CREATE TABLE twins (id TEXT PRIMARY KEY, doc TEXT NOT NULL)")
    with open(path, encoding="utf-8") as f:
        con.executemany(
            "INSERT INTO twins VALUES (json_extract(?1, '$.deviceId'), ?1)",
            ((line,) for line in f if line.strip()),
        )
    con.execute("CREATE TABLE tags (tag TEXT, id TEXT)")
    con.execute(
        "INSERT INTO tags SELECT j.value, t.id FROM twins t, "
        "json_each(t.doc, '$.serviceProperties.tags') j"
    )
    con.execute("CREATE INDEX tags_tag_id ON tags (tag, id)")
    for prop in ("FirmwareVersion", "BatteryLevel"):
        con.execute(
            f"CREATE INDEX twins_{prop} ON twins "
            f"(json_extract(doc, '$.deviceProperties.{prop}.value'))"
        )
    con.commit()
    load = time.perf_counter() - t
    load_cpu = cpu_seconds() - cpu
    after = status_mib("VmRSS:")
    fw = "json_extract(doc, '$.deviceProperties.FirmwareVersion.value')"
    battery = "json_extract(doc, '$.deviceProperties.BatteryLevel.value')"
    where = (
        f"{fw} = '4.4' AND {battery} >= 20 AND {battery} < 60 "
        "AND id IN (SELECT id FROM tags WHERE tag = 'batch-0')"
    )
    queries = {
        "count_one_eq": f"SELECT count(*) FROM twins WHERE {fw} = '4.4'",
        "count_filter": f"SELECT count(*) FROM twins WHERE {where}",
        "first_100_full": f"SELECT id, doc FROM twins WHERE {where} ORDER BY id LIMIT 100",
        "first_100_device_id": f"SELECT id FROM twins WHERE {where} ORDER BY id LIMIT 100",
        # The stored text is the JSON already.
        "first_100_full_json": f"SELECT doc FROM twins WHERE {where} ORDER BY id LIMIT 100",
        "first_100_device_id_json": "SELECT json_object('deviceId', id) FROM twins "
        f"WHERE {where} ORDER BY id LIMIT 100",
        "group_count_firmware": f"SELECT {fw}, count(*) FROM twins GROUP BY 1",
    }
    result = measure(con, queries, load, load_cpu, after - before)
    result.update(version=sqlite3.sqlite_version)
    return result


# ---- ours --------------------------------------------------------------------------------

def ours(shape, twins, path):
    summary = os.path.join(ROOT, "target", "compare", f"summary-{shape}-{twins}.json")
    env = dict(
        os.environ,
        TWINHUB_CORPUS_SHAPE=shape,
        TWINHUB_CORPUS_DEVICES=str(twins),
        TWINHUB_CORPUS_FILE=path,
        TWINHUB_COMPARE_SUMMARY=summary,
    )
    out = subprocess.run(
        ["cargo", "bench", "--bench", "query_file", "--", "--noplot"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    if out.returncode != 0:
        sys.exit(f"cargo bench failed:\n{out.stdout[-4000:]}")
    for line in out.stdout.splitlines():
        if line.startswith("query_file:"):
            print("  " + line)
    with open(summary) as f:
        s = json.load(f)
    result = {
        "load": s["load_seconds"],
        "load_cpu": s["load_cpu_seconds"],
        "fleet_mib": s["fleet_mib"],
        "peak_mib": s["peak_mib"],
    }
    for name, _ in ROWS:
        if name in result:
            continue
        est = os.path.join(ROOT, "target", "criterion", "query_file", name, "new", "estimates.json")
        with open(est) as f:
            result[name] = json.load(f)["median"]["point_estimate"] / 1e9
    return result


def run_engine(engine, path):
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--engine", engine, "--file", path],
        stdout=subprocess.PIPE,
        text=True,
    )
    if out.returncode != 0:
        sys.exit(f"{engine} failed")
    return json.loads(out.stdout.strip().splitlines()[-1])


def fmt(seconds_or_mib, row):
    if row in ("fleet_mib", "peak_mib"):
        return f"{seconds_or_mib:,.0f}"
    if row in ("load", "load_cpu"):
        return f"{seconds_or_mib:.2f}"
    s = seconds_or_mib
    if s < 1e-6:
        return f"{s * 1e9:.0f} ns"
    if s < 1e-3:
        return f"{s * 1e6:.1f} µs"
    if s < 1:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.2f} s"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--twins", type=int, default=100_000)
    ap.add_argument("--shapes", default="preview,timed")
    ap.add_argument("--engine", help=argparse.SUPPRESS)
    ap.add_argument("--file", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.engine:
        engine = {"duckdb": duckdb_engine, "sqlite": sqlite_engine}[args.engine]
        print(json.dumps(engine(args.file)))
        return

    try:
        import duckdb  # noqa: F401
    except ImportError:
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             "--root-user-action=ignore", "duckdb==1.4.2"],
            check=True,
        )

    for shape in args.shapes.split(","):
        path = os.path.join(ROOT, "target", "compare", f"{shape}-{args.twins}.ndjson")
        print(f"\n## {shape}, {args.twins:,} twins ({path})")
        results = {"twinhub": ours(shape, args.twins, path)}
        size = os.path.getsize(path)
        print(f"  export: {size / 1e6:,.0f} MB")
        results["sqlite"] = run_engine("sqlite", path)
        results["duckdb"] = run_engine("duckdb", path)
        print(
            f"  sqlite {results['sqlite']['version']}: counts {results['sqlite']['checks']}; "
            f"duckdb {results['duckdb']['version']} ({results['duckdb']['threads']} threads): "
            f"counts {results['duckdb']['checks']}"
        )
        print()
        print("| row | twinhub | SQLite | DuckDB | SQLite / twinhub | DuckDB / twinhub |")
        print("|---|---:|---:|---:|---:|---:|")
        for row, label in ROWS:
            ours_v = results["twinhub"][row]
            cells = [fmt(results[e][row], row) for e in ("twinhub", "sqlite", "duckdb")]
            ratios = [
                f"{results[e][row] / ours_v:,.1f}x" if ours_v > 0 else "-"
                for e in ("sqlite", "duckdb")
            ]
            print(f"| {label} | " + " | ".join(cells + ratios) + " |")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
