"""Shared UI helpers: HTML escaping, badges, image data URIs, deep-link parameters, and who a page
is (`visitor`): the same `app.access.Caller` an API client is — the request's address, the game
tokens the page keeps in the browser (`games_state`, local storage: a visitor's capabilities, as an
API client keeps the tokens it was given) and, where a tab asks for it, the operator token."""
from __future__ import annotations

import base64
import hashlib
import hmac
import html
from functools import lru_cache

import gradio as gr
from PIL import Image

from game.gp.cards import Card
from game.gp.render import card_image, encode

from ..access import Caller

OUTCOME_STYLE = {
    "correct": ("ok", "Correct"),
    "partial": ("warn", "Partial"),
    "wrong_value": ("bad", "Wrong value"),
    "float_rounding": ("warn", "Float rounding"),
    "wrong_cards": ("bad", "Wrong cards read"),
    "wrong_numbers": ("bad", "Wrong numbers"),
    "illegal_formula": ("bad", "Illegal formula"),
    "aggregated_error": ("bad", "Several errors"),
    "step_limit": ("bad", "Step limit"),
    "wrong_action": ("bad", "Wrong move"),
    "wrong_observation": ("bad", "Misread the view"),
    "budget_exceeded": ("bad", "Out of tries"),
}


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def badge(kind: str, text: str) -> str:
    """A coloured pill: kind is ok / warn / bad / info."""
    return f'<span class="sv-badge sv-{esc(kind)}">{esc(text)}</span>'


def outcome_label(outcome: str) -> str:
    """A person-readable label for an outcome class (`wrong_action` → 'Wrong move')."""
    return OUTCOME_STYLE.get(outcome, ("info", str(outcome).replace("_", " ").capitalize()))[1]


def outcome_badge(outcome: str) -> str:
    kind, text = OUTCOME_STYLE.get(outcome, ("bad", outcome_label(outcome)))
    return badge(kind, text)


def image_uri(image: Image.Image, fmt: str = "png") -> str:
    mime = "image/png" if fmt == "png" else "image/jpeg"
    return f"data:{mime};base64," + base64.b64encode(encode(image, fmt)).decode("ascii")


@lru_cache(maxsize=128)
def card_uri(card: Card, height: int = 220) -> str:
    width = int(height * 750 / 1050)
    return image_uri(card_image(card).resize((width, height), Image.Resampling.LANCZOS))


def query_params(request) -> dict[str, str]:
    """Query parameters of the page request (empty when there is none, e.g. in tests)."""
    if request is None:
        return {}
    try:
        return {k: v for k, v in dict(request.query_params).items() if isinstance(v, str)}
    except Exception:  # noqa: BLE001 - a missing or odd request means "no deep link"
        return {}


def error_html(message: str) -> str:
    return f'<div class="sv-error" role="alert">{esc(message)}</div>'


def note_html(message: str) -> str:
    """A neutral notice (not an error), e.g. why Flip rule dealt another hand."""
    return f'<div class="sv-note" role="status">{esc(message)}</div>' if message else ""


# Write a tab's link (its controls) into the address bar. Every tab remembers its latest link in
# `window.__svLinks`, but only the tab the URL names writes, so a tab's load or a late update never
# overwrites another tab's link; clicking a tab writes that tab's link (see SHORTCUTS_JS).
URL_UPDATE_JS = """
(params) => {
  try {
    if (params && params.tab) (window.__svLinks = window.__svLinks || {})[params.tab] = params;
    if (window.svWriteLink && params && params.tab === window.svTabInUrl()) window.svWriteLink(params);
  } catch (e) { /* deep links are a convenience; never break the page */ }
  return [];
}
"""


def serving(pool, task: str) -> list[str]:
    """The configured models that serve `task` (the model pool's per-task availability)."""
    out = []
    for name in pool.names:
        try:
            if pool.spec(name).supports(task):
                out.append(name)
        except Exception:  # noqa: BLE001 - a broken entry serves nothing
            continue
    return out


def unserved_text(task: str) -> str:
    """Why a task's option is off, and what to run to turn it on."""
    return (f"No configured model serves {task}: serve vision checkpoints with "
            "`sftvsrl vllm up --sft PATH --rl PATH`, then restart `sftvsrl serve` with the models.toml it writes.")


# ------------------------------------------------------------------------------ who is asking
MAX_KEPT_TOKENS = 64   # game tokens a page keeps (the newest); `app.access` reads at most this many


def games_state(ctx) -> gr.BrowserState:
    """The page's game tokens, kept in the browser's local storage (so a reload or a deep link in
    another tab of the same browser still opens the visitor's games). Its storage secret derives
    from the server secret, so the stored tokens outlive a restart."""
    secret = hmac.new(ctx.access.secret, b"sftvsrl-ui-games", hashlib.sha256).hexdigest()[:24] \
        if ctx.access is not None else None
    return gr.BrowserState([], storage_key="sftvsrl-games", secret=secret)


def visitor(ctx, request, tokens=None, operator_token: str | None = None):
    """The `Caller` a page event comes from: its address, the game tokens the page presents (from
    `games_state`), and the operator token when the tab asked for one."""
    client = getattr(getattr(request, "client", None), "host", None) or "unknown"
    if ctx.access is None:
        return Caller(client=client, operator=True)
    kept = tokens if isinstance(tokens, list) else []
    return ctx.access.identify(client, kept, operator_token)


def kept_tokens(tokens, new: str) -> list[str]:
    """The page's tokens with `new` added (newest last, at most `MAX_KEPT_TOKENS`)."""
    kept = [t for t in (tokens if isinstance(tokens, list) else []) if isinstance(t, str) and t != new]
    return (kept + [new])[-MAX_KEPT_TOKENS:]
