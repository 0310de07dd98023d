"""Who may do what, without accounts: the rules of a public demo in one place. The service layer
(`app.services`) applies them to a `Caller` that the API, the UI and the CLI all build the same way.

- **Callers.** A `Caller` is the client's address (fair-use key), the games it holds genuine tokens
  for, and whether it presented the operator token. The API builds one from a request
  (`caller_of`: `X-Game-Token` header and/or `token` query, `Authorization: Bearer …` or
  `X-Admin-Token`); the UI from the page's request and the game tokens the page keeps (a browser's
  local storage: the same capabilities an API client holds, `identify`); the CLI is the operator
  (`CLI`).
- **Capabilities.** Starting a game returns a token (`<group id>.<HMAC of it>`, unguessable, kept
  by the browser or client) that is required to play, cancel or read that game. Tokens are verified
  with the server secret (`SFTVSRL_SECRET`, else a random one kept in `DATA_DIR/.secret`), so
  nothing is stored per game and tokens outlive a restart.
- **Listings.** Without the public gallery, listings show the caller's own games (the tokens it
  presents) and the evaluation runs; with it (`SFTVSRL_GALLERY=1`, the localhost default) every
  game is listed and readable — never playable without its token.
- **Operator.** In `--public` mode (`SFTVSRL_PUBLIC=1`) launching or cancelling evaluations and bulk
  export need the operator token (`SFTVSRL_ADMIN_TOKEN`); the operator token also opens every game.
  The localhost default needs none.
- **Fair use.** Per-client (remote address) and global caps on live games; a refusal is a 429 with
  `Retry-After`.
- **What the public sees.** Without the operator token a public server shows no absolute server
  paths (`public_text`).
"""
from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

MAX_TOKENS_PER_REQUEST = 64


def load_secret(data_dir: Path, env: Mapping[str, str] | None = None) -> bytes:
    """`SFTVSRL_SECRET`, else the random secret in `data_dir/.secret` (created 0600 on first use)."""
    env = os.environ if env is None else env
    if env.get("SFTVSRL_SECRET"):
        return env["SFTVSRL_SECRET"].encode()
    path = Path(data_dir) / ".secret"
    try:
        return bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError):
        pass
    secret = secrets.token_bytes(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret.hex())
    return secret


@dataclass(frozen=True)
class Caller:
    """Who is asking: `client` (the remote address: fair-use caps and the CPU pool's share),
    `groups` (the games whose genuine tokens it presented), `operator` (it presented the operator
    token, or it is the CLI)."""

    client: str = ""
    groups: frozenset[str] = frozenset()
    operator: bool = False


CLI = Caller(client="cli", operator=True)   # the CLI is run by the operator


def tokens_in(raw: str | Iterable[str] | None) -> list[str]:
    """Token strings from a comma-separated string or a list (bounded: `MAX_TOKENS_PER_REQUEST`)."""
    if raw is None:
        return []
    items = raw.split(",") if isinstance(raw, str) else [t for t in raw if isinstance(t, str)]
    return [t.strip()[:200] for t in items if t.strip()][:MAX_TOKENS_PER_REQUEST]


@dataclass
class Access:
    secret: bytes
    public: bool = False
    gallery: bool = True
    admin_token: str | None = None
    max_live_groups: int = 64
    max_games_per_client: int = 8

    # ------------------------------------------------------------------ game capabilities
    def _mac(self, group_id: str) -> str:
        return hmac.new(self.secret, group_id.encode(), hashlib.sha256).hexdigest()[:32]

    def game_token(self, group_id: str) -> str:
        return f"{group_id}.{self._mac(group_id)}"

    def group_of_token(self, token: str) -> str | None:
        """The group a well-formed, genuine token opens, else None."""
        group_id, _, mac = token.strip().partition(".")
        if not group_id or len(mac) != 32 or len(group_id) > 64:
            return None
        return group_id if hmac.compare_digest(mac, self._mac(group_id)) else None

    # ------------------------------------------------------------------------- callers
    def is_operator_token(self, given: str | None) -> bool:
        if not self.admin_token or not given:
            return False
        return hmac.compare_digest(given.strip().encode(), self.admin_token.encode())

    def identify(self, client: str, tokens: Iterable[str] = (), operator_token: str | None = None) -> Caller:
        """A caller from its address, the game tokens it presents and the operator token it gave."""
        groups = {g for g in (self.group_of_token(t) for t in tokens_in(list(tokens))) if g}
        return Caller(client=client or "unknown", groups=frozenset(groups),
                      operator=self.is_operator_token(operator_token))

    def caller_of(self, request) -> Caller:
        """An HTTP request's caller (a Starlette request, as FastAPI and Gradio give them): the
        remote address (behind a proxy, run uvicorn with --proxy-headers), `X-Game-Token` and the
        `token` query parameter, `Authorization: Bearer …` or `X-Admin-Token`."""
        headers = request.headers
        tokens = tokens_in(",".join(filter(None, [headers.get("x-game-token", ""),
                                                  request.query_params.get("token", "")])))
        given = headers.get("x-admin-token", "")
        auth = headers.get("authorization", "")
        if not given and auth.lower().startswith("bearer "):
            given = auth[7:]
        client = request.client.host if request.client else "unknown"
        return self.identify(client, tokens, given)

    # ------------------------------------------------------------------------ the rules
    def operator_problem(self, caller: Caller, what: str) -> str | None:
        """Why `caller` may not `what` (an operator-only action on a public server), or None."""
        if not self.public or caller.operator:
            return None
        how = ("the operator token (Authorization: Bearer $SFTVSRL_ADMIN_TOKEN)" if self.admin_token
               else "an operator token, and none is configured (set SFTVSRL_ADMIN_TOKEN)")
        return f"on this public server, {what} needs {how}"

    def may_play(self, caller: Caller, group_id: str) -> bool:
        return group_id in caller.groups or caller.operator

    def may_read(self, caller: Caller, episode: dict) -> bool:
        """Stored or live episodes: evaluation episodes and (with the gallery) every game are
        readable; otherwise only with the game's token."""
        return (self.gallery or episode.get("eval_run_id") is not None
                or self.may_play(caller, episode["group_id"]))

    def listing_scope(self, caller: Caller) -> set[str] | None:
        """None: list everything (gallery or operator); else the caller's own group ids (the
        listing also shows evaluation episodes)."""
        if self.gallery or caller.operator:
            return None
        return set(caller.groups)

    def capacity_problem(self, running: int, running_for_client: int) -> str | None:
        """Why another live game is refused now (the service layer answers 429), or None."""
        if running_for_client >= self.max_games_per_client:
            return (f"you have {running_for_client} games running (limit {self.max_games_per_client}); "
                    "finish or cancel one first")
        if running >= self.max_live_groups:
            return f"{running} games are running on this server; try again when one ends"
        return None

    def public_text(self, caller: Caller, text: str) -> str:
        """`text` as `caller` may see it: in public mode, without the operator token, every absolute
        server path in it is cut to its last component (no absolute paths leave a public server;
        URLs are left alone)."""
        if not self.public or caller.operator or not text:
            return text
        return _ABSOLUTE_PATH.sub(lambda m: m.group(1) + (Path(m.group(2)).name or "…"), text)


_ABSOLUTE_PATH = re.compile(r"(^|[\s,:=(\[])((?:/(?!/)|~/)[^\s,;)\]]*)")
