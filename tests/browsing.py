"""What the browser tests share (test_ui_browser, test_ui_vision_browser, test_findings_browser):
Debian's Chromium driven by Playwright against a real `sftvsrl serve` on loopback.

- `require_browser()` at the top of a browser test module: skips the module (visibly) when Chromium
  or Playwright is missing;
- `serve_app(tmp, models, *extra, env=...)`: starts `sftvsrl serve` on a free loopback port with
  its data under `tmp` (no warm start unless `env` sets `SFTVSRL_WARM_MODELS=1`), waits for `/api/health` (no clock: the server's own readiness) and returns
  the server and its URL; the caller stops it;
- fixtures `browser` (one Chromium per module, for tests that open their own contexts, e.g. two
  visitors at once) and `page` (a new page per test in the module's one Chromium profile, every
  storage of the test's sites cleared after it; a screenshot under `tests/artifacts/<test>.png` when
  the test failed — of every test with `SFTVSRL_SCREENSHOTS=all` — and an assertion that the page
  fetched nothing from outside loopback). A test module imports them:
  `from browsing import browser, page, playwright, profile`.

Why a profile and not a fresh context per test: only a profile keeps a disk cache, and with it
Chromium's compiled copy of Gradio's scripts. Measured (6 loads of the 24 Points page, 2026-12-08):
a load costs the browser ~0.5 CPU-s instead of ~1.1 and the server ~0.3 instead of ~0.5; the
suite loads the page ~90 times on a 2-core CI. What a test could leave behind for the next one
(cookies, local and session storage, IndexedDB, service workers, cache storage) is cleared for
every site the test's page talked to; only the HTTP cache is shared.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from conftest import ROOT

CHROMIUM = os.environ.get("SFTVSRL_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = ROOT / "tests" / "artifacts"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
LOCAL = ("http://127.0.0.1", "http://localhost", "data:", "blob:", "about:")
PAGE_TIMEOUT_MS = 300_000     # a hang guard only: every wait is for a condition, never for a clock


def require_browser():
    """Skip the calling module when Chromium or Playwright is missing; Playwright's sync API otherwise."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"Chromium not found at {CHROMIUM} (apt-get install chromium; .ci/run installs it)",
                    allow_module_level=True)
    return pytest.importorskip("playwright.sync_api")


def serve_app(tmp: Path, models: Path, *extra: str, env: dict[str, str] | None = None):
    """`sftvsrl serve --models models *extra` on a free loopback port, data under `tmp`; returns
    (server, url) once healthy, or fails the test with the server's log."""
    from models.procs import ManagedServer, free_port

    port = free_port()
    # no warm start unless a test asks for it (SFTVSRL_WARM_MODELS=1): loading and playing the
    # default models at start costs a busy CI several seconds per server, and a stop during the
    # warm-up waits for the checkpoint being loaded
    full_env = {"GRADIO_ANALYTICS_ENABLED": "False", "SFTVSRL_DATA_DIR": str(tmp / "data"), "SFTVSRL_WARM_MODELS": "0",
                "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), **(env or {})}
    server = ManagedServer("app", [sys.executable, "-m", "app.cli", "serve", "--port", str(port),
                                   "--models", str(models), *extra],
                           f"http://127.0.0.1:{port}/api/health", env=full_env, log_path=tmp / "server.log")
    server.start()
    if not server.wait_healthy():  # a busy CI machine imports gradio slowly
        server.stop()
        pytest.fail(f"the app did not start:\n{server.log_tail(40)}")
    return server, f"http://127.0.0.1:{port}"


def screenshots_wanted() -> bool:
    """Screens for a look by eye (not a check) are taken only with `SFTVSRL_SCREENSHOTS=all`:
    each costs ~0.5 s of a busy CI core."""
    return os.environ.get("SFTVSRL_SCREENSHOTS") == "all"


# every storage a page can leave behind, but the HTTP cache (CDP `Storage.clearDataForOrigin`)
CLEARED_STORAGE = "cookies,local_storage,indexeddb,websql,service_workers,cache_storage,file_systems"


@pytest.fixture(scope="module")
def playwright():
    """Playwright's sync API for the module (one per thread: `browser` and `profile` share it)."""
    playwright_api = require_browser()
    with playwright_api.sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright):
    b = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
    yield b
    b.close()


@pytest.fixture(scope="module")
def profile(playwright, tmp_path_factory):
    """The module's one Chromium profile (a persistent context: its disk cache is what `page` shares)."""
    context = playwright.chromium.launch_persistent_context(
        str(tmp_path_factory.mktemp("chromium-profile")), executable_path=CHROMIUM, args=LAUNCH_ARGS,
        viewport={"width": 1400, "height": 1600})
    yield context
    context.close()


@pytest.fixture
def page(profile, request):
    pg = profile.new_page()
    pg.set_viewport_size({"width": 1400, "height": 1600})
    pg.set_default_timeout(PAGE_TIMEOUT_MS)
    outside: list[str] = []
    origins: set[str] = set()

    def seen(r) -> None:
        if not r.url.startswith(LOCAL):
            outside.append(r.url)
        elif r.url.startswith("http"):
            origins.add("/".join(r.url.split("/")[:3]))

    profile.on("request", seen)   # the context's: a popup or a second page of the test counts too
    yield pg
    # a full-page screenshot costs ~0.5 s of a busy CI core: taken where someone will look at it
    report = getattr(request.node, "rep_call", None)
    try:
        if screenshots_wanted() or report is None or report.failed:
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            pg.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
    finally:
        profile.remove_listener("request", seen)
        forget_sites(profile, pg, origins)
    assert not outside, f"the page fetched from outside loopback: {outside[:5]}"


def forget_sites(context, pg, origins) -> None:
    """Clear what pages of `context` stored for `origins` (all but the HTTP cache: `CLEARED_STORAGE`)
    and its cookies, then close its pages: the next test's page starts as a first visit."""
    cdp = context.new_cdp_session(pg if not pg.is_closed() else context.new_page())   # a test may close its page
    for origin in sorted(origins):
        cdp.send("Storage.clearDataForOrigin", {"origin": origin, "storageTypes": CLEARED_STORAGE})
    cdp.detach()
    context.clear_cookies()
    for other in context.pages:
        other.close()
