"""The NDJSON workload of bench/run.py: what the session layer itself costs.

``call echo`` over wsservice's NDJSON listener (``--listen-ndjson``, protocol.md section 8),
against ``baseline_ndjson.py``, a raw Twisted NDJSON + orjson echo server with no session
layer: the least any Twisted JSON server can spend per message. Neither has WebSocket
framing, so the ratio wsservice / raw-ndjson is the cost of the session layer (the
``Connection``, the session, its limits and bookkeeping, the NDJSON adapter) over the
bare minimum of reading, parsing, encoding and writing. Issue 13's target: at most 1.6x.

Run in turns like run.py's other workloads (each server a fresh process pinned to the
server CPU, ``loadgen.js``'s ``ndjson-call`` workload pinned to the others, every reply
checked) and printed as a table of its own. run.py calls ``selected``, ``run_all`` and
``table``; this module uses run.py's helpers (``Running``, ``drive``, ``Figure``, ...).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
from typing import Any

import run as bench

BASELINE = os.path.join(bench.HERE, "baseline_ndjson.py")
# the NDJSON port: wsservice's start-up summary says "listening (NDJSON) on DESCRIPTION:
# tcp://HOST:PORT (nc ...)", baseline_ndjson.py "listening on DESCRIPTION: tcp://HOST:PORT"
NDJSON_URL = re.compile(r"listening (?:\(NDJSON\) )?on \S+: tcp://127\.0\.0\.1:(\d+)")
TARGET = 1.6  # wsservice / raw NDJSON, server CPU per call (issue 13)


def wsservice_command(tcp: str, unix: str) -> list[str]:
    """run.py's wsservice (same limits lifted) with an NDJSON listener on a free tcp port."""
    return bench.wsservice_command(tcp, unix) + ["--listen-ndjson", "tcp:0:interface=127.0.0.1"]


def baseline_command(tcp: str, unix: str) -> list[str]:
    """The raw Twisted NDJSON echo server on the same two endpoints."""
    return [bench.venv("python"), BASELINE, "--listen", tcp, "--listen", unix]


# wsservice first, the lower bound last (the ratio is to it)
SERVERS = [
    bench.ServerSpec("wsservice", "wsservice", wsservice_command),
    bench.ServerSpec("raw-ndjson", "baseline", baseline_command),
]

WORKLOADS = [
    bench.Workload(
        "ndjson", "call echo over NDJSON, tcp, C=50 W=10", "ndjson-call",
        dict(connections=50, window=10, warmup=1.0, duration=4.0, max_count=2_000_000),
        dict(warmup=0.3, duration=1.0),
        [bench.Figure("server_us_per", "server CPU µs / call", "{:.2f}", "lower",
                      f"≤ {TARGET}×", bench.ratio_at_most(TARGET)),
         bench.Figure("per_s", "calls / s", "{:,.0f}", "higher"),
         bench.Figure("p50_ms", "p50 latency ms", "{:.2f}", "lower"),
         bench.Figure("p99_ms", "p99 latency ms", "{:.2f}", "lower")]),
]

NAMES = [w.name for w in WORKLOADS]


class NDJSONRunning(bench.Running):
    """A server whose NDJSON tcp port is read from its log (``tcp_url`` is tcp://HOST:PORT)."""

    def listening_url(self, text: str) -> str | None:
        """The NDJSON port's URL once its line is in the log (and the unix socket is there:
        every listener is up); None before."""
        m = NDJSON_URL.search(text)
        if m and os.path.exists(self.unix_path):
            return f"tcp://127.0.0.1:{m.group(1)}"
        return None


def selected(args: argparse.Namespace) -> list[Any]:
    """The NDJSON workloads this run asked for (all of them without ``--only``)."""
    return [w for w in WORKLOADS if not args.only or w.name in args.only]


