"""The ``--workers`` workload of bench/run.py: request/response throughput on every core.

``call echo`` (tcp, C=50 W=10, every reply checked) against ``twistd wsservice --workers 1``
and ``--workers 2``, each with ``--redis`` on a fresh redis-server (loopback, no persistence,
as the cluster workloads start it): the same node count per worker, so the only difference is
the number of processes accepting on the one port. The server-side CPU is summed over every
process (the parent, each worker, redis-server) and the figures are calls/s and server CPU
µs/call.

Pinning: none, for the server side and the load generator alike. A machine of 2 cores has
no core to spare: pinned like the other workloads (every server process on one CPU, the
load generator on the other), two workers would share one CPU and could only cost more.
Unpinned, the scheduler spreads the workers, Redis and the load generator over both, and the
table shows how busy each side was: when the load generator is near 100% of a core, it is
what limits the calls/s, not the workers.

Runs in turns (1 worker, 2 workers, 1, 2, ...) like run.py's other workloads, printed as a
table of its own. run.py calls ``selected``, ``run_all`` and ``table``; this module uses
run.py's helpers (``Running``, ``RedisServer``, ``drive``, ``Figure``, ...).
"""

from __future__ import annotations

import argparse
import os
import re
from typing import Any

import run as bench

# the parent's log names each worker's pid; its summary comes once every worker serves
STARTED = re.compile(r"worker (\d+) started \(pid (\d+), node \S+\)")
SETUPS = [("workers-1", 1), ("workers-2", 2)]

WORKLOADS = [
    bench.Workload(
        "workers", "call echo, tcp, C=50 W=10, one port (unpinned)", "call",
        dict(connections=50, window=10, warmup=1.0, duration=4.0, max_count=2_000_000),
        dict(warmup=0.3, duration=1.0),
        [bench.Figure("per_s", "calls / s", "{:,.0f}", "higher"),
         bench.Figure("server_us_per", "server CPU µs / call (all processes + Redis)",
                      "{:.1f}", "lower"),
         bench.Figure("p50_ms", "p50 latency ms", "{:.2f}", "lower"),
         bench.Figure("p99_ms", "p99 latency ms", "{:.2f}", "lower")]),
]

NAMES = [w.name for w in WORKLOADS]


def spec(name: str, count: int, redis_url: str) -> Any:
    """run.py's wsservice command (the same limits lifted) with ``--workers count`` on Redis;
    ready once every worker serves (one: once it is in step with Redis)."""
    ready = (rf"workers: {count} processes" if count > 1 else r"node \S+: connected to Redis")
    return bench.ServerSpec(name, "wsservice",
                            lambda tcp, unix: bench.wsservice_command(tcp, unix)
                            + ["--workers", str(count), "--redis", redis_url],
                            ready=ready)


def selected(args: argparse.Namespace) -> list[Any]:
    """The --workers workloads this run asked for (all of them without ``--only``)."""
    return [w for w in WORKLOADS if not args.only or w.name in args.only]


def run_once(workload: Any, name: str, count: int, args: argparse.Namespace, workdir: str,
             n: int) -> dict:
    """A fresh redis-server and ``--workers count``, one load generator, nothing pinned;
    the result (a server that fails counts as a failed run)."""
    params = dict(bench.load_params(workload, args), workload=workload.loadgen,
                  server_kind="wsservice")
    redis = bench.RedisServer(args.redis_server, workdir, [], n)
    server = None
    result: dict[str, Any]
    try:
        redis.start()
        server = bench.Running(spec(name, count, redis.url), workdir, [], n)
        server.wait_listening(timeout=60.0)
        workers = [int(pid) for _, pid in STARTED.findall(server.read_log())]
        if len(workers) != (count if count > 1 else 0):
            raise RuntimeError(f"{len(workers)} worker pids in the log, not {count}")
        pids = [server.pid, *workers, redis.pid]
        result = bench.drive(dict(params, url=server.tcp_url, pid=server.pid, pids=pids,
                                  redis=dict(host="127.0.0.1", port=redis.port)),
                             args, ([], [], "off"))
        result["processes"] = ["parent"] * (count > 1) + [f"w{k}" for k in
                                                          range(1, count + 1)] + ["redis"]
    except Exception as e:
        result = {"fatal": str(e), "errors": 1, "examples": []}
    finally:
        # the workers drain and leave the cluster before Redis goes
        problems = server.stop() if server is not None else []
        problems += redis.stop()
    bench.add_problems(result, problems)
    count_done = result.get("count")
    if count_done and not result.get("fatal"):
        cpu = result.get("cpu_by_process") or ()
        for process, seconds in zip(result.get("processes", ()), cpu):
            result[f"{process}_us_per"] = seconds * 1e6 / count_done
        # calls a second each second of server CPU buys: the rate one more busy core adds
        if result.get("server_cpu_s"):
            result["per_cpu_s"] = count_done / result["server_cpu_s"]
    return result


