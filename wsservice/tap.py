"""twistd glue: ``Options`` for ``twistd wsservice`` and ``makeService(options)``.

Every mistake on the command line ends twistd with one line on stderr,
``wsservice: --OPTION VALUE: what is wrong; what to do``, and exit status 2 (a listener
that cannot listen: status 1); ``--help`` prints the whole help. The numeric options and
their help come from the ``Settings`` fields (``config.py``), the one table of settings.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any, NoReturn

from twisted.application.service import IService
from twisted.python import usage

from . import registry
from .app import DEFAULT_LISTEN, WSService, sessionService
from .config import FLAG_FIELDS, OPTION_FIELDS, SettingError, Settings, bounds, check, kind
from .endpoints import ListenError, parse
from .errors import ConfigurationError
from .hosts import HostPolicy
from .log import logger
from .peers import parse_networks
from .redisurl import node_name, parse_redis_url
from .service import SessionService
from .web import check_resources

DEFAULT_HANDLER = "wsservice.demo:DemoApp"
EXIT_USAGE = 2
EXIT_START = 1


class OptionError(usage.UsageError):
    """A usage error already phrased as ``--OPTION VALUE: problem; what to do``."""


def _flag(spec: Any) -> str:
    return "--" + spec.name.replace("_", "-")


def _show(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _help(spec: Any) -> str:
    unit = spec.metadata["unit"]
    unit = {"s": " s", "/s": "/s", "": ""}.get(unit, f" {unit}")
    return f"{spec.metadata['help']} [default: {_show(spec.default)}{unit}]"


_SETTING_OPTIONS = {_flag(spec)[2:]: spec for spec in OPTION_FIELDS.values()}


def _coerce(spec: Any, text: str) -> Any:
    """The value of a settings option from its text; OptionError saying how to fix it."""
    flag = _flag(spec)
    if kind(spec) is str:
        return text
    example = f"e.g. {flag} {_show(spec.default)} (the default)"
    try:
        value = kind(spec)(text)
    except ValueError:
        noun = "a whole number" if kind(spec) is int else "a number"
        raise OptionError(f"{flag} {text}: not {noun}; {example}") from None
    try:
        check(spec, value)
    except SettingError:
        raise OptionError(f"{flag} {text}: must be {bounds(spec)}; {example}") from None
    return value


# getopt's messages, as twisted.python.usage passes them on, and what to say instead.
_GETOPT = [
    (re.compile(r"option (-\S+) not recognized"),
     "{0}: unknown option; 'twistd wsservice --help' lists the options"),
    (re.compile(r"option (-\S+) requires argument"),
     "{0}: needs a value; 'twistd wsservice --help' says what it takes"),
    (re.compile(r"option (-\S+) must not have an argument"),
     "{0}: takes no value; give it alone"),
    (re.compile(r"option (-\S+) not a unique prefix"),
     "{0}: ambiguous abbreviation; spell the option out"),
]


def one_line(error: BaseException) -> str:
    """A usage error as the one line ``twistd wsservice`` prints for it (no 'wsservice: ')."""
    text = " ".join(str(error).split())
    if isinstance(error, OptionError):
        return text
    for pattern, phrase in _GETOPT:
        match = pattern.fullmatch(text)
        if match:
            return phrase.format(match.group(1))
    return text


class Options(usage.Options):
    """Command-line options of ``twistd wsservice``."""

    synopsis = "[options]"
    longdesc = ("Serve the wsservice JSON session protocol over WebSocket on one or more "
                "Twisted endpoints, with /healthz and /metrics on the same listeners.")

    optParameters = [
        ["app-dir", None, ".",
         "Directory to import --handler and --auth modules from, before installed packages "
         "(like uvicorn's --app-dir)."],
        ["auth", None, None,
         "Authenticator: hmac:SECRET_FILE (HMAC-signed tokens with expiry, see "
         "python -m wsservice.tokens) or package.module:attribute providing "
         "IAuthenticator (default: everyone is anonymous)."],
        ["redis", None, None,
         "Make this process a node of a cluster: the Redis all nodes share, as "
         "redis://[user:password@]HOST:PORT/DB, rediss://... (TLS) or "
         "unix:///path/redis.sock?db=N (default: one process, everything in memory)."],
        ["node-id", None, None,
         "This node's name in the cluster (letters, digits, '-', '_'; default: random, "
         "printed at start). Only with --redis."],
    ] + [[_flag(spec)[2:], None, None, _help(spec)] for spec in OPTION_FIELDS.values()]

    optFlags = [[spec.metadata["flag"], None, spec.metadata["help"]]
                for spec in FLAG_FIELDS.values()]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["handler"] = []
        self["allowed-origin"] = []
        self["trusted-proxy"] = []
        self["allowed-host"] = []

    def opt_listen(self, description: str) -> None:
        """Listen on a Twisted server endpoint string (repeatable; default """ \
            """tcp:8080:interface=127.0.0.1). unix: sockets get mode 0600 unless mode= is given."""
        self["listen"].append(description)

    def opt_handler(self, name: str) -> None:
        """Load handlers from package.module:attribute, an object or a zero-argument """ \
            """factory (repeatable; default wsservice.demo:DemoApp, the demo app)."""
        self["handler"].append(name)

    def opt_allowed_origin(self, pattern: str) -> None:
        """Also allow browser Origins matching this pattern, e.g. https://*.example.com; """ \
            """'*' allows all (repeatable; default: only the Host the client connected to)."""
        self["allowed-origin"].append(pattern)

    def opt_trusted_proxy(self, address: str) -> None:
        """A proxy (address or CIDR network) whose X-Forwarded-For names the real client, """ \
            """so per-peer limits count that client (repeatable; default: none trusted)."""
        self["trusted-proxy"].append(address)

    def opt_allowed_host(self, pattern: str) -> None:
        """Also serve HTTP requests whose Host matches this name, e.g. chat.example.com """ \
            """or *.example.com; '*' allows all (repeatable; default: a listener on loopback """ \
            """serves only loopback names such as localhost, against DNS rebinding)."""
        self["allowed-host"].append(pattern)

    def parseArgs(self, *args: str) -> None:
        """Positional arguments are a mistake: every setting is an --option."""
        if args:
            raise OptionError(f"{' '.join(args)}: unexpected argument; options take the form "
                              "--name value ('twistd wsservice --help' lists them)")

    def parseOptions(self, options: list[str] | None = None) -> None:
        """Parse; under twistd, a mistake ends the process with one line, not the help."""
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            if self.parent is not None:  # run by twistd, whose report is the whole help
                _exit(one_line(e), EXIT_USAGE)
            raise OptionError(one_line(e)) from e

    def postOptions(self) -> None:
        """Fill defaults, check endpoint strings and every value, load the handlers."""
        from twisted.internet import reactor

        self["listen"] = self["listen"] or [DEFAULT_LISTEN]
        self["handler"] = self["handler"] or [DEFAULT_HANDLER]
        for description in self["listen"]:
            try:
                parse(reactor, description)
            except ListenError as e:
                raise OptionError(f"--listen {e}") from e
        values = {}
        for name, spec in _SETTING_OPTIONS.items():
            text = self[name]
            self[name] = spec.default if text is None else _coerce(spec, text)
            values[spec.name] = self[name]
        for spec in FLAG_FIELDS.values():
            flag = spec.metadata["flag"]
            values[spec.name] = not self[flag] if flag.startswith("no-") else bool(self[flag])
        try:
            parse_networks(self["trusted-proxy"])
        except ValueError as e:
            raise OptionError(f"--trusted-proxy: {e}") from e
        try:
            HostPolicy(self["allowed-host"])
        except ValueError as e:
            raise OptionError(f"--allowed-host: {e}") from e
        try:
            self["settings"] = Settings(allowed_origins=tuple(self["allowed-origin"]),
                                        allowed_hosts=tuple(self["allowed-host"]),
                                        trusted_proxies=tuple(self["trusted-proxy"]), **values)
        except SettingError as e:  # only path is left unchecked by _coerce
            spec = OPTION_FIELDS[e.name]
            raise OptionError(f"{_flag(spec)} {e.value}: {e.problem}; "
                              f"e.g. {_flag(spec)} {spec.default}") from e
        except ValueError as e:  # a malformed --allowed-origin pattern
            raise OptionError(f"--allowed-origin: {e}") from e
        if self["redis"] is not None:
            try:
                parse_redis_url(self["redis"])
            except ConfigurationError as e:
                raise OptionError(str(e)) from e
        if self["node-id"] is not None:
            if self["redis"] is None:
                raise OptionError("--node-id: only a node of a cluster has one; give --redis too")
            try:
                node_name(self["node-id"])
            except ConfigurationError as e:
                raise OptionError(str(e)) from e
        self._import_path()
        # Load handlers here, not in makeService: an error while parsing is reported as one
        # line, one from makeService as a traceback.
        handlers = registry.Registry()
        for name in self["handler"]:
            try:
                handlers.add(registry.load(name), name)
            except ConfigurationError as e:
                raise OptionError(f"--handler {self._explain(e)}") from e
        try:
            check_resources(handlers.resources, self["settings"].path)
        except ConfigurationError as e:
            raise OptionError(f"--handler {e}; choose another resource path") from e
        self["handlers"] = handlers
        try:
            self["authenticator"] = (registry.load_authenticator(self["auth"])
                                     if self["auth"] else None)
        except ConfigurationError as e:
            problem = self._explain(e)
            prefix = "" if problem.startswith(self["auth"]) else f"{self['auth']}: "
            raise OptionError(f"--auth {prefix}{problem}") from e

    def _import_path(self) -> None:
        """Put --app-dir first on sys.path, so handler modules next to the user are found."""
        app_dir = os.path.abspath(self["app-dir"])
        if not os.path.isdir(app_dir):
            raise OptionError(f"--app-dir {self['app-dir']}: no such directory; "
                              "give the directory that holds your handler modules")
        self["app-dir"] = app_dir
        if app_dir not in sys.path:
            sys.path.insert(0, app_dir)

    def _explain(self, e: ConfigurationError) -> str:
        """The error's one line, with where we looked when a module was not found."""
        text = " ".join(str(e).split())
        cause = e.__cause__
        if isinstance(cause, ModuleNotFoundError) and "no module named" in text:
            text += (f"; looked in {self['app-dir']} (--app-dir) and the installed packages: "
                     f"put {(cause.name or '?').split('.')[0]}.py there or install it")
        return text


