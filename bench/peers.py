"""The benchmark's peers: Node socket.io and python-socketio, driven by ``sioloadgen.js``.

run.py runs them, in turns with its other servers, for the workloads a socket.io server can
do the same job in (``WORKLOADS``), and gives wsservice's ratio to each. This module holds
what is theirs: their commands, the checks that they are installed, their versions for the
header, and the targets set against them (issue 13).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from typing import Any, Callable

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
LOADGEN = os.path.join(HERE, "sioloadgen.js")
SOCKETIO_SERVER = os.path.join(HERE, "peers", "socketio_server.js")
PYSOCKETIO_SERVER = os.path.join(HERE, "peers", "pysocketio_server.py")

NODE_PEER = "socket.io (node)"
PY_PEER = "python-socketio"
NAMES = [NODE_PEER, PY_PEER]
KIND = "peer"
# the workloads both peers can do as wsservice does them (sioloadgen.js has these three)
WORKLOADS = frozenset({"call", "fanout", "idle"})

# (workload, figure key) -> (target text, peer, limit): wsservice's median / the peer's, at most
TARGETS = {
    ("call", "server_us_per"): ("≤ 0.85× socket.io", NODE_PEER, 0.85),
    ("fanout", "server_us_per"): ("≤ 0.6× socket.io", NODE_PEER, 0.6),
}

_node = [shutil.which("node") or "node"]  # run.py's --node, once use() saw it


def python() -> str:
    """The .venv's python (where the bench extra is installed), else this one."""
    path = os.path.join(ROOT, ".venv", "bin", "python")
    return path if os.path.exists(path) else sys.executable


def unix_path(unix: str) -> str:
    return unix[len("unix:"):] if unix.startswith("unix:") else unix


def socketio_command(tcp: str, unix: str) -> list[str]:
    """Node socket.io: 127.0.0.1, port 0 (``tcp`` is always that), and the unix socket."""
    return [_node[0], SOCKETIO_SERVER, "--unix", unix_path(unix)]


def pysocketio_command(tcp: str, unix: str) -> list[str]:
    """python-socketio on uvicorn (websockets-sansio, uvloop when installed)."""
    return [python(), PYSOCKETIO_SERVER, "--unix", unix_path(unix)]


def specs(spec_class: Callable[..., Any]) -> list[Any]:
    """The two peers as run.py's ServerSpecs."""
    return [spec_class(NODE_PEER, KIND, socketio_command, workloads=WORKLOADS, loadgen=LOADGEN),
            spec_class(PY_PEER, KIND, pysocketio_command, workloads=WORKLOADS, loadgen=LOADGEN)]


def use(args: argparse.Namespace, servers: list[Any]) -> str | None:
    """Drop the peers from ``servers`` when they have nothing to do (``--no-peers``, or no
    workload of theirs chosen); otherwise check they are installed: None, or what is missing."""
    _node[0] = args.node
    if args.no_peers or (args.only and not WORKLOADS & set(args.only)):
        servers[:] = [s for s in servers if s.kind != KIND]
        return None
    missing = [name for name in ("socket.io", "socket.io-client")
               if not os.path.isdir(os.path.join(HERE, "node_modules", name))]
    if missing:
        return (f"bench/node_modules lacks {', '.join(missing)}: run `npm ci` in bench/ first "
                "(or --no-peers)")
    check = subprocess.run([python(), "-c", "import socketio, uvicorn, websockets"],
                           capture_output=True, text=True, timeout=60)
    if check.returncode:
        return (f"{python()} cannot import python-socketio/uvicorn/websockets: run "
                "`.venv/bin/pip install '.[bench]'` (or --no-peers)\n" + check.stderr[-500:])
    return None


def versions(args: argparse.Namespace, servers: list[Any],
             version: Callable[[list[str]], str]) -> str:
    """The peers' part of the header's "servers:" line ("" without peers)."""
    if not any(s.kind == KIND for s in servers):
        return ""
    js = ("const fs = require('fs'), path = require('path');"
          "const v = (dir) => JSON.parse(fs.readFileSync(path.join(dir, 'package.json'))).version;"
          "const m = (name) => path.join('node_modules', name);"
          "const ws = path.dirname(require.resolve('ws', "
          "{ paths: [path.dirname(require.resolve('engine.io'))] }));"
          "process.stdout.write(`socket.io ${v(m('socket.io'))} (engine.io ${v(m('engine.io'))}, "
          "ws ${v(ws)}) on node ${process.version}; socket.io-client ${v(m('socket.io-client'))}`)")
    node = version([args.node, "-e", js])
    py = version([python(), "-c",
                  "from importlib.metadata import version as v; import importlib.util as u; "
                  "print(f\"python-socketio {v('python-socketio')} (python-engineio "
                  "{v('python-engineio')}) on uvicorn {v('uvicorn')} (ws websockets-sansio, "
                  "websockets {v('websockets')}; http httptools {v('httptools')}; loop \" + "
                  "(f\"uvloop {v('uvloop')}\" if u.find_spec('uvloop') else 'asyncio') + ')')"])
    return (f"; peers (websocket transport only, no compression): {node.split('; ')[0]}; {py}; "
            f"driven by {node.split('; ')[-1]} (sioloadgen.js)")


def ratio_pairs(names: list[str], base: str) -> list[tuple[str, str]]:
    """The ratio columns: each non-peer server over the baseline, then wsservice over each
    peer."""
    return ([(n, base) for n in names if n != base and n not in NAMES]
            + [(names[0], p) for p in names if p in NAMES])


def target(workload: str, key: str, ws: float | None,
           values: dict[str, float | None]) -> tuple[str, str] | None:
    """The target against a peer for this figure (``ws``: wsservice's median, ``values``:
    every server's) and whether it is met ("yes", "**no**", "?"), or None."""
    t = TARGETS.get((workload, key))
    if t is None or t[1] not in values:
        return None
    text, peer, limit = t
    other = values[peer]
    if ws is None or not other:
        return text, "?"
    return text, "yes" if ws / other <= limit else "**no**"
