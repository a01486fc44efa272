"""twistd itself, as a user runs it: plugin discovery, --help, serving, SIGTERM, bad options."""

from __future__ import annotations

import os
import socket
import sys

from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from . import processes
from .wsclient import connect, http

TWISTD = [sys.executable, processes.TWISTD]


class TwistdTests(TestCase):
    """``python -m twisted wsservice`` (that is, twistd) in a subprocess."""

    timeout = 60

    def setUp(self) -> None:
        self.cwd = processes.scratch(self, "wst")

    async def run_twistd(self, *args: str) -> tuple[str, str, int]:
        return await processes.run(TWISTD + list(args), self.cwd)

    async def test_help_documents_every_option(self) -> None:
        out, err, code = await self.run_twistd("wsservice", "--help")
        self.assertEqual(code, 0, err)
        for option in ("--listen", "--handler", "--path", "--allowed-origin", "--hello-timeout",
                       "--max-message-size", "--max-depth", "--max-inflight-calls",
                       "--call-timeout", "--max-bad-messages", "--max-sessions", "--auth"):
            self.assertIn(option, out)

    async def test_plugin_listed(self) -> None:
        out, err, code = await self.run_twistd("--help")
        self.assertIn("wsservice", out)

    async def test_serves_tcp_and_unix_then_stops_on_sigterm(self) -> None:
        sock = os.path.join(self.cwd, "ws.sock")
        proto = await processes.start(
            self, TWISTD + ["-n", "--pidfile=", "--logfile=-", "wsservice",
                            "--listen", "tcp:0:interface=127.0.0.1", "--listen", f"unix:{sock}"],
            self.cwd, listeners=2)
        self.assertEqual(os.stat(sock).st_mode & 0o777, 0o600)
        # the start-up line's URLs end at whitespace (bench/run.py reads ws://\S+), and
        # name the demo page
        self.assertRegex(proto.text, rf"ws://127\.0\.0\.1:{proto.port()}/ws \(page "
                                     rf"http://127\.0\.0\.1:{proto.port()}/\)\n")

        tcp = await connect(f"127.0.0.1:{proto.port()}")
        unix = await connect(f"unix:{sock}")
        secrets = []
        for client in (tcp, unix):
            welcome = await client.hello()
            secrets += [welcome["session"], welcome["token"]]
            reply = await client.call("echo", {"via": "twistd"})
            self.assertEqual(reply["result"], {"via": "twistd"})
        code, _, body = await http(f"unix:{sock}", "/healthz")
        self.assertEqual((code, b'"sessions":2' in body), (200, True))

        stopping = Deferred.fromCoroutine(processes.stop_cleanly(self, proto))  # SIGTERM
        for client in (tcp, unix):
            closed, reason = await client.waitClosed()
            self.assertEqual(closed, 1001, reason)
        output = await stopping
        self.assertIn("Server Shut Down.", output)
        self.assertFalse(os.path.exists(sock), "the unix socket file was left behind")
        # the operator sees the drain; session ids and tokens never reach the log
        self.assertIn("draining 2 connections", output)
        # and is told the truth about what a single process keeps: nothing past its exit
        self.assertIn("drained; 2 sessions end with this process", output)
        for secret in secrets:
            self.assertNotIn(secret, output)


# A handler module a user might write, saved in the directory twistd is started from.
HANDLERS = """
from wsservice import Handler, call


class Greeter(Handler):
    @call("greet")
    def greet(self, session, params):
        return "hello"


class OtherGreeter(Handler):
    @call("greet")
    def other(self, session, params):
        return "other"


class Nothing:
    pass
"""