def _exit(line: str, status: int) -> NoReturn:
    """End twistd with ``wsservice: line`` on the real stderr (twistd may have redirected
    sys.stderr into its log by now)."""
    stream = sys.__stderr__ or sys.stderr
    stream.write(f"wsservice: {line}\n")
    stream.flush()
    raise SystemExit(status)


class CommandLineService(WSService):
    """The service ``twistd wsservice`` runs: a listener that cannot listen ends the process
    with one line (and status 1) instead of twistd's traceback."""

    _log = logger()

    def __init__(self, sessions: SessionService, pidfile: str | None, foreground: bool,
                 log_to_stdout: bool) -> None:
        super().__init__(sessions)
        self._pidfile = pidfile
        self._foreground = foreground
        self._log_to_stdout = log_to_stdout

    def privilegedStartService(self) -> None:
        """Listen; on failure, close what did listen and exit with one line."""
        try:
            super().privilegedStartService()
        except ListenError as e:
            if not self._foreground:
                raise  # twistd reports it through its status pipe to the parent
            for listener in self.listeners:
                listener.abandon()
            if not self._log_to_stdout:  # the log file records why it did not start
                self._log.critical("not started: --listen {error}", error=str(e))
            if self._pidfile:
                try:
                    os.unlink(self._pidfile)
                except OSError:
                    pass
            _exit(f"--listen {e}", EXIT_START)


def makeService(options: Options) -> IService:
    """Build the service twistd runs from parsed options."""
    parent = options.parent if options.parent is not None else {}
    foreground = bool(parent.get("nodaemon", True))
    sessions, engine = sessionService(options["handlers"], options["settings"],
                                      options["authenticator"], redis=options["redis"],
                                      node_id=options["node-id"])
    service = CommandLineService(
        sessions, pidfile=parent.get("pidfile") or None, foreground=foreground,
        log_to_stdout=foreground and parent.get("logfile") in (None, "-"))
    if engine is not None:
        engine.setServiceParent(service)
    for description in options["listen"]:
        service.listen(description)
    return service
