"""`sftvsrl serve`: the REST API and the Gradio UI in one uvicorn process, with the connection
limits of a public server (`guarded_protocol`): request heads over `max_header_bytes` refused (431),
a head that does not arrive within `header_timeout_s` closes the connection (so slow-header clients
cannot hold connections), idle keep-alive connections closed after `keep_alive_s`, and at most
`max_connections` open at once (uvicorn answers 503 beyond). Game tokens are kept out of the access
log (`app.main.redact_access_log`)."""
from __future__ import annotations

import errno
import socket
from typing import Any

from ..settings import Settings
from ..store import StoreError
from .errors import CliError


def register(sub) -> None:
    p = sub.add_parser("serve", help="start the web app: REST API under /api, docs at /docs")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--models", help="models.toml (default: $SFTVSRL_MODELS_CONFIG, ./models.toml, packaged default)")
    p.add_argument("--data-dir", help="data directory (default: $SFTVSRL_DATA_DIR or ./data)")
    p.add_argument("--database-url", help="episode store (default: $DATABASE_URL or sqlite:///DATA_DIR/playground.db)")
    p.add_argument("--root-path", default="",
                   help="external URL prefix when served behind a reverse proxy that strips it (e.g. /playground)")
    p.add_argument("--no-ui", action="store_true", help="serve the REST API only")
    p.add_argument("--public", action="store_true",
                   help="public-demo mode: evaluations and bulk export need $SFTVSRL_ADMIN_TOKEN, "
                        "no public gallery of games (see README)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(func=cmd_serve)


def cmd_serve(args) -> int:
    # lazy: uvicorn, fastapi (app.main) and gradio (app.ui) are heavy optional extras; no other command needs them
    import uvicorn

    from ..main import create_app, redact_access_log

    if not 0 < args.port < 65536:
        raise CliError(f"--port must be 1..65535, got {args.port}")
    sock = bind(args.host, args.port)  # first: a busy port fails at once, before "serving on"
    try:
        settings = Settings.from_env(data_dir=args.data_dir, database_url=args.database_url,
                                     models_config=args.models, public=True if args.public else None)
        if settings.warm_models is None:  # serve warms the default models unless told not to
            settings = settings.with_(warm_models=True)
        if args.root_path and not args.root_path.startswith("/"):
            raise CliError(f"--root-path must start with '/', got {args.root_path!r}")
        root_path = args.root_path.rstrip("/")
        if args.no_ui:
            app = create_app(settings)
        else:
            from ..ui import create_app_with_ui  # lazy: gradio, only when the UI is served

            app = create_app_with_ui(settings, root_path=root_path or None)
    except (StoreError, ValueError) as exc:
        raise CliError(str(exc)) from None
    if app.state.ctx.pool.error:
        print(f"sftvsrl: warning: {app.state.ctx.pool.error} (serving without models)")
    store = app.state.ctx.store.safe_url  # never print a database password
    serving = f"sftvsrl: serving on http://{args.host}:{args.port} (API docs at /docs, store {store})"
    pool = app.state.ctx.pool
    warm = [n for n in pool.defaults if pool.spec(n).backend == "local"] if settings.warm_models else []
    if warm:
        # "serving on" follows the warm-up, so the first Run after it is as fast as any later one;
        # the page already answers meanwhile (its model columns say "loading…").
        print(f"sftvsrl: starting on http://{args.host}:{args.port}; loading the default models "
              f"({', '.join(warm)})…", flush=True)
        app.state.on_ready = lambda: print(serving, flush=True)
    else:
        print(serving, flush=True)
    if settings.public and not settings.admin_token:
        print("sftvsrl: warning: --public without SFTVSRL_ADMIN_TOKEN: evaluations and bulk export are disabled")

    # h11 refuses request heads over this size (the app also answers 431 past max_header_bytes).
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level, root_path=root_path,
                            http=guarded_protocol(settings.header_timeout_s, settings.max_header_bytes),
                            h11_max_incomplete_event_size=settings.max_header_bytes,
                            timeout_keep_alive=settings.keep_alive_s,  # type: ignore[arg-type]  # a float works
                            limit_concurrency=settings.max_connections,
                            timeout_graceful_shutdown=5)
    redact_access_log()   # after uvicorn configured its loggers
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:   # uvicorn re-raises Ctrl-C after its clean shutdown: no traceback for it
        print("sftvsrl: stopped", flush=True)
    return 0


