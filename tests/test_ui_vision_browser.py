"""Browser test of the vision variants with the *default* model configuration
(`models/default_models.toml`): the shipped tiny Mllama checkpoints play GP-VL (the table image)
and V-IRL-VL (the 2×2 street views) in both columns, offline, without an error. A real
`sftvsrl serve` on loopback, Debian's Chromium driven by Playwright (fixtures as in
test_ui_browser.py)."""
from __future__ import annotations

import os
import sys
import tomllib
from pathlib import Path

import pytest

from conftest import ROOT

CHROMIUM = os.environ.get("SFTVSRL_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = ROOT / "tests" / "artifacts"
DEFAULT_MODELS = ROOT / "models" / "default_models.toml"
pytestmark = pytest.mark.browser

if not Path(CHROMIUM).exists():
    pytest.skip(f"Chromium not found at {CHROMIUM} (apt-get install chromium; .ci/run installs it)",
                allow_module_level=True)
playwright_api = pytest.importorskip("playwright.sync_api")
pytest.importorskip("torch")

from models.procs import ManagedServer, free_port  # noqa: E402

LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
LOCAL = ("http://127.0.0.1", "http://localhost", "data:", "blob:", "about:")


def test_default_config_serves_the_vision_checkpoints():
    config = tomllib.loads(DEFAULT_MODELS.read_text(encoding="utf-8"))["models"]
    for name in ("sft", "rl"):
        spec = config[name]
        assert {"gp-vl", "virl-vl"} <= set(spec["tasks"])
        for task in ("gp-vl", "virl-vl"):
            path = DEFAULT_MODELS.parent / spec["paths"][task]
            assert (path / "config.json").is_file() and '"mllama"' in (path / "config.json").read_text()
            assert (path / "processor_config.json").is_file()


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ui-vision")
    port = free_port()
    env = {"GRADIO_ANALYTICS_ENABLED": "False", "SFTVSRL_DATA_DIR": str(tmp / "data"),
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    server = ManagedServer("app", [sys.executable, "-m", "app.cli", "serve", "--port", str(port),
                                   "--models", str(DEFAULT_MODELS)],
                           f"http://127.0.0.1:{port}/api/health", env=env, log_path=tmp / "server.log")
    server.start()
    if not server.wait_healthy():
        server.stop()
        pytest.fail(f"the app did not start:\n{server.log_tail(40)}")
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def page(request):
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 1600})
        pg = context.new_page()
        pg.set_default_timeout(60_000)
        outside: list[str] = []
        pg.on("request", lambda r: outside.append(r.url) if not r.url.startswith(LOCAL) else None)
        try:
            yield pg
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            pg.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
        finally:
            context.close()
            browser.close()
        assert not outside, f"the page fetched from outside loopback: {outside[:5]}"


def _both_columns_play(page, prefix: str) -> None:
    for col, label in ((f"#{prefix}-col-0", "SFT"), (f"#{prefix}-col-1", "RL")):
        page.wait_for_selector(f"{col} .sv-col[data-done='true']", timeout=300_000)
        text = page.inner_text(col)
        assert label in text and "Try 1" in text, text
        assert page.locator(f"{col} .sv-error").count() == 0, text
        assert "not configured" not in text and "Error" not in text, text


def test_gp_vision_variant_runs_both_default_models(page, app_url):
    page.goto(app_url + "/?tab=gp&deal=SAHQDQS5")
    page.wait_for_selector("#gp-hand .sv-hand", state="attached")
    box = page.locator("#gp-vision input")
    assert box.is_enabled()
    box.check()
    page.click("#gp-run")
    _both_columns_play(page, "gp")


def test_virl_street_views_run_both_default_models(page, app_url):
    page.goto(app_url + "/?tab=virl&route=1")
    page.wait_for_selector("#virl-status .sv-info")
    page.locator("#virl-view").get_by_text("Street views (VL)").click()
    page.wait_for_selector("#virl-grid img")
    page.click("#virl-run")
    _both_columns_play(page, "virl")
