"""twistd plugin: ``twistd wsservice``. Kept tiny so plugin discovery stays cheap."""

from twisted.application.service import ServiceMaker

wsservice = ServiceMaker(
    "wsservice",
    "wsservice.tap",
    "Real-time JSON messaging over WebSocket (sessions, events, calls).",
    "wsservice",
)
