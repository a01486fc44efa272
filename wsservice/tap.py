"""twistd glue: ``Options`` for ``twistd wsservice`` and ``makeService(options)``.

Every mistake on the command line ends twistd with one line on stderr,
``wsservice: --OPTION VALUE: what is wrong; what to do``, and exit status 2 (a listener
that cannot listen: status 1); ``--help`` prints the whole help. The numeric options and
their help come from the ``Settings`` fields (``config.py``), the one table of settings.
"""

from __future__ import annotations

import math
import os
import re
import sys
from typing import Any, NoReturn, cast

from twisted.application.service import IService, MultiService
from twisted.internet.defer import Deferred, DeferredList
from twisted.logger import ILogObserver
from twisted.python import usage
from twisted.python.failure import Failure

from . import configfile, registry
from .apikeys import APIKeys
from .app import DEFAULT_LISTEN, WSService, sessionService
from .config import FLAG_FIELDS, OPTION_FIELDS, SettingError, Settings, bounds, check, kind
from .endpoints import ListenError, parse
from .errors import ConfigurationError
from .hosts import HostPolicy
from .jsonlog import JSONLogObserver, twistdLogFile
from .listener import ListenerService
from .log import logger
from .peers import parse_networks
from .redisurl import node_name, parse_redis_url
from .service import SessionService
from .web import check_resources, serves_page
from .workers import (
    MAX_NODE_BASE,
    MAX_WORKERS,
    InheritedEndpoint,
    Supervisor,
    WorkerLink,
    WorkersService,
    flushedExit,
    parentListener,
)

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
# the options a config file gives as TOML numbers
_NUMBERS = frozenset({name for name, spec in _SETTING_OPTIONS.items() if kind(spec) is not str}
                     | {"jwt-leeway", "workers"})


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
         "python -m wsservice.tokens), jwt:KEYFILE (JWTs: an HS256 secret or an RS256/ES256 "
         "PEM public key; see --jwt-*) or package.module:attribute providing "
         "IAuthenticator (default: everyone is anonymous)."],
        ["redis", None, None,
         "Make this process a node of a cluster: the Redis all nodes share, as "
         "redis://[user:password@]HOST:PORT/DB, rediss://... (TLS) or "
         "unix:///path/redis.sock?db=N (default: one process, everything in memory)."],
        ["node-id", None, None,
         "This node's name in the cluster (letters, digits, '-', '_'; default: random, "
         "printed at start). Only with --redis."],
        ["workers", None, "1",
         "Run N worker processes, every one a node of the cluster on --redis (needed from "
         "2 on) named NODE-w1, NODE-w2, ..., all accepting on the same listening sockets, "
         "which this process binds; it restarts a worker that dies and drains them all on "
         "SIGTERM. One per core is the usual choice (1: this process serves alone)."],
        ["adopt-fds", None, None,
         "Internal: the listening sockets a --workers worker inherits from its parent, as "
         "descriptor numbers (the parent sets it; not for use by hand)."],
        ["config", None, None,
         "Read options from this TOML file (keys are these options' names); options on the "
         "command line override it."],
        ["api-key-file", None, None,
         "Serve the HTTP API (/api/publish, /api/push, /api/presence) to holders of a "
         "bearer key listed in this file, one key a line (mode 0600; default: no HTTP API)."],
        ["jwt-audience", None, None,
         "With --auth jwt:KEYFILE: the 'aud' a token must name (default: not checked)."],
        ["jwt-issuer", None, None,
         "With --auth jwt:KEYFILE: the 'iss' a token must name (default: not checked)."],
        ["jwt-leeway", None, "30",
         "With --auth jwt:KEYFILE: seconds of clock skew allowed on exp, nbf and iat."],
        ["log-format", None, "text",
         "text (twistd's log lines) or json (one JSON object a line: time, level, "
         "namespace, message, fields)."],
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
        self["listen-ndjson"] = []

    def opt_listen(self, description: str) -> None:
        """Listen on a Twisted server endpoint string (repeatable; default """ \
            """tcp:8080:interface=127.0.0.1). unix: sockets get mode 0600 unless mode= is given."""
        self["listen"].append(description)

    def opt_listen_ndjson(self, description: str) -> None:
        """Also serve the protocol as newline-delimited JSON (no WebSocket, no HTTP) on """ \
            """this endpoint string, for local tools: socat - UNIX-CONNECT:PATH (repeatable)."""
        self["listen-ndjson"].append(description)

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
        # what the command line gives, so that --config's file fills in only the rest
        self._given = configfile.given(self, sys.argv[1:] if options is None else options)
        # --workers runs these same options in its workers (with a few more: _worker_argv)
        self.argv = list(sys.argv[1:] if options is None else options)
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            # a mistake in a value the file gave names the key and the file
            line = configfile.blame(one_line(e), self["config"] or "", self._from_file,
                                    _NUMBERS)
            if self.parent is not None:  # run by twistd, whose report is the whole help
                _exit(line, EXIT_USAGE)
            raise OptionError(line) from e

    _given: set[str] = set()
    _from_file: frozenset[str] = frozenset()
    argv: list[str] = []

    def _read_config(self) -> None:
        """Give the options the command line does not give the values of --config's file
        (a repeatable option given on the command line replaces the file's list)."""
        if self["config"] is None:
            return
        try:
            values = configfile.load(self["config"], configfile.schema(self, _NUMBERS))
        except configfile.ConfigFileError as e:
            raise OptionError(str(e)) from e
        for name, value in values.items():
            if name not in self._given:
                self[name] = int(value) if isinstance(value, bool) else value  # flags: 0/1
        self._from_file = frozenset(values) - self._given

    def _jwt_options(self) -> dict[str, Any]:
        """--jwt-audience, --jwt-issuer and --jwt-leeway, checked: for --auth jwt: only."""
        text = self["jwt-leeway"]
        example = "e.g. --jwt-leeway 30 (the default)"
        try:
            leeway = float(text)
        except ValueError:
            raise OptionError(f"--jwt-leeway {text}: not a number; {example}") from None
        if not math.isfinite(leeway) or leeway < 0:
            raise OptionError(f"--jwt-leeway {text}: must be a finite number >= 0; {example}")
        self["jwt-leeway"] = leeway
        for name in ("jwt-audience", "jwt-issuer"):
            if self[name] == "":
                raise OptionError(f"--{name}: must not be empty; give the value your tokens "
                                  "name, or leave the option out")
        if not (self["auth"] or "").startswith("jwt:"):
            # a check one asked for must not silently not happen (the leeway only relaxes)
            for name in ("jwt-audience", "jwt-issuer"):
                if self[name] is not None:
                    raise OptionError(f"--{name} {self[name]}: only JWTs are checked for it; "
                                      "give --auth jwt:KEYFILE too, or leave it out")
        return {"audience": self["jwt-audience"], "issuer": self["jwt-issuer"],
                "leeway": leeway}

    def postOptions(self) -> None:
        """Fill defaults, check endpoint strings and every value, load the handlers."""
        from twisted.internet import reactor

        self._read_config()
        self["listen"] = self["listen"] or [DEFAULT_LISTEN]
        self["handler"] = self["handler"] or [DEFAULT_HANDLER]
        self._check_log_format()
        self["cwd"] = os.getcwd()  # where --workers starts its workers (twistd may chdir)
        self["adopt-fds"] = self._adopted_fds()
        # a worker's sockets come from its parent, which checked these strings
        for description in self["listen"] if self["adopt-fds"] is None else ():
            try:
                parse(reactor, description)
            except ListenError as e:
                raise OptionError(f"--listen {e}") from e
        for description in self["listen-ndjson"] if self["adopt-fds"] is None else ():
            try:
                parse(reactor, description)
            except ListenError as e:
                raise OptionError(f"--listen-ndjson {e}") from e
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
        self["workers"] = self._workers()
        self._import_path()
        # Load handlers here, not in makeService: an error while parsing is reported as one
        # line, one from makeService as a traceback.
        handlers = registry.Registry()
        self["loaded"] = []  # (spec, handler): the start-up summary names them
        for name in self["handler"]:
            try:
                handler = registry.load(name)
                handlers.add(handler, name)
            except ConfigurationError as e:
                raise OptionError(f"--handler {self._explain(e)}") from e
            self["loaded"].append((name, handler))
        self["api-keys"] = self._api_keys()
        try:
            check_resources(handlers.resources, self["settings"].path,
                            api=self["api-keys"] is not None)
        except ConfigurationError as e:
            raise OptionError(f"--handler {e}; choose another resource path") from e
        self["handlers"] = handlers
        jwt = self._jwt_options()
        try:
            self["authenticator"] = (registry.load_authenticator(self["auth"], **jwt)
                                     if self["auth"] else None)
        except ConfigurationError as e:
            problem = self._explain(e)
            prefix = "" if problem.startswith(self["auth"]) else f"{self['auth']}: "
            raise OptionError(f"--auth {prefix}{problem}") from e

    def _api_keys(self) -> APIKeys | None:
        """The keys of --api-key-file, the file checked now (None: no HTTP API)."""
        path = self["api-key-file"]
        if path is None:
            return None
        ws_path = self["settings"].path
        if ws_path.strip("/").split("/")[0] == "api":
            raise OptionError(f"--path {ws_path}: the HTTP API (--api-key-file) is served at "
                              "/api; choose another --path")
        try:
            return APIKeys.fromFile(path)
        except ConfigurationError as e:
            raise OptionError(f"--api-key-file {path}: {e}") from e

    def _workers(self) -> int:
        """--workers, checked: 1 to MAX_WORKERS, and from 2 on only with --redis (and a
        --node-id short enough to name the workers after)."""
        text = str(self["workers"])
        example = f"e.g. --workers {os.cpu_count() or 2} (one per core of this machine)"
        try:
            count = int(text)
        except ValueError:
            raise OptionError(f"--workers {text}: not a whole number; {example}") from None
        if not 1 <= count <= MAX_WORKERS:
            raise OptionError(f"--workers {text}: must be a whole number from 1 to "
                              f"{MAX_WORKERS}; {example}")
        if count > 1 and self["redis"] is None:
            raise OptionError(f"--workers {text}: workers share sessions through Redis; "
                              "give --redis URL too")
        node = self["node-id"]
        if count > 1 and node is not None and len(node) > MAX_NODE_BASE:
            raise OptionError(f"--node-id {node}: at most {MAX_NODE_BASE} characters with "
                              f"--workers (the workers are {node}-w1, {node}-w2, ...)")
        return count

    def _adopted_fds(self) -> list[int] | None:
        """--adopt-fds (internal: set by a --workers parent for its workers): one
        descriptor per --listen, then per --listen-ndjson."""
        text = self["adopt-fds"]
        if text is None:
            return None
        count = len(self["listen"]) + len(self["listen-ndjson"])
        try:
            fds = [int(part) for part in text.split(",")]
        except ValueError:
            fds = []
        if len(fds) != count or any(fd < 0 for fd in fds):
            raise OptionError(f"--adopt-fds {text}: internal (a --workers parent gives its "
                              f"workers their listening sockets): {count} descriptor numbers "
                              "expected, comma-separated")
        return fds

    def _check_log_format(self) -> None:
        """--log-format is text or json; json takes the place of twistd's own log observer,
        so twistd's --syslog and --logger (which choose theirs) cannot go with it."""
        value = self["log-format"]
        if value not in ("text", "json"):
            raise OptionError(f"--log-format {value}: must be text or json; "
                              "e.g. --log-format json")
        parent: Any = self.parent if self.parent is not None else {}
        if value == "json":
            for option in ("syslog", "logger"):
                if parent.get(option):
                    raise OptionError(f"--log-format json: twistd's --{option} chooses the "
                                      "log's observer itself; give one of them")

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


