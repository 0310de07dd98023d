"""Who may do what, without accounts: the rules of a public demo in one place.

- **Capabilities.** Starting a game returns a token (`<group id>.<HMAC of it>`, unguessable, kept
  by the browser or client) that is required to play, cancel or read that game: sent as the
  `X-Game-Token` header or, for `EventSource`, the `token` query parameter. Tokens are verified
  with the server secret (`SFTVSRL_SECRET`, else a random one kept in `DATA_DIR/.secret`), so
  nothing is stored per game and tokens outlive a restart.
- **Listings.** Without the public gallery, listings show the caller's own games (the tokens it
  presents, several comma-separated) and the evaluation runs; with it (`SFTVSRL_GALLERY=1`, the
  localhost default) every game is listed and readable — never playable without its token.
- **Operator.** In `--public` mode (`SFTVSRL_PUBLIC=1`) launching or cancelling evaluations and bulk
  export need the operator token (`SFTVSRL_ADMIN_TOKEN`, as `Authorization: Bearer …` or
  `X-Admin-Token`); the operator token also opens every game. The localhost default needs none.
- **Fair use.** Per-client (remote address) and global caps on live games; a refusal is a 429 with
  `Retry-After`.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from fastapi import HTTPException, Request

MAX_TOKENS_PER_REQUEST = 64


def load_secret(data_dir: Path, env: dict | None = None) -> bytes:
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

    def presented_groups(self, request: Request) -> set[str]:
        """Groups opened by the tokens this request presents (header and/or `token` query)."""
        raw = ",".join(filter(None, [request.headers.get("x-game-token", ""),
                                     request.query_params.get("token", "")]))
        tokens = [t for t in raw.split(",") if t.strip()][:MAX_TOKENS_PER_REQUEST]
        return {g for g in (self.group_of_token(t) for t in tokens) if g}

    # ----------------------------------------------------------------------- the operator
    def is_admin(self, request: Request) -> bool:
        if not self.admin_token:
            return False
        given = request.headers.get("x-admin-token", "")
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            given = given or auth[7:].strip()
        return bool(given) and hmac.compare_digest(given.encode(), self.admin_token.encode())

    def require_operator(self, request: Request, what: str) -> None:
        """In public mode only the operator may `what`; on localhost anyone may."""
        if self.public and not self.is_admin(request):
            how = ("the operator token (Authorization: Bearer $SFTVSRL_ADMIN_TOKEN)" if self.admin_token
                   else "an operator token, and none is configured (set SFTVSRL_ADMIN_TOKEN)")
            raise HTTPException(status_code=403, detail=f"on this public server, {what} needs {how}")

    # -------------------------------------------------------------------------- games
    def may_play(self, request: Request, group_id: str) -> bool:
        return group_id in self.presented_groups(request) or self.is_admin(request)

    def require_play(self, request: Request, group_id: str) -> None:
        if not self.may_play(request, group_id):
            raise HTTPException(status_code=403, detail="this game needs its token (X-Game-Token header, "
                                                        "as returned when the game was started)")

    def may_read(self, request: Request, episode: dict) -> bool:
        """Stored or live episodes: evaluation episodes and (with the gallery) every game are
        readable; otherwise only with the game's token."""
        return (self.gallery or episode.get("eval_run_id") is not None
                or self.may_play(request, episode["group_id"]))

    def listing_scope(self, request: Request) -> set[str] | None:
        """None: list everything (gallery or operator); else the caller's own group ids (the
        listing also shows evaluation episodes)."""
        if self.gallery or self.is_admin(request):
            return None
        return self.presented_groups(request)

    # ----------------------------------------------------------------------- fair use
    @staticmethod
    def client_key(request: Request) -> str:
        """The remote address (behind a proxy, run uvicorn with --proxy-headers)."""
        return request.client.host if request.client else "unknown"

    def capacity_problem(self, running: int, running_for_client: int) -> str | None:
        """Why another live game is refused now (the service layer answers 429), or None."""
        if running_for_client >= self.max_games_per_client:
            return (f"you have {running_for_client} games running (limit {self.max_games_per_client}); "
                    "finish or cancel one first")
        if running >= self.max_live_groups:
            return f"{running} games are running on this server; try again when one ends"
        return None
