"""Run the trial suite and end with a plain 'N passed, N failed' line for CI readers."""

from __future__ import annotations

import os
import re
import subprocess
import sys


def main() -> int:
    """Run trial on tests/ (or the given test names), echo its output, summarise, exit as it."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    names = sys.argv[1:] or ["tests"]
    cmd = [sys.executable, "-m", "twisted.trial", "--temp-directory", "_trial_temp", *names]
    print("==> " + " ".join(cmd), flush=True)
    proc = subprocess.Popen(cmd, cwd=here, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1)
    assert proc.stdout is not None
    tail = []
    for line in proc.stdout:
        sys.stdout.write(line)
        tail = (tail + [line])[-5:]
    code = proc.wait()
    summary = "".join(tail)
    counts = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", summary)}
    passed = counts.get("successes", 0)
    failed = sum(counts.get(k, 0) for k in ("failures", "errors", "unexpectedSuccesses"))
    skipped = counts.get("skips", 0)
    if passed == 0 and code == 0:
        print("no test ran: treating as a failure")
        return 1
    print(f"tests: {passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""))
    # A skipped test is not a pass: CI must not go green on tests that did not run.
    return code or (1 if skipped else 0)


if __name__ == "__main__":
    sys.exit(main())