def guarded_protocol(header_timeout_s: float, max_header_bytes: int):
    """uvicorn's HTTP protocol (httptools, the C parser, when installed: several times less CPU per
    request than h11; else h11) with two guards of the request head: a connection whose head has
    not arrived `header_timeout_s` after it opened (or after the previous response) is closed — a
    client trickling header bytes would otherwise hold it for ever, every byte resetting the
    keep-alive timer — and a head over `max_header_bytes` is answered 431 (h11 enforces that itself
    through `h11_max_incomplete_event_size`)."""
    Base: Any   # one of uvicorn's two HTTP protocols, whose private hooks differ (see below)
    try:  # lazy: uvicorn is an optional extra; only `serve` builds this
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
        Base, parser = HttpToolsProtocol, "httptools"
    except ImportError:  # uvicorn without its [standard] extras
        from uvicorn.protocols.http.h11_impl import H11Protocol
        Base, parser = H11Protocol, "h11"

    class Guarded(Base):
        _head_timer = None
        _in_head = True        # httptools: between a message's start and its complete head
        _head_bytes = 0

        def _arm_head_timer(self) -> None:
            self._cancel_head_timer()
            if header_timeout_s > 0:
                self._head_timer = self.loop.call_later(header_timeout_s, self._head_timeout)

        def _cancel_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _waiting_for_head(self) -> bool:
            if parser == "httptools":
                return self._in_head
            return self.cycle is None or self.cycle.response_complete

        def _head_timeout(self) -> None:
            self._head_timer = None
            if self._waiting_for_head() and not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm_head_timer()

        def connection_lost(self, exc) -> None:
            self._cancel_head_timer()
            super().connection_lost(exc)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and (parser == "h11" or not self.pipeline):
                if parser == "httptools":
                    self._in_head, self._head_bytes = True, 0
                if self._waiting_for_head():
                    self._arm_head_timer()

        if parser == "httptools":
            def data_received(self, data: bytes) -> None:
                if self._in_head:
                    self._head_bytes += len(data)
                super().data_received(data)
                if self._in_head and self._head_bytes > max_header_bytes and not self.transport.is_closing():
                    self._refuse_head()

            def on_message_begin(self) -> None:
                self._in_head = True
                super().on_message_begin()

            def on_headers_complete(self) -> None:
                self._in_head, self._head_bytes = False, 0
                self._cancel_head_timer()
                super().on_headers_complete()

            def handle_websocket_upgrade(self) -> None:
                self._cancel_head_timer()   # the connection is the websocket protocol's from here
                super().handle_websocket_upgrade()

            def _refuse_head(self) -> None:
                body = ('{"detail": "request head too large (limit %d bytes)"}' % max_header_bytes).encode()
                self.transport.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json"
                                     b"\r\nx-content-type-options: nosniff\r\ncontent-length: %d\r\n"
                                     b"connection: close\r\n\r\n%s" % (len(body), body))
                self.transport.close()
        else:
            def handle_events(self) -> None:
                super().handle_events()
                if not self._waiting_for_head():
                    self._cancel_head_timer()

            def handle_websocket_upgrade(self, event) -> None:  # type: ignore[misc]  # h11's hook takes the event
                self._cancel_head_timer()
                super().handle_websocket_upgrade(event)

    Guarded.__name__ = Guarded.__qualname__ = f"Guarded{Base.__name__}"
    return Guarded


def bind(host: str, port: int):
    """A listening socket on host:port, or a CliError that says what to do when it is taken."""
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                      flags=socket.AI_PASSIVE)[0]
        return socket.create_server(address, family=family)
    except socket.gaierror as exc:
        raise CliError(f"--host {host!r} is not an address of this machine ({exc.strerror})") from None
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise CliError(f"port {port} on {host} is already in use (another `sftvsrl serve`?): stop that "
                           f"server, or pick a free port with --port (`make run PORT=7861`)") from None
        raise CliError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