def run_all(workloads: list[Any], args: argparse.Namespace, pins: Any, workdir: str, n: int,
            results: dict, raw: list[dict]) -> int:
    """Every run of ``workloads``, 1 and 2 workers in turns, into ``results``/``raw`` as run.py
    keeps them; the last run number used. (``pins`` is not used: nothing is pinned.)"""
    if workloads and not os.access(args.redis_server, os.X_OK):
        print(f"{args.redis_server} is missing: the workers workload needs redis-server "
              "(apt-get install redis-server, or --redis-server PATH)", flush=True)
        for w in workloads:
            for name, _ in SETUPS:
                results.setdefault((w.name, name), []).append(
                    {"fatal": "no redis-server", "errors": 1, "examples": []})
        return n
    for w in workloads:
        for run in range(1, args.runs + 1):
            for name, count in SETUPS:
                n += 1
                r = run_once(w, name, count, args, workdir, n)
                shares = " / ".join(f"{p} {r[p + '_us_per']:.1f}" for p in r.get("processes", ())
                                    if r.get(p + "_us_per") is not None)
                bench.record(results, raw, w.name, name, run, args.runs, r,
                             bench.headline(r, w) + (f" (µs / call: {shares})" if shares else ""))
    return n


def table(results: dict, workloads: list[Any], runs: int) -> list[str]:
    """The --workers table: both setups' medians and the ratio 2 workers / 1."""
    names = [name for name, _ in SETUPS]
    lines = ["workers: `--workers 1` and `--workers 2`, each on a fresh redis-server; nothing "
             "pinned (server side and load generator share every CPU); server CPU is the sum "
             "of the parent, every worker and redis-server",
             "",
             "| workload | figure | --workers 1 | --workers 2 | ratio 2/1 |",
             "| --- | --- | ---: | ---: | ---: |"]
    for w in workloads:
        per = {name: [r for r in results.get((w.name, name), []) if not r.get("fatal")]
               for name in names}

        def med(name: str, key: str) -> float | None:
            return bench.median([r.get(key) for r in per[name]])

        first = True
        for f in w.figures:
            one, two = med(names[0], f.key), med(names[1], f.key)
            ratio = two / one if one and two is not None else None
            lines.append(f"| {w.title if first else ''} | {f.label} | {bench.fmt(f, one)} | "
                         f"{bench.fmt(f, two)} | {'-' if ratio is None else f'{ratio:.2f}'} |")
            first = False
        one, two = med(names[0], "per_cpu_s"), med(names[1], "per_cpu_s")
        lines.append(f"| | calls / s per busy server core (1 / CPU µs per call) | "
                     f"{'-' if one is None else f'{one:,.0f}'} | "
                     f"{'-' if two is None else f'{two:,.0f}'} | "
                     f"{'-' if not one or two is None else f'{two / one:.2f}'} |")
        shares = []
        for name, count in SETUPS:
            processes = ["parent"] * (count > 1) + [f"w{k}" for k in range(1, count + 1)] \
                + ["redis"]
            values = [med(name, f"{p}_us_per") for p in processes]
            shares.append(" / ".join(f"{p} {'-' if v is None else f'{v:.1f}'}"
                                     for p, v in zip(processes, values)))
        lines.append(f"| | of which µs / call, by process | {shares[0]} | {shares[1]} | |")
        cpu = [bench.cpu_cell(per[name]) for name in names]
        lines.append(f"| | CPU busy: server side / loadgen | {cpu[0]} | {cpu[1]} | |")
        cells = [bench.errors_cell(results.get((w.name, name), []), runs) for name in names]
        lines.append(f"| | errors (runs ok) | {cells[0]} | {cells[1]} | |")
    return lines
