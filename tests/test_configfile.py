"""``--config FILE``: the options from a TOML file, the command line overriding it; each
mistake in the file a one-line usage error naming the key and the file; docs/configuration.md's
example file loaded as it is."""

from __future__ import annotations

import os
import re
import sys

from twisted.trial.unittest import SynchronousTestCase, TestCase

from wsservice import configfile, tap
from wsservice.config import Settings

from . import docs, processes
from .wsclient import connect

CONFIGURATION_MD = os.path.join(docs.ROOT, "docs", "configuration.md")
TWISTD = [sys.executable, processes.TWISTD]


def parse(*args: str) -> tap.Options:
    options = tap.Options()
    options.parseOptions(list(args))
    return options


def names() -> frozenset[str]:
    """Every option a config file may hold: every option of twistd wsservice but --config."""
    return configfile.schema(tap.Options(), tap._NUMBERS).names


def example() -> str:
    """The one ```toml block of docs/configuration.md: the complete example file."""
    found = [body for lang, body in docs.blocks(CONFIGURATION_MD) if lang == "toml"]
    assert len(found) == 1, found
    return found[0]


class _Files:
    """Config files written into a fresh directory."""

    def setUp(self) -> None:
        self.dir = processes.scratch(self, "wsc")

    def write(self, text: str | bytes, name: str = "wsservice.toml") -> str:
        path = os.path.join(self.dir, name)
        with open(path, "wb") as f:
            f.write(text.encode() if isinstance(text, str) else text)
        return path

    def mistake(self, text: str | bytes, *args: str) -> str:
        """The one-line usage error of ``--config FILE`` holding ``text``, the path shown
        as FILE."""
        path = self.write(text)
        with self.assertRaises(tap.OptionError) as caught:
            parse("--config", path, *args)
        line = str(caught.exception)
        self.assertNotIn("\n", line)
        return line.replace(path, "FILE")


class ExampleFileTests(SynchronousTestCase):
    """docs/configuration.md's example file: every option, and exactly the defaults."""

    def setUp(self) -> None:
        self.dir = processes.scratch(self, "wsc")
        self.path = os.path.join(self.dir, "wsservice.toml")
        with open(self.path, "w") as f:
            f.write(example())

    def test_example_gives_the_defaults(self) -> None:
        loaded, defaults = parse("--config", self.path), parse()
        self.assertEqual(loaded["settings"], Settings())
        for name in sorted(names()):
            self.assertEqual(loaded[name], defaults[name], name)
        # and it does set them: every uncommented key is an option, given its default
        given = configfile.load(self.path, configfile.schema(tap.Options(), tap._NUMBERS))
        self.assertIn("max-message-size", given)
        self.assertEqual(given["max-message-size"], "1048576")
        self.assertEqual(given["listen"], ["tcp:8080:interface=127.0.0.1"])
        self.assertIs(given["no-fast-path"], False)

    def test_example_names_every_option(self) -> None:
        """As a key or a commented-out example, and in the table of keys."""
        text = example()
        keys = set(re.findall(r"^(?:# )?([a-z][a-z0-9-]*) = ", text, re.M))
        self.assertEqual(keys, set(names()))
        with open(CONFIGURATION_MD) as f:
            table = set(re.findall(r"^\| `([a-z][a-z0-9-]*)` \|", f.read(), re.M))
        self.assertEqual(table, set(names()))

    def test_commented_examples_are_valid(self) -> None:
        """The commented-out values are of the right type (uncommented, they load)."""
        commented = "\n".join(line[2:] for line in example().splitlines()
                              if re.match(r"# [a-z][a-z0-9-]* = ", line))
        path = os.path.join(self.dir, "commented.toml")
        with open(path, "w") as f:
            f.write(commented)
        given = configfile.load(path, configfile.schema(tap.Options(), tap._NUMBERS))
        self.assertEqual(sorted(given), ["api-key-file", "auth", "jwt-audience", "jwt-issuer",
                                         "node-id", "redis"])


