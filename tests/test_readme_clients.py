"""README's client examples are real: board.py and the command lines run against a real
server, as a user runs them (the installed package, a scratch directory)."""

from __future__ import annotations

import os
import re
import sys

from twisted.trial.unittest import TestCase

from . import processes
from .live import serve

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def _readme() -> str:
    with open(README, encoding="utf-8") as f:
        return f.read()


class PythonClientExampleTests(TestCase):
    """README's "From Python" section, run."""

    timeout = 60

    async def test_board_py(self) -> None:
        block = next(b for b in re.findall(r"```python\n(.*?)```", _readme(), re.S)
                     if b.startswith("# board.py"))
        where = processes.scratch(self, "board")
        with open(os.path.join(where, "board.py"), "w", encoding="utf-8") as f:
            f.write(block)
        server = await serve(self)
        out, err, code = await processes.run(
            [sys.executable, "board.py", f"ws://{server.address}/ws"], where)
        self.assertEqual(code, 0, out + err)
        self.assertEqual(out.splitlines(), ["echo: {'hello': 'world'}", "#1 hi from Python",
                                            "state: closed"])

    async def test_command_lines(self) -> None:
        text = _readme()
        block = re.search(r"```sh\n(\.venv/bin/python -m wsservice\.client .*?)```", text, re.S)
        assert block is not None
        lines = [line.split("#")[0].strip() for line in block.group(1).splitlines()]
        call = next(line for line in lines if " call " in line)
        publish = next(line for line in lines if " publish " in line)
        server = await serve(self, unix=True)
        tcp = await serve(self)
        where = processes.scratch(self, "cli")
        argv, env = processes.shell(call.replace("127.0.0.1:8080", tcp.address))
        argv[0] = sys.executable  # .venv/bin/python, as make made it
        out, err, code = await processes.run(argv, where, env)
        self.assertEqual((code, out.strip()), (0, '{"a":1}'), err)
        argv, env = processes.shell(publish.replace("/tmp/ws.sock", server.address[len("unix:"):]))
        argv[0] = sys.executable
        out, err, code = await processes.run(argv, where, env)
        self.assertEqual(code, 0, out + err)
