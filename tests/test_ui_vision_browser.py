"""Browser test of the vision variants with the *default* model configuration
(`models/default_models.toml`): the shipped tiny Mllama checkpoints play GP-VL (the table image)
and V-IRL-VL (the 2×2 street views) in both columns, offline, without an error. A real
`sftvsrl serve` on loopback, Debian's Chromium driven by Playwright (fixtures from
`tests/browsing.py`)."""
from __future__ import annotations

import tomllib

import pytest

from browsing import browser, page, playwright, profile, require_browser, serve_app  # noqa: F401 (fixtures)
from conftest import ROOT

DEFAULT_MODELS = ROOT / "models" / "default_models.toml"
pytestmark = pytest.mark.browser
require_browser()
pytest.importorskip("torch")


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
    server, url = serve_app(tmp_path_factory.mktemp("ui-vision"), DEFAULT_MODELS)
    yield url
    server.stop()


def _both_columns_play(page, prefix: str) -> None:
    first = "Try 1" if prefix == "gp" else "Move 1"   # GP counts tries, V-IRL moves
    for col, label in ((f"#{prefix}-col-0", "SFT"), (f"#{prefix}-col-1", "RL")):
        page.wait_for_selector(f"{col} .sv-col[data-done='true']", timeout=300_000)
        text = page.inner_text(col)
        assert label in text and first in text, text
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