class FileValuesTests(_Files, SynchronousTestCase):
    """Values from the file reach the options and Settings; the command line wins."""

    def test_values_of_every_type(self) -> None:
        path = self.write("""
listen = ["tcp:0:interface=127.0.0.1", "unix:/tmp/wsc-test.sock"]
handler = ["tests.fixtures:Greeter", "tests.fixtures:PlainCalls"]
allowed_origin = ["https://*.example.com"]    # underscores for dashes
path = "/socket"
hello-timeout = 2.5
call-timeout = 7                              # a whole number for a float option
max-message-size = 1_000
no-fast-path = true
conformance-echo = false
""")
        o = parse("--config", path)
        self.assertEqual(o["listen"], ["tcp:0:interface=127.0.0.1", "unix:/tmp/wsc-test.sock"])
        self.assertEqual(o["handler"], ["tests.fixtures:Greeter", "tests.fixtures:PlainCalls"])
        s = o["settings"]
        self.assertEqual((s.path, s.hello_timeout, s.call_timeout, s.max_message_size),
                         ("/socket", 2.5, 7.0, 1000))
        self.assertIsInstance(s.max_message_size, int)
        self.assertIsInstance(s.call_timeout, float)
        self.assertEqual(s.allowed_origins, ("https://*.example.com",))
        self.assertEqual((s.fast_path, s.conformance_echo), (False, False))

    def test_command_line_overrides_the_file(self) -> None:
        path = self.write("""
listen = ["tcp:0:interface=127.0.0.1", "tcp:0"]
allowed-origin = ["https://a.example"]
max-depth = 4
path = "/file"
server-version = true
""")
        for config in (["--config", path], [f"--config={path}"]):
            o = parse(*config, "--max-depth", "8", "--listen", "tcp:1234",
                      "--allowed-origin", "https://b.example")
            self.assertEqual(o["settings"].max_depth, 8)
            # a repeatable option: the command line's values replace the file's array
            self.assertEqual(o["listen"], ["tcp:1234"])
            self.assertEqual(o["settings"].allowed_origins, ("https://b.example",))
            # what the command line does not give comes from the file
            self.assertEqual(o["settings"].path, "/file")
            self.assertIs(o["settings"].server_version, True)

    def test_abbreviated_option_on_the_command_line_overrides_too(self) -> None:
        """getopt takes unique prefixes: --max-dep is --max-depth."""
        path = self.write("max-depth = 4\n")
        self.assertEqual(parse("--config", path, "--max-dep", "9")["settings"].max_depth, 9)

    def test_flag_from_the_command_line_with_the_file_false(self) -> None:
        path = self.write("no-fast-path = false\nconformance-echo = true\n")
        s = parse("--config", path, "--no-fast-path")["settings"]
        self.assertEqual((s.fast_path, s.conformance_echo), (False, True))

    def test_empty_file_is_the_defaults(self) -> None:
        path = self.write("# nothing set\n")
        self.assertEqual(parse("--config", path)["settings"], Settings())

    def test_jwt_leeway_as_a_number(self) -> None:
        path = self.write("jwt-leeway = 5\n")
        self.assertEqual(parse("--config", path)["jwt-leeway"], 5.0)