class Profiler:
    """``--profile DIR``: py-spy on the server over the measured window (pinned with the load
    generator, off the server CPU), its raw stacks and run.py's per-function summary into
    DIR. It takes CPU from the load generator: not for measuring."""

    def __init__(self, directory: str, label: str, pid: int, seconds: float,
                 pin: list[str]) -> None:
        self.raw = os.path.join(directory, f"{label}.raw.txt")
        self.pid, self.seconds, self.pin = pid, seconds, pin
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        """Start sampling (called when the load generator opens its window)."""
        py_spy = bench.venv("py-spy")
        if not os.path.exists(py_spy):
            print(f"--profile: {py_spy} is missing (pip install py-spy into .venv)", flush=True)
            return
        self.proc = subprocess.Popen(
            self.pin + [py_spy, "record", "--format", "raw", "--nonblocking", "-r", "250",
                        "-d", str(max(1, int(self.seconds))), "-o", self.raw,
                        "--pid", str(self.pid)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def finish(self) -> None:
        """Wait for py-spy; write the summary beside the raw stacks."""
        if self.proc is None:
            return
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        if os.path.exists(self.raw):
            with open(self.raw[:-len(".raw.txt")] + ".summary.txt", "w") as f:
                f.write(bench.summarize_py_spy(self.raw))


def run_once(workload: Any, spec: Any, args: argparse.Namespace, pins: Any, workdir: str,
             n: int) -> dict:
    """One fresh server (its NDJSON port), one load generator; the result (a server that fails
    counts). With ``--profile``, py-spy on the server over the window."""
    def profiler(server: Any, params: dict) -> Profiler | None:
        if not args.profile:
            return None
        return Profiler(args.profile, f"{workload.name}-{n}-{spec.name}", server.pid,
                        params.get("duration", 4.0), pins[1])

    return bench.run_once(workload, spec, args, pins, workdir, n, running=NDJSONRunning,
                          profiler=profiler)


def run_all(workloads: list[Any], args: argparse.Namespace, pins: Any, workdir: str, n: int,
            results: dict, raw: list[dict]) -> int:
    """Every run of ``workloads``, servers in turns, into ``results``/``raw`` as run.py keeps
    them; the last run number used."""
    for w in workloads:
        for run in range(1, args.runs + 1):
            for spec in SERVERS:
                n += 1
                r = run_once(w, spec, args, pins, workdir, n)
                bench.record(results, raw, w.name, spec.name, run, args.runs, r,
                             bench.headline(r, w))
    return n


def table(results: dict, workloads: list[Any], runs: int) -> list[str]:
    """The NDJSON table: both servers' medians, the ratio and the target."""
    names = [s.name for s in SERVERS]
    lines = ["NDJSON: wsservice's NDJSON listener against a raw Twisted NDJSON + orjson echo "
             "server (bench/baseline_ndjson.py): the session layer's own cost",
             "",
             f"| workload | figure | {names[0]} | {names[1]} | ratio | target | met |",
             "| --- | --- | ---: | ---: | ---: | --- | --- |"]
    for w in workloads:
        per = {name: results.get((w.name, name), []) for name in names}
        first = True
        for f in w.figures:
            ws, base = (bench.median([r.get(f.key) for r in per[name] if not r.get("fatal")])
                        for name in names)
            ratio = ws / base if ws is not None and base else None
            met = ""
            if f.check is not None:
                verdict = None if ws is None or ratio is None else f.check(ws, base, ratio)
                met = "?" if verdict is None else "yes" if verdict is True else "**no**"
            lines.append(f"| {w.title if first else ''} | {f.label} | {bench.fmt(f, ws)} | "
                         f"{bench.fmt(f, base)} | {'-' if ratio is None else f'{ratio:.2f}'} | "
                         f"{f.target} | {met} |")
            first = False
        cpu = [bench.cpu_cell(per[name]) for name in names]
        lines.append(f"| | CPU busy: server / loadgen | {cpu[0]} | {cpu[1]} | | | |")
        cells = [bench.errors_cell(per[name], runs) for name in names]
        lines.append(f"| | errors (runs ok) | {cells[0]} | {cells[1]} | | | |")
    return lines