class _CommandLine(MultiService):
    """What the service ``twistd wsservice`` runs does beyond its kind: a listener that
    cannot listen ends the process with one line (and status 1) instead of twistd's
    traceback; with --log-format json, its observer becomes the application's."""

    _log = logger()
    # --log-format json: the observer twistd's application logs to (setServiceParent)
    log_observer: ILogObserver | None = None
    listeners: list[ListenerService]
    _pidfile: str | None = None
    _foreground = True
    _log_to_stdout = True

    def setServiceParent(self, parent: Any) -> None:
        """Join twistd's application; with a ``log_observer``, make it the application's
        ILogObserver, which twistd's AppLogger then uses in place of its text observer."""
        super().setServiceParent(parent)
        if self.log_observer is not None and hasattr(parent, "setComponent"):
            parent.setComponent(ILogObserver, self.log_observer)

    def _runBy(self, pidfile: str | None, foreground: bool, log_to_stdout: bool) -> None:
        """How twistd runs it: its pidfile, in the foreground or not, logging to stdout."""
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
            option = getattr(e, "option", "listen")  # NDJSONListenError: listen-ndjson
            if not self._log_to_stdout:  # the log file records why it did not start
                self._log.critical("not started: --{option} {error}", option=option,
                                   error=str(e))
            self._removePidfile()
            _exit(f"--{option} {e}", EXIT_START)

    def _removePidfile(self) -> None:
        if self._pidfile:
            try:
                os.unlink(self._pidfile)
            except OSError:
                pass