class FileMistakeTests(_Files, SynchronousTestCase):
    """Each mistake in the file: one line naming the key and the file."""

    def test_typo_suggests_the_option(self) -> None:
        self.assertEqual(self.mistake("max-mesage-size = 10\n"),
                         "max-mesage-size in FILE: unknown option; did you mean "
                         "max-message-size?")
        self.assertEqual(self.mistake("alowed_origin = []\n"),
                         "alowed_origin in FILE: unknown option; did you mean allowed-origin?")
        self.assertEqual(self.mistake("nodaemon = true\n"),
                         "nodaemon in FILE: unknown option; "
                         "'twistd wsservice --help' lists the options")

    def test_wrong_types(self) -> None:
        cases = {
            'max-message-size = "100"': 'max-message-size in FILE: "100" is a string; it '
                                        'takes a number (no quotes)',
            "hello-timeout = true": "hello-timeout in FILE: true is a boolean; it takes a "
                                    "number (no quotes)",
            "listen = 8080": "listen in FILE: 8080 is a number; this repeatable option takes "
                             'an array of strings, e.g. listen = ["…", "…"]',
            'listen = "tcp:8080"':
                'listen in FILE: "tcp:8080" is a string; this repeatable option takes an array '
                'of strings, e.g. listen = ["…", "…"]',
            "handler = [1, 2]": "handler in FILE: [1, 2] is an array; this repeatable option "
                                'takes an array of strings, e.g. handler = ["…", "…"]',
            'no-fast-path = "yes"': 'no-fast-path in FILE: "yes" is a string; a flag takes '
                                    "true or false, e.g. no-fast-path = true",
            "path = 5": 'path in FILE: 5 is a number; it takes a string, e.g. path = "…"',
            "[auth]\nx = 1": 'auth in FILE: a table; it takes a string, '
                             'e.g. auth = "…"',
            "redis = 1979-05-27": "redis in FILE: 1979-05-27 is a date or time; it takes a "
                                  'string, e.g. redis = "…"',
        }
        for text, line in cases.items():
            self.assertEqual(self.mistake(text + "\n"), line)

    def test_bad_values_get_the_command_lines_checks(self) -> None:
        cases = {
            "max-message-size = -1": "max-message-size in FILE: -1: must be a whole number "
                                     ">= 1; e.g. max-message-size = 1048576 (the default)",
            "max-depth = 2.5": "max-depth in FILE: 2.5: not a whole number; e.g. max-depth = "
                               "32 (the default)",
            "call-timeout = nan": "call-timeout in FILE: nan: must be a finite number > 0; "
                                  "e.g. call-timeout = 30 (the default)",
            'path = "ws"': "path in FILE: ws: must start with '/' and name a resource; "
                           'e.g. path = "/ws"',
            'listen = ["tcp:99999"]': "listen in FILE: tcp:99999: port 99999 is out of range; "
                                      "choose 0-65535",
            "jwt-leeway = -1": "jwt-leeway in FILE: -1: must be a finite number >= 0; "
                               "e.g. jwt-leeway = 30 (the default)",
            'jwt-audience = "chat"': "jwt-audience in FILE: chat: only JWTs are checked for "
                                     "it; give --auth jwt:KEYFILE too, or leave it out",
            'node-id = "a"': "node-id in FILE: only a node of a cluster has one; "
                             "give --redis too",
            'auth = "hmac:/no/secret"': "auth in FILE: hmac:/no/secret: cannot read the HMAC "
                                        "secret file /no/secret: No such file or directory; "
                                        "make one with 'head -c 32 /dev/urandom | base64 > "
                                        "/no/secret; chmod 600 /no/secret'",
        }
        for text, line in cases.items():
            self.assertEqual(self.mistake(text + "\n"), line)

    def test_a_bad_value_on_the_command_line_still_names_the_option(self) -> None:
        self.assertEqual(self.mistake("max-depth = 4\n", "--max-message-size", "-1"),
                         "--max-message-size -1: must be a whole number >= 1; "
                         "e.g. --max-message-size 1048576 (the default)")
        # the command line's value replaced the file's, so the command line is blamed
        self.assertEqual(self.mistake("max-depth = 4\n", "--max-depth", "0"),
                         "--max-depth 0: must be a whole number from 1 to 1000; "
                         "e.g. --max-depth 32 (the default)")

    def test_config_in_the_file(self) -> None:
        self.assertEqual(self.mistake('config = "other.toml"\n'),
                         "config in FILE: a config file cannot name another one; remove the "
                         "key (give --config once, on the command line)")

    def test_both_spellings_of_one_option(self) -> None:
        self.assertEqual(self.mistake("max-depth = 4\nmax_depth = 5\n"),
                         "max_depth in FILE: the same option as max-depth; keep one")

    def test_invalid_toml_says_where(self) -> None:
        self.assertEqual(self.mistake('path = "/ws"\n\nlisten "tcp:0"\n'),
                         "--config FILE: not valid TOML: Expected '=' after a key in a "
                         "key/value pair (at line 3, column 8)")
        self.assertEqual(self.mistake("max-depth = 4\nmax-depth = 5\n"),
                         "--config FILE: not valid TOML: Cannot overwrite a value "
                         "(at line 2, column 14)")

    def test_not_utf8(self) -> None:
        self.assertEqual(self.mistake(b'path = "/\xff"\n'),
                         "--config FILE: not UTF-8 text (byte 9); save it as UTF-8")

    def test_missing_or_unreadable(self) -> None:
        missing = os.path.join(self.dir, "missing.toml")
        for path, why in ((missing, "No such file or directory"), (self.dir, "Is a directory")):
            with self.assertRaises(tap.OptionError) as caught:
                parse("--config", path)
            self.assertEqual(str(caught.exception),
                             f"--config {path}: cannot read it: {why}; give the path of a "
                             "TOML file (docs/configuration.md has an example)")


