"""Autobahn Testsuite conformance of the real twistd wsservice stack, driven by kosoku.

Starts ``twistd -n wsservice --conformance-echo`` on a TCP and a unix listener (same
factory, options and permessage-deflate as production; --max-message-size raised to the
suite's 16 MiB, --max-frames to the 65536 fragments of one message in cases 9.3/9.4
where the default is 256, and the heartbeat pushed past the run), runs the cases against /echo over TCP, and again through a loopback
TCP->unix relay, then reads each index.json itself and fails unless every case ended OK,
NON-STRICT or INFORMATIONAL with a clean close.

    python conformance/run.py [--cases '*'] [--unix-cases '*'] [--exclude PATTERN ...]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.path.dirname(sys.executable)
PASSING = {"OK", "NON-STRICT", "INFORMATIONAL"}
CLEAN_CLOSE = {"OK", "INFORMATIONAL"}


def start_server(workdir: str, sock: str) -> tuple[subprocess.Popen, int]:
    """twistd with the conformance echo path; returns it and its TCP port."""
    log = open(os.path.join(workdir, "twistd.log"), "w+")
    cmd = [os.path.join(BIN, "twistd"), "-n", "--pidfile=", "--logfile=-", "wsservice",
           "--listen", "tcp:0:interface=127.0.0.1", "--listen", f"unix:{sock}",
           "--conformance-echo", "--max-message-size", str(16 * 1024 * 1024),
           # 9.3.1/9.4.1 send a 4 MiB message in 64-byte fragments
           "--max-frames", "65536",
           # The suite's echo cases expect nothing but their echoes: a heartbeat ping in the
           # middle of a long case (12.2.15 streams 128 MiB through deflate) fails it.
           "--heartbeat", "3600"]
    print("==> starting:", " ".join(cmd), flush=True)
    server = subprocess.Popen(cmd, cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 30
    while time.time() < deadline:
        log.seek(0)
        text = log.read()
        match = re.search(r"ws://127\.0\.0\.1:(\d+)/ws", text)
        if match and os.path.exists(sock):
            return server, int(match.group(1))
        if server.poll() is not None:
            break
        time.sleep(0.1)
    server.kill()
    log.seek(0)
    sys.exit("the server did not start:\n" + log.read())


def relay(port_holder: list[int], sock: str, ready: threading.Event) -> None:
    """A loopback TCP listener whose every connection is piped to the unix socket."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            ureader, uwriter = await asyncio.open_unix_connection(sock)
        except OSError:
            writer.close()
            return
        await asyncio.gather(pipe(reader, uwriter), pipe(ureader, writer))

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port_holder.append(server.sockets[0].getsockname()[1])
        ready.set()
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def run_suite(label: str, url: str, cases: list[str], exclude: list[str], outdir: str,
              timeout: float) -> bool:
    """Run kosoku, then judge every case from index.json; True if all passed."""
    cmd = [os.path.join(BIN, "kosoku"), url, "-o", outdir]
    for case in cases:
        cmd += ["-i", case]
    for case in exclude:
        cmd += ["-x", case]
    print(f"==> [{label}] {' '.join(cmd)}", flush=True)
    started = time.time()
    try:
        code = subprocess.run(cmd, timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        print(f"[{label}] kosoku did not finish within {timeout:.0f} s")
        return False
    elapsed = time.time() - started
    index = os.path.join(outdir, "index.json")
    if not os.path.exists(index):
        print(f"[{label}] no index.json: nothing ran (kosoku exit {code})")
        return False
    with open(index) as f:
        results = json.load(f)
    ok = True
    for agent, per_case in results.items():
        behavior = collections.Counter(c["behavior"] for c in per_case.values())
        closes = collections.Counter(c["behaviorClose"] for c in per_case.values())
        print(f"[{label}] {agent}: {len(per_case)} cases in {elapsed:.0f} s")
        print(f"[{label}]   behavior:      " + ", ".join(f"{k} {v}" for k, v in
                                                         sorted(behavior.items())))
        print(f"[{label}]   behaviorClose: " + ", ".join(f"{k} {v}" for k, v in
                                                         sorted(closes.items())))
        bad = sorted((case for case, c in per_case.items()
                      if c["behavior"] not in PASSING or c["behaviorClose"] not in CLEAN_CLOSE),
                     key=lambda s: [int(p) for p in s.split(".")])
        for case in bad:
            c = per_case[case]
            print(f"[{label}]   {case}: {c['behavior']} / close {c['behaviorClose']}")
        ok = ok and not bad and len(per_case) > 0
    print(f"[{label}] {'PASSED' if ok else 'FAILED'} (kosoku exit {code})", flush=True)
    return ok and code == 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", action="append", help="case patterns over TCP (default *)")
    parser.add_argument("--unix-cases", action="append",
                        help="case patterns through the unix listener (default *)")
    parser.add_argument("--exclude", action="append", default=[])
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--reports", default=os.path.join(HERE, "reports"))
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="wsconf")
    sock = os.path.join(workdir, "ws.sock")
    server, port = start_server(workdir, sock)
    ok = False
    try:
        shutil.rmtree(args.reports, ignore_errors=True)
        ok = run_suite("tcp", f"ws://127.0.0.1:{port}/echo", args.cases or ["*"], args.exclude,
                       os.path.join(args.reports, "tcp"), args.timeout)
        holder: list[int] = []
        ready = threading.Event()
        threading.Thread(target=relay, args=(holder, sock, ready), daemon=True).start()
        if not ready.wait(10):
            sys.exit("the unix relay did not start")
        ok = run_suite("unix", f"ws://127.0.0.1:{holder[0]}/echo", args.unix_cases or ["*"],
                       args.exclude, os.path.join(args.reports, "unix"), args.timeout) and ok
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        leftover = os.path.exists(sock)
        shutil.rmtree(workdir, ignore_errors=True)
        if leftover:
            print("the unix socket file was left behind")
            ok = False
    print("conformance:", "PASSED" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
