# The chat example and the demo app, composed into an application of our own.
#
#     twistd -ny examples/chat.tac        (-n: stay in the foreground; Ctrl-C stops it)
#
# then open http://127.0.0.1:8081/ (the demo page) or connect a WebSocket client to
# ws://127.0.0.1:8081/ws, or over the unix socket /tmp/wsservice-chat.sock.
#
# twistd runs this file with exec(): it must leave an object named `application`.

import os
import sys

from twisted.application import service

# twistd does not put the project root on sys.path, so make the `examples` package
# importable from wherever twistd is started: this file lives in <root>/examples/.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from examples.chat import ChatApp  # noqa: E402  (needs the sys.path line above)
from wsservice import Settings, makeService  # noqa: E402
from wsservice.demo import DemoApp  # noqa: E402

application = service.Application("chat")

chat = makeService(
    [ChatApp(ask_timeout=5), DemoApp()],
    listen=["tcp:8081:interface=127.0.0.1", "unix:/tmp/wsservice-chat.sock"],
    # ask_all waits at most 5 s per member, well inside the 10 s any call may take.
    settings=Settings(call_timeout=10),
    # To require tokens: authenticator=TokenAuthenticator({"s3cret": "alice"}), imported
    # from examples.chat (the demo page sends no token, so it would then be refused).
)
chat.setServiceParent(application)