class BlameTests(SynchronousTestCase):
    """configfile.blame re-words only lines about an option the file set."""

    def test_blame(self) -> None:
        line = "--max-depth 0: must be a whole number from 1 to 1000; e.g. --max-depth 32"
        self.assertEqual(configfile.blame(line, "f.toml", {"max-depth"}, {"max-depth"}),
                         "max-depth in f.toml: 0: must be a whole number from 1 to 1000; "
                         "e.g. max-depth = 32")
        self.assertEqual(configfile.blame(line, "f.toml", {"max-frames"}, {"max-depth"}), line)
        self.assertEqual(configfile.blame("--max-depth-x 0: no", "f", {"max-depth"}, ()),
                         "--max-depth-x 0: no")
        self.assertEqual(configfile.blame("--trusted-proxy: bad", "f", {"trusted-proxy"}, ()),
                         "trusted-proxy in f: bad")


def port(child: processes.Child) -> int:
    """The TCP port of a child's ws://127.0.0.1:PORT/socket listener, from its start-up line."""
    found = re.search(r"ws://127\.0\.0\.1:(\d+)/socket ", child.text)
    assert found is not None, child.text
    return int(found.group(1))


class TwistdConfigTests(TestCase):
    """``twistd -n wsservice --config FILE`` in a subprocess, as an operator runs it."""

    timeout = 60

    def setUp(self) -> None:
        self.cwd = processes.scratch(self, "wsc")

    def write(self, text: str) -> str:
        path = os.path.join(self.cwd, "wsservice.toml")
        with open(path, "w") as f:
            f.write(text)
        return path

    async def test_serves_what_the_file_says(self) -> None:
        sock = os.path.join(self.cwd, "ws.sock")
        self.write(f"""
listen = ["tcp:0:interface=127.0.0.1", "unix:{sock}"]
path = "/socket"
max-message-size = 1000
""")
        child = await processes.start(
            self, TWISTD + ["-n", "--pidfile=", "--logfile=-", "wsservice",
                            "--config", "wsservice.toml"], self.cwd, listeners=2)
        for address in (f"127.0.0.1:{port(child)}", f"unix:{sock}"):
            client = await connect(address, path="/socket")
            await client.hello()
            self.assertEqual((await client.call("echo", "hi"))["result"], "hi")
            client.send({"type": "call", "id": 2, "method": "echo", "params": "x" * 2000})
            closed, _ = await client.waitClosed()
            self.assertEqual(closed, 1009)  # the file's max-message-size
        await processes.stop_cleanly(self, child)

    async def test_command_line_overrides_the_file(self) -> None:
        self.write('listen = ["unix:/nonexistent/dir/ws.sock"]\npath = "/socket"\n')
        child = await processes.start(
            self, TWISTD + ["-n", "--pidfile=", "--logfile=-", "wsservice", "--config",
                            "wsservice.toml", "--listen", "tcp:0:interface=127.0.0.1"],
            self.cwd)
        client = await connect(f"127.0.0.1:{port(child)}", path="/socket")
        await client.hello()
        client.dropConnection(abort=True)
        await processes.stop_cleanly(self, child)

    async def test_bad_file_one_line_status_2(self) -> None:
        for text, line in (
                ("max-mesage-size = 10\n", "wsservice: max-mesage-size in wsservice.toml: "
                                           "unknown option; did you mean max-message-size?"),
                ("max-message-size = -1\n", "wsservice: max-message-size in wsservice.toml: "
                                            "-1: must be a whole number >= 1; "
                                            "e.g. max-message-size = 1048576 (the default)"),
                ('path = "/ws"\nlisten "tcp:0"\n',
                 "wsservice: --config wsservice.toml: not valid TOML: Expected '=' after a key "
                 "in a key/value pair (at line 2, column 8)")):
            self.write(text)
            out, err, code = await processes.run(
                TWISTD + ["-n", "--pidfile=", "wsservice", "--config", "wsservice.toml"],
                self.cwd)
            self.assertEqual((code, err), (2, line + "\n"), out)
            self.assertNotIn("Traceback", out)
        out, err, code = await processes.run(
            TWISTD + ["-n", "--pidfile=", "wsservice", "--config", "missing.toml"], self.cwd)
        self.assertEqual((code, err), (2, "wsservice: --config missing.toml: cannot read it: "
                                          "No such file or directory; give the path of a TOML "
                                          "file (docs/configuration.md has an example)\n"))
