"""`sftvsrl serve`: the REST API and the Gradio UI in one uvicorn process."""
from __future__ import annotations

import errno

from . import CliError


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
    import uvicorn

    from ..main import create_app
    from ..settings import Settings
    from ..store import StoreError

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
            from ..ui import create_app_with_ui

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
                            http="h11", h11_max_incomplete_event_size=settings.max_header_bytes,
                            timeout_graceful_shutdown=5)
    uvicorn.Server(config).run(sockets=[sock])
    return 0


def bind(host: str, port: int):
    """A listening socket on host:port, or a CliError that says what to do when it is taken."""
    import socket

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
