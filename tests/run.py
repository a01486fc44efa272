"""Run the trial suite and end with a plain 'N passed, N failed' line for CI readers.

Only real passes make a green run: a skipped test, a todo (an expected failure) and an
unexpected success fail it too, each named in the summary with its reason.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

DOUBLE = "=" * 79  # trial opens each reported result with this line
SINGLE = "-" * 79  # and closes the last one with this, before "Ran N tests"
# trial's section headers, and how this summary names them
FLAVORS = {"[SKIPPED]": "skipped", "[TODO]": "todo", "[SUCCESS!?!]": "unexpected success"}


def sections(lines: list[str]) -> list[tuple[str, str, list[str]]]:
    """trial's reported results: (flavor, reason text, test ids).

    Each is a line of '=', the flavor ('[SKIPPED]', '[TODO]', '[FAIL]'...), the reason (a
    skip's message; a todo's "Reason: '...'" and its traceback), an empty line, then the
    ids of every test that had that result, one a line.
    """
    found = []
    i = 0
    while i < len(lines):
        if lines[i] != DOUBLE or i + 1 >= len(lines):
            i += 1
            continue
        flavor, j = lines[i + 1], i + 2
        body = []
        while j < len(lines) and lines[j] not in (DOUBLE, SINGLE):
            body.append(lines[j])
            j += 1
        blank = max((k for k, line in enumerate(body) if not line.strip()), default=-1)
        found.append((flavor, "\n".join(body[:blank]).strip(),
                      [line.strip() for line in body[blank + 1:] if line.strip()]))
        i = j
    return found


def reason_of(flavor: str, text: str) -> str:
    """One line saying why: a skip's message, a todo's reason and how it failed."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return "(no reason given)"
    if flavor == "[SKIPPED]":
        return " ".join(lines)
    reason = lines[0]
    found = re.match(r"Reason: (.*)$", reason)
    if found:
        reason = found.group(1)
    if flavor == "[TODO]" and len(lines) > 1:
        reason += f" (fails with {lines[-1]})"
    return reason


def main() -> int:
    """Run trial on tests/ (or the given test names), echo its output, summarise; exit 0
    only when every test ran and passed."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    names = sys.argv[1:] or ["tests"]
    cmd = [sys.executable, "-m", "twisted.trial", "--temp-directory", "_trial_temp", *names]
    print("==> " + " ".join(cmd), flush=True)
    proc = subprocess.Popen(cmd, cwd=here, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1)
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        sys.stdout.write(line)
        lines.append(line.rstrip("\n"))
    code = proc.wait()
    summary = "\n".join(lines[-5:])
    counts = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", summary)}
    passed = counts.get("successes", 0)
    failed = sum(counts.get(k, 0) for k in ("failures", "errors"))
    not_passed = {"skipped": counts.get("skips", 0),
                  "todo": counts.get("expectedFailures", 0),
                  "unexpected success": counts.get("unexpectedSuccesses", 0)}
    print(f"tests: {passed} passed, {failed} failed"
          + "".join(f", {n} {name}" for name, n in not_passed.items() if n))
    # A test that did not run, or whose failure is expected, is not a pass: CI must not go
    # green on it, nor go red without saying which test and why.
    listed = 0
    for flavor, text, ids in sections(lines):
        if flavor in FLAVORS:
            for test in ids:
                print(f"  {FLAVORS[flavor]}: {test}: {reason_of(flavor, text)}")
                listed += 1
    if listed != sum(not_passed.values()):
        print(f"  ({sum(not_passed.values())} not passed, {listed} found in trial's report)")
    if passed == 0 and code == 0:
        print("no test ran: treating as a failure")
        return 1
    return code or (1 if any(not_passed.values()) else 0)


if __name__ == "__main__":
    sys.exit(main())
