"""The commands of README.md and docs/handlers.md, run literally against the installed package.

Each test saves the files a document asks the reader to save into a fresh directory (with
``.venv`` linking the virtualenv that runs these tests, as after ``make``) and runs the
document's own command line there as a child process, then talks to the server it started
with a real WebSocket client. Only what would make two runs collide is changed: a fixed
port becomes a free one (an extra ``--listen tcp:0``, or ``tcp:0`` in a saved .tac) and
/tmp socket paths become paths in the scratch directory.
"""

from __future__ import annotations

import os
import shutil
import socket
from typing import Any

import orjson
from twisted.trial.unittest import TestCase

from . import docs, processes
from .wsclient import Client, connect

FREE_PORT = " --listen tcp:0:interface=127.0.0.1"


def _matches(expected: Any, got: Any) -> bool:
    """``got`` is ``expected``, where the documentation's "…" stands for any value."""
    if expected == "…":
        return True
    if isinstance(expected, dict):
        return isinstance(got, dict) and expected.keys() == got.keys() and all(
            _matches(v, got[k]) for k, v in expected.items())
    return bool(expected == got)


class _DocsTestCase(TestCase):
    timeout = 90

    async def serve(self, doc: str, prefix: str, cwd: str, extra: str = "",
                    listeners: int = 1) -> processes.Child:
        argv, env = processes.shell(docs.command(doc, prefix) + extra)
        return await processes.start(self, argv, cwd, listeners, env=env)

    async def assertMistake(self, doc: str, line: str, cwd: str) -> None:
        """``line`` (``wsservice: --OPTION VALUE: ...``) is what the documented mistake prints."""
        option, value = line.split(": ", 2)[1].split(" ", 1)
        argv = [".venv/bin/twistd", "-n", "wsservice", option, value]
        out, err, code = await processes.run(argv, cwd)
        self.assertEqual(err, line + "\n", out)
        self.assertNotIn("Traceback", out)
        self.assertIn(code, (1, 2))


class ReadmeTests(_DocsTestCase):
    """README.md: the handler, its twistd command and transcript, app.tac, the trial example."""

    def setUp(self) -> None:
        self.saved = docs.files(docs.README)
        self.assertEqual(set(self.saved), {"myapp.py", "app.tac", "test_greeter.py"})

    async def test_handler_command_and_transcript(self) -> None:
        cwd = docs.scratch(self, {"myapp.py": self.saved["myapp.py"]})
        child = await self.serve(docs.README, ".venv/bin/twistd -n wsservice --handler",
                                 cwd, FREE_PORT)
        client = await connect(f"127.0.0.1:{child.port()}")
        transcript = next(body for lang, body in docs.blocks(docs.README)
                          if lang == "" and body.startswith("→ "))
        for line in transcript.splitlines():
            arrow, message = line[0], orjson.loads(line[2:])
            if arrow == "→":
                client.send(message)
            else:
                got = await client.next()
                self.assertTrue(_matches(message, got), f"README shows {line}, got {got}")
        self.assertEqual((await client.waitClosed())[0], 1000)  # after the bye
        self.assertFalse(client.queue.pending)
        await processes.stop_cleanly(self, child)

    async def test_mistakes_answer_the_documented_line(self) -> None:
        cwd = docs.scratch(self, {"myapp.py": self.saved["myapp.py"]})
        lines = docs.text_lines(docs.README, "wsservice: ")
        self.assertEqual(len(lines), 3, lines)
        holder = socket.socket()  # the port-in-use example needs its port taken
        self.addCleanup(holder.close)
        try:
            holder.bind(("127.0.0.1", 8080))
            holder.listen()
        except OSError:
            pass  # something else holds it: the mistake is the same
        for line in lines:
            await self.assertMistake(docs.README, line, cwd)

    async def test_app_tac(self) -> None:
        cwd = docs.scratch(self, {"myapp.py": self.saved["myapp.py"]})
        sock = os.path.join(cwd, "myapp.sock")
        tac = self.saved["app.tac"]
        self.assertIn("tcp:8080:", tac)
        self.assertIn("unix:/tmp/myapp.sock", tac)
        with open(os.path.join(cwd, "app.tac"), "w") as f:
            f.write(tac.replace("tcp:8080:", "tcp:0:").replace("/tmp/myapp.sock", sock))
        child = await self.serve(docs.README, "PYTHONPATH=. .venv/bin/twistd -ny app.tac", cwd,
                                 listeners=2)
        for address in (f"127.0.0.1:{child.port()}", f"unix:{sock}"):
            client = await connect(address)
            await client.hello()
            self.assertEqual((await client.call("greet", {"name": "Ada"}))["result"],
                             "hello, Ada")
        await processes.stop_cleanly(self, child)
        self.assertFalse(os.path.exists(sock))

    async def test_trial_example(self) -> None:
        cwd = docs.scratch(self, {name: self.saved[name]
                                  for name in ("myapp.py", "test_greeter.py")})
        argv, env = processes.shell(
            docs.command(docs.README, ".venv/bin/python -m twisted.trial"))
        out, err, code = await processes.run(argv, cwd, env)
        self.assertEqual(code, 0, out + err)
        self.assertIn("PASSED (successes=1)", out)


