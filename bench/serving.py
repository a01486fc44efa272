"""What the benchmark's bare servers share: ``--listen`` arguments, listening, SIGTERM.

``baseline_autobahn.py`` and ``baseline_ndjson.py`` each bring their own factory (their hot
path); this module listens with it on every endpoint, prints one ``listening on ...`` line
per listener (run.py and ndjson_bench.py read the port from it), and stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any, Callable

from twisted.internet import reactor as _reactor
from twisted.internet.endpoints import serverFromString

reactor: Any = _reactor  # (typed as its interfaces, which lack run's arguments)

DEFAULT_LISTEN = "tcp:0:interface=127.0.0.1"


def parser(doc: str | None) -> argparse.ArgumentParser:
    """An argument parser with ``--listen`` (repeatable), described by ``doc``'s first paragraph."""
    p = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    p.add_argument("--listen", action="append", default=[],
                   help="Twisted server endpoint string (repeatable)")
    return p


def serve(factory: Any, listens: list[str], tcp: Callable[[int], str],
          unix: Callable[[str], str]) -> int:
    """Listen with ``factory`` on every endpoint in ``listens`` (one on a free loopback port
    without any) until SIGTERM or SIGINT; ``tcp(port)`` and ``unix(path)`` say where each
    listener is, after ``listening on DESCRIPTION: ``."""
    factory.noisy = False  # no "Starting factory" lines: nothing logged on the hot path

    def listening(port: Any, description: str) -> None:
        host = port.getHost()
        if hasattr(host, "port"):
            print(f"listening on {description}: {tcp(host.port)}", flush=True)
        else:
            name = host.name.decode() if isinstance(host.name, bytes) else host.name
            print(f"listening on {description}: {unix(name)}", flush=True)

    def failed(failure: Any, description: str) -> None:
        print(f"cannot listen on {description}: {failure.value}", file=sys.stderr, flush=True)
        reactor.stop()

    for description in listens or [DEFAULT_LISTEN]:
        d = serverFromString(reactor, description).listen(factory)
        d.addCallbacks(listening, failed, callbackArgs=(description,),
                       errbackArgs=(description,))

    def stop(signum: int, frame: Any) -> None:
        reactor.callFromThread(reactor.stop)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    reactor.run(installSignalHandlers=False)
    print("stopped", flush=True)
    return 0
