"""Run ``twistd -n wsservice ARGS`` on *this checkout's* wsservice, for memtests/test_memory.py.

The Makefile installs the package non-editably, so a plain ``twistd`` would serve the
installed copy, which may be older than the code under test. This puts the checkout first on
sys.path, says which wsservice it loaded, then hands over to the real twistd (the installed
plugin only names the module ``wsservice.tap``, which now resolves to the checkout).
"""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import wsservice  # noqa: E402

print(f"memory_server: wsservice from {os.path.dirname(wsservice.__file__)} pid {os.getpid()}",
      flush=True)

from twisted.scripts.twistd import run  # noqa: E402

sys.argv = ["twistd", "-n", "--pidfile=", "--logfile=-", "wsservice", *sys.argv[1:]]
run()