class HandlersGuideTests(_DocsTestCase):
    """docs/handlers.md: its twistd command lines, the two .tac files and its trial example."""

    def setUp(self) -> None:
        self.saved = docs.files(docs.HANDLERS_MD)
        self.cwd = docs.scratch(self, {})
        shutil.copytree(os.path.join(docs.ROOT, "examples"),
                        os.path.join(self.cwd, "examples"),
                        ignore=shutil.ignore_patterns("__pycache__"))

    def save(self, name: str, text: str) -> str:
        """Save a file into the scratch project, free ports and scratch socket paths."""
        text = text.replace("tcp:8081:", "tcp:0:").replace("tcp:8082:", "tcp:0:")
        text = text.replace("/tmp/", self.cwd + "/")
        path = os.path.join(self.cwd, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    async def join(self, address: str, name: str = "ana", **hello: Any) -> Client:
        client = await connect(address)
        await client.hello(**hello)
        reply = await client.call("join", {"name": name})
        self.assertEqual(reply.get("result"), {"name": name}, reply)
        return client

    async def test_twistd_chat_and_demo(self) -> None:
        command = docs.command(docs.HANDLERS_MD, ".venv/bin/twistd -n wsservice --handler "
                                                 "examples.chat:ChatApp --handler")
        command = command.replace("tcp:8081:", "tcp:0:").replace("/tmp/", self.cwd + "/")
        argv, env = processes.shell(command)
        child = await processes.start(self, argv, self.cwd, 2, env=env)
        await self.join(f"127.0.0.1:{child.port()}")
        demo = await connect(f"unix:{self.cwd}/chat.sock")
        await demo.hello()
        self.assertEqual((await demo.call("echo", [1]))["result"], [1])
        await processes.stop_cleanly(self, child)

    async def test_twistd_with_authenticator(self) -> None:
        child = await self.serve(docs.HANDLERS_MD, "CHAT_TOKENS=s3cret=alice", self.cwd,
                                 FREE_PORT)
        await self.join(f"127.0.0.1:{child.port()}", auth={"token": "s3cret"})
        refused = await connect(f"127.0.0.1:{child.port()}")
        refused.send({"type": "hello", "auth": {"token": "wrong"}})
        self.assertEqual((await refused.next())["error"]["code"], "unauthorized")
        self.assertEqual((await refused.waitClosed())[0], 4401)
        await processes.stop_cleanly(self, child)

    async def test_duplicate_name_line(self) -> None:
        [line] = docs.text_lines(docs.HANDLERS_MD, "wsservice: ")
        option, spec = line.split(": ", 2)[1].split(" ", 1)
        argv = [".venv/bin/twistd", "-n", "wsservice", option, spec, option, spec]
        out, err, code = await processes.run(argv, self.cwd)
        self.assertEqual((err, code), (line + "\n", 2), out)

    async def test_chat_tac(self) -> None:
        tac = os.path.join("examples", "chat.tac")
        with open(os.path.join(self.cwd, tac)) as f:
            self.save(tac, f.read())
        sock = os.path.join(self.cwd, "wsservice-chat.sock")
        child = await self.serve(docs.HANDLERS_MD, ".venv/bin/twistd -ny examples/chat.tac",
                                 self.cwd, listeners=2)
        await self.join(f"unix:{sock}")
        await processes.stop_cleanly(self, child)

    async def test_clock_tac(self) -> None:
        self.save("clock.tac", self.saved["clock.tac"])
        child = await self.serve(docs.HANDLERS_MD, "PYTHONPATH=. .venv/bin/twistd -ny clock.tac",
                                 self.cwd, listeners=2)
        await self.join(f"127.0.0.1:{child.port()}", auth={"token": "t0ps3cret"})
        await self.join(f"unix:{self.cwd}/chat-with-clock.sock", "bob", auth={"token": "s3cret"})
        await processes.stop_cleanly(self, child)

    async def test_trial_example(self) -> None:
        self.save("test_chat.py", self.saved["test_chat.py"])
        argv, env = processes.shell(
            docs.command(docs.HANDLERS_MD, ".venv/bin/python -m twisted.trial"))
        out, err, code = await processes.run(argv, self.cwd, env)
        self.assertEqual(code, 0, out + err)
        self.assertIn("PASSED (successes=", out)
