"""The layers import one way: no module of wsservice imports one that imports it back."""

from __future__ import annotations

import ast
import os
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "wsservice")


def imports() -> dict[str, set[str]]:
    """Each wsservice module's imports of other wsservice modules, wherever they are written
    (inside functions and under TYPE_CHECKING too)."""
    graph: dict[str, set[str]] = {}
    for name in sorted(os.listdir(PACKAGE)):
        if not name.endswith(".py"):
            continue
        module = name[:-3]
        with open(os.path.join(PACKAGE, name)) as f:
            tree = ast.parse(f.read())
        found: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                if node.module:
                    found.add(node.module.split(".")[0])
                else:
                    found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("wsservice"):
                parts = node.module.split(".")  # type: ignore[union-attr]
                found.add(parts[1] if len(parts) > 1 else "__init__")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("wsservice."):
                        found.add(alias.name.split(".")[1])
        graph[module] = found - {module}
    return graph


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, or None."""
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> list[str] | None:
        if module in path:
            return path[path.index(module):] + [module]
        if module in done or module not in graph:
            return None
        for other in sorted(graph[module]):
            found = visit(other, path + [module])
            if found:
                return found
        done.add(module)
        return None
    for module in sorted(graph):
        if module != "__init__":
            found = visit(module, [])
            if found:
                return found
    return None


class LayerTests(SynchronousTestCase):
    """Import structure of the package."""

    def test_no_import_cycle(self) -> None:
        graph = imports()
        graph.pop("__init__")  # the public re-exports import everything, and nothing them
        self.assertIsNone(cycle(graph))

    def test_core_modules_do_not_import_the_service(self) -> None:
        graph = imports()
        for module in ("session", "connection", "memorystore", "memorybroker", "store",
                       "wire", "reasons", "interfaces"):
            self.assertNotIn("service", graph[module], module)
        for module in ("service", "connection", "memorystore", "memorybroker", "store"):
            # nothing under the adapters picks a close code (the session only checks the
            # one a handler gives to session.close())
            self.assertNotIn("closecodes", graph[module], module)

    def test_cycle_finder_finds_one(self) -> None:
        self.assertEqual(cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}), ["a", "b", "c", "a"])

    def test_each_module_imports_alone(self) -> None:
        names = sorted(n[:-3] for n in os.listdir(PACKAGE)
                       if n.endswith(".py") and n not in ("__init__.py", "__main__.py"))
        code = ("import importlib, sys\n"
                "for name in sys.argv[1:]:\n"
                "    for m in [m for m in sys.modules if m.startswith('wsservice')]:\n"
                "        del sys.modules[m]\n"
                "    importlib.import_module('wsservice.' + name)\n"
                "print('ok')\n")
        out = subprocess.run([sys.executable, "-c", code, *names], capture_output=True,
                             text=True, cwd=os.path.dirname(PACKAGE))
        self.assertEqual((out.returncode, out.stdout.strip(), out.stderr), (0, "ok", ""))
