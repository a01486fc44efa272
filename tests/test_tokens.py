"""The built-in HMAC token authenticator: tokens, expiry, transport of the token, --auth."""

from __future__ import annotations

import io
import os
import tempfile
from contextlib import redirect_stdout

from twisted.trial.unittest import SynchronousTestCase

from wsservice import AuthRequest, HMACAuthenticator, Unauthorized
from wsservice.demo import DemoApp
from wsservice.errors import ConfigurationError
from wsservice.tap import Options
from wsservice.testing import ServiceHarness
from wsservice.tokens import main

SECRET = b"s" * 32


class Now:
    """A settable clock for expiry."""

    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


class TokenTests(SynchronousTestCase):
    """Minting and verifying."""

    def setUp(self) -> None:
        self.now = Now()
        self.auth = HMACAuthenticator(SECRET, self.now)

    def test_round_trip_with_claims(self) -> None:
        claims = self.auth.verify(self.auth.mint("alice", 60, role="admin"))
        self.assertEqual(claims, {"sub": "alice", "role": "admin", "exp": 1_000_060})

    def test_expired(self) -> None:
        token = self.auth.mint("alice", 60)
        self.now.t += 60
        self.assertRaises(Unauthorized, self.auth.verify, token)

    def test_tampered_and_malformed(self) -> None:
        token = self.auth.mint("alice", 60)
        body, sig = token.split(".")
        other = HMACAuthenticator(b"t" * 32, self.now).mint("alice", 60)
        for bad in (body + "." + sig[:-2] + "AA", other, "", "x", "a.b.c", token + "é",
                    "." + sig, body + ".", "x" * 5000):
            self.assertRaises(Unauthorized, self.auth.verify, bad)

    def test_short_secret_refused(self) -> None:
        self.assertRaises(ConfigurationError, HMACAuthenticator, b"short")

    def test_token_from_auth_string_dict_or_header(self) -> None:
        token = self.auth.mint("bob", 60)
        for request in (AuthRequest(token), AuthRequest({"token": token}),
                        AuthRequest(None, {"authorization": f"Bearer {token}"})):
            self.assertEqual(self.auth.authenticate(request)["sub"], "bob")
        for request in (AuthRequest(None), AuthRequest(5), AuthRequest({"token": 5}),
                        AuthRequest(None, {"authorization": f"Basic {token}"})):
            self.assertRaises(Unauthorized, self.auth.authenticate, request)


class ServiceTests(SynchronousTestCase):
    """Through the service: 4401 on refusal, the claims are the principal."""

    def setUp(self) -> None:
        self.auth = HMACAuthenticator(SECRET)
        self.harness = ServiceHarness([DemoApp()], authenticator=self.auth)

    def test_accepted_principal_visible_to_handlers(self) -> None:
        c = self.harness.connect()
        c.hello(auth=self.auth.mint("carol", 60))
        self.assertEqual(c.call("whoami")["result"]["principal"]["sub"], "carol")

    def test_refused_4401(self) -> None:
        c = self.harness.connect()
        c.send({"type": "hello", "auth": "nope"})
        self.assertEqual(c.next()["error"]["code"], "unauthorized")
        self.assertEqual(c.closed, 4401)
        self.assertEqual(self.harness.service.sessions, {})


class CommandLineTests(SynchronousTestCase):
    """--auth hmac:FILE and the minting command."""

    def secret_file(self, content: bytes = SECRET, mode: int = 0o600) -> str:
        fd, path = tempfile.mkstemp()
        os.write(fd, content + b"\n")
        os.close(fd)
        os.chmod(path, mode)
        self.addCleanup(os.remove, path)
        return path

    def test_auth_option(self) -> None:
        options = Options()
        options.parseOptions(["--auth", f"hmac:{self.secret_file()}"])
        self.assertIsInstance(options["authenticator"], HMACAuthenticator)

    def test_auth_option_bad_file(self) -> None:
        from twisted.python.usage import UsageError
        self.assertRaises(UsageError, Options().parseOptions, ["--auth", "hmac:/nonexistent"])
        self.assertRaises(UsageError, Options().parseOptions,
                          ["--auth", f"hmac:{self.secret_file(b'short')}"])

    def test_mint_command(self) -> None:
        path = self.secret_file()
        out = io.StringIO()
        with redirect_stdout(out):
            self.assertEqual(main(["--secret-file", path, "--sub", "dave", "--ttl", "30"]), 0)
        claims = HMACAuthenticator.fromFile(path).verify(out.getvalue().strip())
        self.assertEqual(claims["sub"], "dave")

    def test_module_command_prints_only_the_token(self) -> None:
        """``python -m wsservice.tokens``, as documented, against the installed package:
        the token on stdout and nothing on stderr (once a runpy RuntimeWarning)."""
        import subprocess
        import sys
        import tempfile
        path = self.secret_file()
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        done = subprocess.run(
            [sys.executable, "-W", "always", "-m", "wsservice.tokens", "--secret-file", path,
             "--sub", "dave"], capture_output=True, text=True, env=env, timeout=60,
            cwd=tempfile.gettempdir())
        self.assertEqual((done.returncode, done.stderr), (0, ""))
        self.assertEqual(HMACAuthenticator.fromFile(path).verify(done.stdout.strip())["sub"],
                         "dave")

    def test_world_readable_secret_warns(self) -> None:
        from twisted.logger import globalLogPublisher
        seen: list = []
        globalLogPublisher.addObserver(seen.append)
        self.addCleanup(globalLogPublisher.removeObserver, seen.append)
        HMACAuthenticator.fromFile(self.secret_file(mode=0o644))
        self.assertTrue(any("readable by others" in e.get("log_format", "") for e in seen))


class NoDebugByDefaultTests(SynchronousTestCase):
    """wsservice's DEBUG events (session lines) never reach the log unless asked for."""

    def test_session_lines_filtered(self) -> None:
        from twisted.logger import LogLevel, globalLogPublisher

        from wsservice import log

        seen: list = []
        globalLogPublisher.addObserver(seen.append)
        self.addCleanup(globalLogPublisher.removeObserver, seen.append)
        auth = HMACAuthenticator(SECRET)
        c = ServiceHarness([DemoApp()], authenticator=auth).connect()
        c.hello(auth=auth.mint("erin", 60, secret_claim="do-not-log"))
        c.send({"type": "bye"})
        self.assertEqual([e for e in seen if e.get("log_level") == LogLevel.debug], [])
        self.assertNotIn("do-not-log", repr(seen))
        log.setDebug(True)
        self.addCleanup(log.setDebug, False)
        c = ServiceHarness([DemoApp()], authenticator=auth).connect()
        c.hello(auth=auth.mint("erin", 60))
        self.assertTrue([e for e in seen if e.get("log_level") == LogLevel.debug])
