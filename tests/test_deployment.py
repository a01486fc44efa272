"""docs/deployment.md's systemd units: systemd accepts them, and the service's command line
serves a socket handed over as systemd does (file descriptor 3, LISTEN_FDS, LISTEN_PID)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket

from twisted.trial.unittest import TestCase

from . import docs, processes
from .wsclient import connect

APP_DIR = "/opt/myapp"
MYAPP = "from wsservice.demo import DemoApp as App\n"


def units() -> dict[str, str]:
    """The two ```ini units of deployment.md, by their file name."""
    found = {}
    with open(docs.DEPLOYMENT_MD, encoding="utf-8") as f:
        text = f.read()
    for name, body in re.findall(r"`/etc/systemd/system/(wsservice\.\w+)`:\s*```ini\n(.*?)```",
                                 text, re.S):
        found[name] = body
    return found


def exec_start(service: str) -> list[str]:
    """The ExecStart command line of a unit, continuations joined, as argv."""
    joined = service.replace("\\\n", " ")
    line = next(line for line in joined.splitlines() if line.startswith("ExecStart="))
    return shlex.split(line[len("ExecStart="):])


class SystemdUnitTests(TestCase):
    """The units pass systemd-analyze verify; ExecStart serves the socket systemd holds."""

    timeout = 60

    def setUp(self) -> None:
        self.units = units()
        self.assertEqual(set(self.units), {"wsservice.socket", "wsservice.service"})
        # The unit's /opt/myapp, holding myapp.py and the .venv wsservice is installed in.
        self.app_dir = docs.scratch(self, {"myapp.py": MYAPP})
        self.rendered = {name: body.replace(APP_DIR, self.app_dir)
                         for name, body in self.units.items()}

    async def test_systemd_analyze_verify(self) -> None:
        analyze = shutil.which("systemd-analyze")
        self.assertIsNotNone(analyze, "systemd-analyze is missing: apt-get install systemd "
                                      "(make test's system-deps step installs it)")
        assert analyze is not None
        paths = []
        for name, body in self.rendered.items():
            paths.append(os.path.join(self.app_dir, name))
            with open(paths[-1], "w") as f:
                f.write(body)
        out, err, code = await processes.run([analyze, "verify", *paths], self.app_dir)
        self.assertEqual(code, 0, out + err)
        # the unit names its working directory and app dir: the reason it works
        service = self.units["wsservice.service"]
        self.assertIn(f"WorkingDirectory={APP_DIR}", service)
        self.assertIn(f"--app-dir {APP_DIR}", service)

    async def test_command_line_serves_the_systemd_socket(self) -> None:
        argv = exec_start(self.rendered["wsservice.service"])
        self.assertEqual(argv[0], os.path.join(self.app_dir, ".venv", "bin", "twistd"))
        self.assertIn("systemd:domain=INET:index=0", argv)
        held = socket.socket()  # what systemd's ListenStream= would hold
        self.addCleanup(held.close)
        held.bind(("127.0.0.1", 0))
        held.listen()
        env = {k: v for k, v in processes.ENV.items() if not k.startswith("LISTEN_")}
        env["LISTEN_FDS"] = "1"
        env["LISTEN_FDNAMES"] = "wsservice.socket"  # systemd's default: the unit's name
        # systemd sets LISTEN_PID to the service's own pid: exec keeps the shell's pid
        wrapped = ["/bin/sh", "-c", 'LISTEN_PID=$$ exec "$@"', "sh", *argv]
        child = await processes.start(self, wrapped, self.app_dir, env=env,
                                      child_fds={0: "w", 1: "r", 2: "r", 3: held.fileno()})
        client = await connect(f"127.0.0.1:{held.getsockname()[1]}")
        await client.hello()
        self.assertEqual((await client.call("echo", {"via": "systemd"}))["result"],
                         {"via": "systemd"})
        await processes.stop_cleanly(self, child)
