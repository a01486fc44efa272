"""The README's handler example is real code: run it through the in-memory harness."""

from __future__ import annotations

import os
import re
import types

from twisted.trial.unittest import SynchronousTestCase

from wsservice.testing import ServiceHarness

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def _myapp() -> types.ModuleType:
    text = open(README, encoding="utf-8").read()
    block = next(b for b in re.findall(r"```python\n(.*?)```", text, re.S)
                 if b.startswith("# myapp.py"))
    module = types.ModuleType("myapp")
    exec(compile(block, "README.md:myapp.py", "exec"), module.__dict__)
    return module


class ReadmeExampleTests(SynchronousTestCase):
    """The Greeter of README.md behaves as the README's transcript says."""

    def setUp(self) -> None:
        self.harness = ServiceHarness([_myapp().Greeter()])
        self.client = self.harness.connect()
        self.client.hello(meta={"client": "docs"})

    def test_transcript(self) -> None:
        c = self.client
        self.assertEqual(c.call("greet", {"name": "Ada"}),
                         {"type": "result", "id": 1, "result": "hello, Ada"})
        c.send({"type": "event", "event": "shout", "data": "hi"})
        self.assertEqual(c.next(), {"type": "event", "event": "shouted", "data": "hi", "seq": 1})

    def test_errors(self) -> None:
        self.assertEqual(self.client.call("greet", 5)["error"]["code"], "invalid_params")
        self.assertEqual(self.client.call("greet", {"name": "Voldemort"}, id=2)["error"]["code"],
                         "greeter.refused")

    def test_coroutine_server_call(self) -> None:
        c = self.client
        self.assertIsNone(c.call("later", None, id="x"))
        asked = c.next()
        self.assertEqual((asked["type"], asked["method"]), ("call", "confirm"))
        c.send({"type": "result", "id": asked["id"], "result": "yes"})
        self.assertEqual(c.next(), {"type": "result", "id": "x",
                                    "result": {"client said": "yes"}})
