"""tests/run.py, make test's runner: only passes make a green run, and what did not pass is
named with its reason."""

from __future__ import annotations

import os
import sys

from twisted.trial.unittest import TestCase

from . import processes

RUN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "run.py")

HEADER = """from twisted.trial.unittest import SkipTest, TestCase


class Sample(TestCase):
    def test_passes(self):
        pass
"""

SAMPLES = {
    "passing": "",
    "skipping": """
    def test_skipped(self):
        raise SkipTest("needs a frobnicator")
""",
    "skipping_class": """

class Skipped(TestCase):
    skip = "whole class off"

    def test_one(self):
        pass
""",
    "todo": """
    def test_todo(self):
        self.assertEqual(1, 2)
    test_todo.todo = "issue 12: one is not two yet"
""",
    "unexpected": """
    def test_fixed(self):
        pass
    test_fixed.todo = "issue 13: should fail"
""",
    "failing": """
    def test_fails(self):
        self.fail("broken on purpose")
""",
}


class RunTests(TestCase):
    """run.py on scratch test modules: its exit status and its closing summary."""

    timeout = 120

    def setUp(self) -> None:
        self.where = processes.scratch(self, "wsrun")
        for name, body in SAMPLES.items():
            with open(os.path.join(self.where, f"wsrun_{name}.py"), "w") as f:
                f.write(HEADER + body)

    async def run_on(self, sample: str) -> tuple[str, int]:
        """Run run.py on module ``wsrun_SAMPLE``: (its summary, after trial's output; status)."""
        env = dict(processes.ENV, PYTHONPATH=self.where)
        temp = os.path.join(self.where, "_trial_temp")
        out, err, code = await processes.run(
            [sys.executable, RUN, "--temp-directory", temp, f"wsrun_{sample}"], self.where, env)
        self.assertEqual(err, "")
        self.assertIn("\nRan ", out)
        return out[out.rindex("\nRan "):], code

    async def test_all_pass(self) -> None:
        summary, code = await self.run_on("passing")
        self.assertEqual(code, 0, summary)
        self.assertTrue(summary.endswith("\ntests: 1 passed, 0 failed\n"), summary)

    async def test_skip_fails_and_says_why(self) -> None:
        summary, code = await self.run_on("skipping")
        self.assertEqual(code, 1, summary)
        self.assertIn("\ntests: 1 passed, 0 failed, 1 skipped\n"
                      "  skipped: wsrun_skipping.Sample.test_skipped: needs a frobnicator\n",
                      summary)

    async def test_skipped_class_names_each_test(self) -> None:
        summary, code = await self.run_on("skipping_class")
        self.assertEqual(code, 1, summary)
        self.assertIn("  skipped: wsrun_skipping_class.Skipped.test_one: whole class off\n",
                      summary)

    async def test_todo_fails_and_says_why(self) -> None:
        summary, code = await self.run_on("todo")
        self.assertEqual(code, 1, summary)
        self.assertIn("\ntests: 1 passed, 0 failed, 1 todo\n"
                      "  todo: wsrun_todo.Sample.test_todo: 'issue 12: one is not two yet' "
                      "(fails with twisted.trial.unittest.FailTest: 1 != 2)\n", summary)

    async def test_unexpected_success_fails(self) -> None:
        summary, code = await self.run_on("unexpected")
        self.assertEqual(code, 1, summary)
        self.assertIn("\ntests: 1 passed, 0 failed, 1 unexpected success\n"
                      "  unexpected success: wsrun_unexpected.Sample.test_fixed: "
                      "'issue 13: should fail'\n", summary)

    async def test_failure_fails(self) -> None:
        summary, code = await self.run_on("failing")
        self.assertEqual(code, 1, summary)
        self.assertIn("\ntests: 1 passed, 1 failed\n", summary)