class CommandLineService(_CommandLine, WSService):
    """The service ``twistd wsservice`` runs (one process, or one worker of --workers)."""

    def __init__(self, sessions: SessionService, pidfile: str | None, foreground: bool,
                 log_to_stdout: bool, api_keys: APIKeys | None = None) -> None:
        super().__init__(sessions, api_keys=api_keys)
        self._runBy(pidfile, foreground, log_to_stdout)


class CommandLineWorkers(_CommandLine, WorkersService):
    """The service ``twistd wsservice --workers N`` runs: the workers' parent. A worker
    that cannot start at all (it ends before it ever served) stops it with status 1."""

    def _failure(self, failure: Failure) -> None:
        from twisted.internet import reactor
        self._removePidfile()
        # twistd's exit status is 0 once its reactor has stopped: leave with 1 after that
        reactor.addSystemEventTrigger("after", "shutdown", flushedExit, EXIT_START)
        reactor.stop()


def _twistd() -> list[str]:
    """How to run twistd with this interpreter: the script this process runs, if twistd's,
    else twistd's entry point."""
    script = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if os.path.basename(script).startswith("twistd") and os.path.isfile(script):
        return [sys.executable, script]
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


def _worker_argv(options: Options, node: str, fds: list[int]) -> list[str]:
    """A --workers worker's command line: this process's wsservice options, then the ones
    making it a worker (the later of two values of an option wins; the file's too)."""
    return [*_twistd(), "-n", "--pidfile=", "wsservice", *options.argv,
            "--workers", "1", "--node-id", node, "--adopt-fds", ",".join(map(str, fds)),
            "--app-dir", options["app-dir"]]