class MistakeTests(TestCase):
    """Each mistake: one stderr line, no help, no traceback; status 2 (1: cannot listen)."""

    timeout = 60  # each line reads ``wsservice: --OPTION VALUE: problem; what to do``

    def setUp(self) -> None:
        self.cwd = processes.scratch(self, "wst")
        with open(os.path.join(self.cwd, "userapp.py"), "w") as f:
            f.write(HANDLERS)

    async def mistake(self, *args: str, status: int = 2, prefix: list[str] | None = None
                      ) -> str:
        """Run ``twistd -n wsservice ARGS``; return its one line after ``wsservice: ``."""
        out, err, code = await processes.run(
            (prefix or []) + TWISTD + ["-n", "--pidfile=", "wsservice", *args], self.cwd)
        self.assertEqual(code, status, out + err)
        self.assertEqual(len(err.splitlines()), 1, err)
        self.assertTrue(err.endswith("\n"), err)
        self.assertNotIn("Traceback", out + err)
        self.assertNotIn("Usage:", out + err)  # no help dump
        self.assertTrue(err.startswith("wsservice: "), err)
        return err[len("wsservice: "):-1]

    async def test_invalid_numbers(self) -> None:
        cases = {
            ("--max-message-size", "-1"): "must be a whole number >= 1; "
                                          "e.g. --max-message-size 1048576 (the default)",
            ("--max-message-size", "abc"): "not a whole number; "
                                           "e.g. --max-message-size 1048576 (the default)",
            ("--max-depth", "5000"): "must be a whole number from 1 to 1000; "
                                     "e.g. --max-depth 32 (the default)",
            ("--hello-timeout", "0"): "must be a finite number > 0; "
                                      "e.g. --hello-timeout 10 (the default)",
            ("--call-timeout", "nan"): "must be a finite number > 0; "
                                       "e.g. --call-timeout 30 (the default)",
            ("--resume-ttl", "-5"): "must be a finite number >= 0; "
                                    "e.g. --resume-ttl 60 (the default)",
            ("--rate", "fast"): "not a number; e.g. --rate 200 (the default)",
        }
        for (option, value), problem in cases.items():
            self.assertEqual(await self.mistake(option, value), f"{option} {value}: {problem}")

    async def test_unknown_option(self) -> None:
        self.assertEqual(await self.mistake("--max-mesage-size", "10"),
                         "--max-mesage-size: unknown option; "
                         "'twistd wsservice --help' lists the options")

    async def test_missing_value(self) -> None:
        self.assertEqual(await self.mistake("--listen"),
                         "--listen: needs a value; 'twistd wsservice --help' says what it takes")

    async def test_path(self) -> None:
        self.assertEqual(await self.mistake("--path", "ws"),
                         "--path ws: must start with '/' and name a resource; e.g. --path /ws")

    async def test_unknown_handler(self) -> None:
        self.assertEqual(
            await self.mistake("--handler", "myapp:Greeter"),
            f"--handler myapp:Greeter: no module named 'myapp'; looked in {self.cwd} "
            "(--app-dir) and the installed packages: put myapp.py there or install it")

    async def test_handler_attribute_missing(self) -> None:
        self.assertEqual(await self.mistake("--handler", "userapp:Greter"),
                         "--handler userapp:Greter: module 'userapp' has no attribute 'Greter'")

    async def test_handler_found_in_app_dir(self) -> None:
        elsewhere = processes.scratch(self, "wsa")
        line = await self.mistake("--app-dir", elsewhere, "--handler", "userapp:Nothing")
        self.assertTrue(line.startswith("--handler userapp:Nothing: no module named"), line)
        line = await self.mistake("--app-dir", self.cwd, "--handler", "userapp:Nothing")
        self.assertTrue(line.startswith("--handler userapp:Nothing: provides none of"), line)
        self.assertEqual(await self.mistake("--app-dir", "nowhere"),
                         "--app-dir nowhere: no such directory; "
                         "give the directory that holds your handler modules")

    async def test_handler_without_contract(self) -> None:
        self.assertEqual(
            await self.mistake("--handler", "userapp:Nothing"),
            "--handler userapp:Nothing: provides none of ICallHandler, IEventHandler, "
            "ISessionObserver, IResourceProvider, ITopicAuthorizer; "
            "subclass wsservice.Handler or declare one with @implementer")

    async def test_handler_import_fails(self) -> None:
        with open(os.path.join(self.cwd, "broken.py"), "w") as f:
            f.write("x = 1\ny = 1 / 0\n")
        self.assertEqual(
            await self.mistake("--handler", "broken:App"),
            f"--handler broken:App: importing 'broken' failed: ZeroDivisionError: division by "
            f"zero ({os.path.join(self.cwd, 'broken.py')}:2)")

    async def test_duplicate_name(self) -> None:
        self.assertEqual(
            await self.mistake("--handler", "userapp:Greeter", "--handler", "userapp:OtherGreeter"),
            "--handler userapp:OtherGreeter: call 'greet' is already served by userapp:Greeter; "
            "a name may be served once: rename one of them or leave one out")

    def busy_port(self) -> int:
        """A loopback port some other socket is listening on."""
        busy = socket.socket()
        self.addCleanup(busy.close)
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        return int(busy.getsockname()[1])

    async def test_port_in_use(self) -> None:
        where = f"tcp:{self.busy_port()}:interface=127.0.0.1"
        self.assertEqual(await self.mistake("--listen", where, status=1),
                         f"--listen {where}: address already in use (is another server running? "
                         "choose another port with --listen tcp:PORT)")

    async def test_port_in_use_after_another_listener(self) -> None:
        """The unix listener that did start is closed and its file removed."""
        sock = os.path.join(self.cwd, "first.sock")
        line = await self.mistake("--listen", f"unix:{sock}", "--listen",
                                  f"tcp:{self.busy_port()}", status=1)
        self.assertIn("address already in use", line)
        self.assertEqual(sorted(os.listdir(self.cwd)), ["userapp.py"])  # no socket, no lock

    async def test_missing_directory(self) -> None:
        self.assertEqual(await self.mistake("--listen", "unix:/missing/dir/ws.sock"),
                         "--listen unix:/missing/dir/ws.sock: directory /missing/dir does not "
                         "exist; create it or choose another socket path")

    async def test_permission_denied(self) -> None:
        """As a user who may not write the directory (root is made 'nobody' for this)."""
        locked = os.path.join(self.cwd, "locked")
        os.mkdir(locked, 0o755)
        prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] \
            if os.geteuid() == 0 else []
        os.chmod(self.cwd, 0o755)
        self.assertEqual(
            await self.mistake("--listen", f"unix:{locked}/ws.sock", prefix=prefix),
            f"--listen unix:{locked}/ws.sock: permission denied: cannot create a socket in "
            f"{locked}; choose a directory you may write to")
        if os.geteuid() == 0:  # and a port below 1024, which only root may bind
            self.assertEqual(
                await self.mistake("--listen", "tcp:81:interface=127.0.0.1", prefix=prefix,
                                   status=1),
                "--listen tcp:81:interface=127.0.0.1: permission denied (ports below 1024 "
                "need root or CAP_NET_BIND_SERVICE; choose a port from 1024, or let systemd "
                "hold the port: systemd:)")

    async def test_bad_tls_key(self) -> None:
        key = os.path.join(self.cwd, "key.pem")
        with open(key, "w") as f:
            f.write("not a key\n")
        line = await self.mistake("--listen", f"ssl:0:privateKey={key}")
        self.assertTrue(line.startswith(f"--listen ssl:0:privateKey={key}: the TLS key or "
                                        "certificate cannot be loaded ("), line)
        self.assertTrue(line.endswith("); give PEM files: "
                                      "ssl:PORT:privateKey=KEY.pem:certKey=CERT.pem"), line)
        missing = os.path.join(self.cwd, "nokey.pem")
        self.assertEqual(await self.mistake("--listen", f"ssl:0:privateKey={missing}"),
                         f"--listen ssl:0:privateKey={missing}: cannot read TLS file {missing}: "
                         "No such file or directory; check privateKey= and certKey= (PEM files)")

    async def test_bad_endpoints(self) -> None:
        self.assertEqual(await self.mistake("--listen", "tcp:99999"),
                         "--listen tcp:99999: port 99999 is out of range; choose 0-65535")
        line = await self.mistake("--listen", "bogus:1")
        self.assertTrue(line.startswith("--listen bogus:1: unknown endpoint type 'bogus'; use "),
                        line)
        line = await self.mistake("--listen", "systemd:domain=INET:index=0")
        self.assertTrue(line.startswith("--listen systemd:domain=INET:index=0: no such socket "
                                        "from systemd"), line)

    async def test_auth_secret_missing(self) -> None:
        self.assertEqual(await self.mistake("--auth", "hmac:/no/secret"),
                         "--auth hmac:/no/secret: cannot read the HMAC secret file /no/secret: "
                         "No such file or directory; make one with 'head -c 32 /dev/urandom "
                         "| base64 > /no/secret; chmod 600 /no/secret'")

    async def test_extra_argument(self) -> None:
        self.assertEqual(await self.mistake("8080"),
                         "8080: unexpected argument; options take the form --name value "
                         "('twistd wsservice --help' lists them)")

    async def test_help_still_prints_everything(self) -> None:
        out, err, code = await processes.run(TWISTD + ["wsservice", "--help"], self.cwd)
        self.assertEqual(code, 0, err)
        self.assertIn("--max-send-queue", out)
        self.assertIn("[default: 1048576 bytes]", out)
        self.assertIn("--app-dir", out)