def _workers(options: Options, parent: Any, foreground: bool,
             log_to_stdout: bool) -> CommandLineWorkers:
    """The --workers parent: every listener bound here, the workers started from here."""
    from twisted.internet import reactor
    settings = options["settings"]
    page = serves_page(options["handlers"].resources)
    listeners = ([parentListener(d, settings.path, page) for d in options["listen"]]
                 + [parentListener(d, ndjson=True) for d in options["listen-ndjson"]])
    supervisor = Supervisor(
        options["workers"], node_name(options["node-id"]),
        lambda node, fds: _worker_argv(options, node, fds),
        lambda: [cast(Any, listener.port).fileno() for listener in listeners], reactor,
        cwd=options["cwd"], drain_timeout=settings.drain_timeout,
        # the workers write to this process's stdout, unless it logs elsewhere: then their
        # lines come through it
        relog=not log_to_stdout or bool(parent.get("syslog")))
    service = CommandLineWorkers(listeners, supervisor, str(parse_redis_url(options["redis"])))
    service._runBy(parent.get("pidfile") or None, foreground, log_to_stdout)
    if options["log-format"] == "json":
        service.log_observer = JSONLogObserver(
            twistdLogFile(parent) if options.parent is not None else sys.stdout)
    return service


def _serving(service: WSService, engine: Any) -> Deferred[Any]:
    """Fires once a worker's listeners listen and its node is in step with Redis."""
    waiting = [listener.whenListening for listener in service.listeners]
    if engine is not None:
        waiting.append(engine.whenUp())
    return DeferredList(waiting, fireOnOneErrback=True, consumeErrors=True)


def makeService(options: Options) -> IService:
    """Build the service twistd runs from parsed options."""
    parent = options.parent if options.parent is not None else {}
    foreground = bool(parent.get("nodaemon", True))
    if options["workers"] > 1:
        return _workers(options, parent, foreground,
                        foreground and parent.get("logfile") in (None, "-"))
    sessions, engine = sessionService(options["handlers"], options["settings"],
                                      options["authenticator"], redis=options["redis"],
                                      node_id=options["node-id"])
    service = CommandLineService(
        sessions, pidfile=parent.get("pidfile") or None, foreground=foreground,
        log_to_stdout=foreground and parent.get("logfile") in (None, "-"),
        api_keys=options.get("api-keys"))
    service.handlers = options["loaded"]
    if options["log-format"] == "json":
        # written where twistd would write its text log (sys.stdout is still the real one)
        service.log_observer = JSONLogObserver(
            twistdLogFile(parent) if options.parent is not None else sys.stdout)
    if engine is not None:
        engine.setServiceParent(service)
    # a --workers worker adopts the sockets its parent bound (workers.py), in this order
    fds = iter(options["adopt-fds"] or ())
    from twisted.internet import reactor
    for description in options["listen"]:
        fd = next(fds, None)
        service.listen(description, None if fd is None else
                       InheritedEndpoint(reactor, description, fd))
    for description in options["listen-ndjson"]:
        fd = next(fds, None)
        service.listenNDJSON(description, None if fd is None else
                             InheritedEndpoint(reactor, description, fd))
    if options["adopt-fds"] is not None:
        WorkerLink(lambda: _serving(service, engine)).setServiceParent(service)
    return service
