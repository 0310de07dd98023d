"""Browser tests of the playground UI: a real `sftvsrl serve` process on loopback, driven by
Playwright in Debian's Chromium (`/usr/bin/chromium`). A failed test leaves a screenshot under
`tests/artifacts/`. Every test also asserts that the page fetched nothing from outside loopback.
"""
from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from game import protocol

from browsing import (ARTIFACTS, LOCAL, browser, forget_sites, page, playwright, profile,  # noqa: F401 (fixtures)
                      require_browser, screenshots_wanted, serve_app)

pytestmark = pytest.mark.browser
playwright_api = require_browser()

from game.gp.deal import Deal  # noqa: E402
from game.gp.solver import distinct_solutions  # noqa: E402
from models.procs import free_port  # noqa: E402


def _models_toml(path: Path, ckpt: Path) -> Path:
    path.write_text(f"""
[models.sft]
backend = "local"
path = "{ckpt}"
label = "SFT"
tasks = ["gp-l", "virl-l"]
decoding = {{ max_tokens = 24 }}

[models.rl]
backend = "local"
path = "{ckpt}"
label = "RL"
tasks = ["gp-l", "virl-l"]
decoding = {{ max_tokens = 24 }}
""", encoding="utf-8")
    return path


def _serve(tmp: Path, ckpt: Path, *extra: str) -> tuple[object, str]:
    return serve_app(tmp, _models_toml(tmp / "models.toml", ckpt), *extra)


@pytest.fixture(scope="module")
def app_url(tmp_path_factory, tiny_llama_dir):
    server, url = _serve(tmp_path_factory.mktemp("ui"), tiny_llama_dir)
    yield url
    server.stop()


def _open(page, url: str) -> None:
    page.goto(url)
    page.wait_for_selector("#gp-hand .sv-hand", state="attached")


def _deal_id(page) -> str:
    return page.locator("#gp-hand .sv-hand").get_attribute("data-deal")


def test_deal_a_seeded_hand_and_play_a_correct_formula(page, app_url):
    _open(page, app_url + "/")
    page.fill("#gp-seed input", "11")
    page.click("#gp-deal")
    page.wait_for_function("document.querySelector('#gp-info')?.innerText.includes('seed 11')")
    deal = Deal.from_id(_deal_id(page))
    solution = distinct_solutions(deal.numbers("face10"), deal.target)[0]
    page.fill("#gp-formula input", solution)
    page.click("#gp-check")
    page.wait_for_selector("#gp-verdict [data-outcome='correct']")
    assert "Correct" in page.inner_text("#gp-verdict")
    assert f"deal={deal.id}" in page.url  # the URL follows the hand on screen


PRESENTER_STORED = "sv-presenter"   # app/ui: where the browser remembers presenter mode


def test_the_next_test_page_starts_as_a_first_visit_with_the_cache_kept(profile, app_url):
    """The `page` fixture shares one Chromium profile (its cache) between tests: what one test's
    page stored (presenter mode in local storage, session storage, a cookie) is gone for the next."""
    pg = profile.new_page()
    pg.goto(app_url + "/?tab=gp")
    pg.wait_for_selector("#gp-hand .sv-hand img")
    pg.click("h1")
    pg.keyboard.press("p")                      # presenter mode, remembered in local storage
    pg.wait_for_function(f"localStorage.getItem('{PRESENTER_STORED}') === '1' && !!localStorage.getItem('sftvsrl-games')")
    pg.evaluate("sessionStorage.setItem('k', '1'); document.cookie = 'k=1; path=/'")
    before = pg.evaluate("({...localStorage})")
    assert PRESENTER_STORED in before and "sftvsrl-games" in before   # the page's own game tokens
    pg.close()                                  # a test may close its own page: the sites are still cleared
    forget_sites(profile, pg, {app_url})
    assert not profile.pages and not profile.cookies()
    pg = profile.new_page()
    pg.goto(app_url + "/?tab=gp")
    pg.wait_for_selector("#gp-hand .sv-hand img")
    after = pg.evaluate("({...localStorage})")
    assert PRESENTER_STORED not in after and after.get("sftvsrl-games") != before["sftvsrl-games"]
    assert pg.evaluate("[sessionStorage.length, document.cookie]") == [0, ""]
    assert not pg.locator("#sv-presenter-toggle input").is_checked()
    assert pg.evaluate("performance.getEntriesByType('resource').some(r => r.transferSize === 0 && "
                       "r.name.endsWith('.js'))")   # scripts came from the kept cache
    pg.close()


def test_wrong_formula_and_bad_input_are_inline_messages(page, app_url):
    _open(page, app_url + "/?tab=gp&deal=HKC5D2C4")
    page.fill("#gp-formula input", "10 + 5")
    page.click("#gp-check")
    page.wait_for_selector("#gp-verdict [data-outcome='illegal_formula']")
    assert "illegal characters." in page.inner_text("#gp-verdict")
    page.fill("#gp-seed input", "not a number")
    page.click("#gp-deal")
    page.wait_for_selector("#gp-error .sv-error")
    assert "whole number" in page.inner_text("#gp-error")
    assert "Traceback" not in page.content()


def test_run_both_models_side_by_side(page, app_url):
    _open(page, app_url + "/?tab=gp&deal=SAHQDQS5")
    page.click("#gp-run")
    page.wait_for_selector("#gp-col-0 .sv-col[data-done='true']", timeout=300_000)
    page.wait_for_selector("#gp-col-1 .sv-col[data-done='true']", timeout=300_000)
    for col, name in (("#gp-col-0", "SFT"), ("#gp-col-1", "RL")):
        text = page.inner_text(col)
        assert name in text and "Try 1" in text
        assert ("Solved" in text) or ("Not solved" in text)


def test_race_you_against_the_models(page, app_url):
    _open(page, app_url + "/?tab=gp&deal=HKC5D2C4")
    page.click("#gp-race")
    page.wait_for_selector("#gp-race-out .sv-race")
    page.fill("#gp-formula input", "(10+2*5)+4")
    page.click("#gp-check")
    page.wait_for_selector("#gp-race-out .sv-race-result")
    assert "You solved it in" in page.inner_text("#gp-race-out")
    for col in ("#gp-col-0", "#gp-col-1"):
        page.wait_for_selector(f"{col} .sv-col[data-done='true']", timeout=300_000)


def test_flip_the_same_hand_to_the_ood_rule(page, app_url):
    _open(page, app_url + "/?tab=gp&deal=HKC5D2C4&rule=face10")
    assert "ID rule" in page.inner_text("#gp-info")
    page.click("#gp-flip")
    page.wait_for_function("document.querySelector('#gp-info')?.innerText.includes('OOD rule')")
    assert _deal_id(page) == "HKC5D2C4"
    assert "13 5 2 4" in page.inner_text("#gp-info")
    assert "rule=face_jqk" in page.url


def test_deep_link_restores_the_same_hand(page, app_url):
    _open(page, app_url + "/?tab=gp&deal=SAHQDQS5&rule=face_jqk")
    assert _deal_id(page) == "SAHQDQS5"
    assert "OOD rule" in page.inner_text("#gp-info")
    _open(page, app_url + "/?tab=gp&seed=42&rule=face10")
    first = _deal_id(page)
    _open(page, app_url + "/?tab=gp&seed=42&rule=face10")
    assert _deal_id(page) == first


def test_virl_step_a_route_to_the_end(page, app_url):
    from app.ui import virl_play as vp

    page.goto(app_url + "/?tab=virl&route=2&actions=absolute")
    page.wait_for_selector("#virl-status .sv-info")
    walk = vp.new_walk("bundled:helsinki", 2, True)
    for _ in range(40):
        ep = vp.episode_of(walk)
        if ep.done:
            break
        action = ep.entry.gt_action
        page.locator("#virl-action-row button", has_text=action).first.click()
        walk = vp.act(walk, action)
        step_count = len(walk.actions)
        page.wait_for_function(f"document.querySelectorAll('#virl-log li').length >= {step_count}")
    page.wait_for_selector("#virl-status [data-done='true']")
    assert "Arrived" in page.inner_text("#virl-status")
    assert page.locator("#virl-map img").count() == 1


def test_inspect_filters_to_a_failure_class(page, app_url):
    _open(page, app_url + "/?tab=gp&deal=D7S5C2C4")
    page.click("#gp-run")  # tiny random models fail, so there are failures to inspect
    for col in ("#gp-col-0", "#gp-col-1"):
        page.wait_for_selector(f"{col} .sv-col[data-done='true']", timeout=300_000)
    page.get_by_role("tab", name="Inspect").click()
    page.locator("#inspect-failure input").click()
    page.get_by_role("option", name="GP: step limit").click()
    page.click("#inspect-refresh")
    page.wait_for_function("/^[1-9][0-9]* episodes? match/.test(document.querySelector('#inspect-summary')?.innerText.trim())")
    cells = [c.strip() for c in page.inner_text("#inspect-table").splitlines()]
    n_rows = cells.count("gp-l")  # one task cell per episode row
    assert n_rows >= 1
    assert sum("Step limit" in c for c in cells) == n_rows, cells


def _proxy_app(upstream: str, prefix: str):
    """A minimal reverse proxy that strips `prefix` and keeps the Host header, as nginx does with
    `location /playground/ { proxy_pass http://127.0.0.1:7860/; proxy_set_header Host $host; }`."""
    import httpx
    from starlette.applications import Starlette
    from starlette.responses import Response, StreamingResponse
    from starlette.routing import Route

    client = httpx.AsyncClient(base_url=upstream, timeout=None, trust_env=False)

    async def handle(request):
        path = request.url.path
        if not path.startswith(prefix):
            return Response("not found", status_code=404)
        url = path[len(prefix):] or "/"
        if request.url.query:
            url += "?" + request.url.query
        headers = {k: v for k, v in request.headers.items() if k.lower() != "content-length"}
        req = client.build_request(request.method, url, headers=headers, content=await request.body())
        resp = await client.send(req, stream=True)
        drop = {"content-length", "transfer-encoding", "connection", "content-encoding"}
        return StreamingResponse(resp.aiter_bytes(), status_code=resp.status_code,
                                 headers={k: v for k, v in resp.headers.items() if k.lower() not in drop},
                                 background=None)

    return Starlette(routes=[Route("/{path:path}", handle, methods=["GET", "POST", "PUT", "DELETE"])])


def test_served_under_a_sub_path_behind_a_reverse_proxy(page, tmp_path, tiny_llama_dir):
    import uvicorn

    server, upstream = _serve(tmp_path, tiny_llama_dir, "--root-path", "/playground")
    proxy_port = free_port()
    config = uvicorn.Config(_proxy_app(upstream, "/playground"), host="127.0.0.1",
                            port=proxy_port, log_level="warning", timeout_graceful_shutdown=2)
    proxy = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(proxy.serve()), daemon=True)
    thread.start()
    for _ in range(200):
        if proxy.started:
            break
        threading.Event().wait(0.05)
    try:
        base = f"http://127.0.0.1:{proxy_port}/playground"
        _open(page, base + "/?tab=gp&deal=HKC5D2C4")
        assert _deal_id(page) == "HKC5D2C4"
        page.fill("#gp-formula input", "(10+2*5)+4")
        page.click("#gp-check")
        page.wait_for_selector("#gp-verdict [data-outcome='correct']")
        import httpx

        assert httpx.get(base + "/api/health", trust_env=False).status_code == 200
    finally:
        # leave the page first: its open event stream would hold both servers in their graceful
        # shutdown (uvicorn waits for in-flight responses; this test spent 17 s there)
        page.goto("about:blank")
        proxy.should_exit = True
        thread.join(10)
        server.stop()


def test_presenter_mode_and_keyboard_shortcuts(page, app_url):
    _open(page, app_url + "/?tab=gp&seed=5")
    first = _deal_id(page)
    page.click("body")
    page.keyboard.press("p")
    page.wait_for_function("document.body.classList.contains('sv-presenter')")
    page.keyboard.press("n")
    page.wait_for_function(f"document.querySelector('#gp-hand .sv-hand')?.dataset.deal !== '{first}'")
    page.keyboard.press("f")
    page.wait_for_function("document.querySelector('#gp-info')?.innerText.includes('OOD rule')")


def test_evaluate_tab_runs_a_small_evaluation(page, app_url):
    page.goto(app_url + "/?tab=evaluate")
    page.wait_for_selector("#eval-run")
    page.fill("#eval-episodes input", "2")
    page.click("#eval-run")
    page.wait_for_selector("#eval-progress [data-status='finished'], #eval-progress [data-status='incomplete']",
                           timeout=300_000)
    page.wait_for_selector("#eval-plot img")
    table = page.inner_text("#eval-table")
    assert "sft" in table and "rl" in table and "rule-ood" in table
    links = page.locator("#eval-links a")
    # 2 models × every split, each opens the Inspect tab on those episodes
    assert links.count() == 2 * len(protocol.splits("gp-l"))
    links.first.click()
    page.wait_for_function("/^[1-9][0-9]* episodes? match/.test(document.querySelector('#inspect-summary')"
                           "?.innerText.trim() || '') || document.querySelectorAll('#inspect-table td').length > 0")


def test_models_tab_shows_health(page, app_url):
    page.goto(app_url + "/?tab=models")
    page.wait_for_selector("#models-health tr[data-model='sft']")  # listed before any check
    assert "local" in page.inner_text("#models-health")
    page.click("#models-refresh")
    page.wait_for_function("document.querySelector('#models-health').innerText.includes('healthy')")
    assert "not checked yet" not in page.inner_text("#models-health")
    _open(page, app_url + "/?tab=gp")  # opening the tab checks again
    page.get_by_role("tab", name="Models").click()
    page.wait_for_function("document.querySelector('#models-health')?.innerText.includes('healthy')")


def test_virl_models_walk_the_same_route_and_bad_route_is_inline(page, app_url):
    page.goto(app_url + "/?tab=virl&route=1&actions=relative")
    page.wait_for_selector("#virl-status .sv-info")
    page.click("#virl-run")
    for col in ("#virl-col-0", "#virl-col-1"):
        page.wait_for_selector(f"{col} .sv-col[data-done='true']", timeout=300_000)
        assert "Move 1" in page.inner_text(col)  # V-IRL counts moves (GP counts tries)
    page.fill("#virl-route input", "99999")
    page.click("#virl-start")
    page.wait_for_selector("#virl-error .sv-error")
    assert "does not exist" in page.inner_text("#virl-error")



def test_unreachable_target_and_server_paths_are_refused_in_the_page(page, app_url):
    """Issue 12: the Target field and a deep link give the same message for an unreachable target,
    and a deep link naming a server directory is refused (nothing is listed)."""
    _open(page, app_url + "/?tab=gp&seed=1&target=461")
    page.wait_for_selector("#gp-error .sv-error")
    from_link = page.inner_text("#gp-error .sv-error")
    assert "no four cards make 461" in from_link and "460, 462" in from_link
    page.fill("#gp-seed input", "1")
    page.fill("#gp-target input", "24")
    page.click("#gp-deal")  # a good deal clears the message
    page.wait_for_function("!document.querySelector('#gp-error .sv-error')")
    page.fill("#gp-target input", "461")
    page.click("#gp-deal")
    page.wait_for_selector("#gp-error .sv-error")
    # the link's message also says it could not be restored (read the message, not the component,
    # which shows Gradio's "processing | 0.0/0.1s" beside it while the event that drew it ends)
    assert page.inner_text("#gp-error .sv-error") in from_link
    page.goto(app_url + "/?tab=virl&source=/etc&route=1")
    page.wait_for_selector("#virl-error .sv-error")
    assert "not allowed here" in page.inner_text("#virl-error")
    assert "passwd" not in page.content()


# ----------------------------------------------------------------------------- talk-ready UI

CONTRAST_JS = """
() => {
  // WCAG relative luminance and contrast of every visible text in the tab on screen and the header.
  const parse = (c) => { const m = c.match(/rgba?\\(([^)]+)\\)/); if (!m) return null;
    const p = m[1].split(',').map(Number); return {r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1}; };
  const lum = ({r, g, b}) => { const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b); };
  const background = (el) => {
    for (let e = el; e; e = e.parentElement) {
      const c = parse(getComputedStyle(e).backgroundColor);
      if (c && c.a > 0.5) return c;
    }
    return {r: 255, g: 255, b: 255, a: 1};
  };
  const shown = (el) => { const r = el.getBoundingClientRect(); return r.width > 0 && r.height > 0 && el.offsetParent !== null; };
  const worst = [];
  const roots = [document.querySelector('#sv-header'), document.querySelector('[role=tabpanel]:not([hidden]), .tabitem:not([style*="none"])')];
  const all = [...document.querySelectorAll('#sv-header *, #sv-tabs *')];
  for (const el of all) {
    if (!shown(el)) continue;
    const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    if (!own) continue;
    const cs = getComputedStyle(el);
    if (cs.visibility === 'hidden') continue;
    const fg = parse(cs.color); if (!fg) continue;
    const bg = background(el);
    const [a, b] = [lum(fg), lum(bg)].sort((x, y) => y - x);
    const ratio = (a + 0.05) / (b + 0.05);
    if (ratio < 7) worst.push({text: el.textContent.trim().slice(0, 40), tag: el.tagName, cls: String(el.className).slice(0, 40),
                               ratio: Math.round(ratio * 100) / 100, fg: cs.color, bg: `rgb(${bg.r},${bg.g},${bg.b})`});
  }
  return worst;
}
"""

SIZES_JS = """
() => ({
  title: parseFloat(getComputedStyle(document.querySelector('.sv-title h1')).fontSize),
  card: document.querySelector('#gp-hand .sv-card img').getBoundingClientRect().height,
  info: parseFloat(getComputedStyle(document.querySelector('#gp-info .sv-info')).fontSize),
  verdict: parseFloat(getComputedStyle(document.querySelector('#gp-verdict .sv-verdict')).fontSize),
  step: parseFloat(getComputedStyle(document.querySelector('#gp-col-0 details[open] pre')).fontSize),
})
"""


def _presenter(page, on: bool = True) -> None:
    page.click("h1")
    page.keyboard.press("p")
    want = "" if on else "!"
    page.wait_for_function(f"{want}document.body.classList.contains('sv-presenter')")


def test_presenter_mode_is_high_contrast_and_large(page, app_url):
    _open(page, app_url + "/?tab=gp&deal=HKC5D2C4")
    page.fill("#gp-formula input", "10 + 5")
    page.click("#gp-check")
    page.wait_for_selector("#gp-verdict .sv-verdict")
    page.click("#gp-run")
    page.wait_for_selector("#gp-col-0 .sv-col[data-done='true'] details[open] pre", timeout=300_000)
    normal = page.evaluate(SIZES_JS)
    _presenter(page)
    big = page.evaluate(SIZES_JS)
    for key in normal:
        assert big[key] >= 1.6 * normal[key], (key, normal[key], big[key])
    low = page.evaluate(CONTRAST_JS)
    assert not low, f"text under 7:1 in presenter mode: {low[:8]}"
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(0, 0, 0)"
    for tab in ("V-IRL", "Inspect", "Evaluate", "Models"):
        page.get_by_role("tab", name=tab).click()
        page.wait_for_timeout(0)
        low = page.evaluate(CONTRAST_JS)
        assert not low, f"{tab}: text under 7:1 in presenter mode: {low[:8]}"
    _presenter(page, on=False)


def test_api_docs_and_redoc_render_offline(page, app_url):
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(app_url + "/docs")
    page.wait_for_selector(".opblock-summary-path", timeout=300_000)
    paths = page.locator(".opblock-summary-path").all_inner_texts()
    assert any("/api/episodes" in p for p in paths) and any("/api/health" in p for p in paths)
    page.goto(app_url + "/redoc")
    page.wait_for_selector("[data-section-id]", state="attached", timeout=300_000)
    assert "SFT-vs-RL playground API" in page.inner_text("body")
    outside = [u for u in requests if not u.startswith(LOCAL)]
    assert not outside and len(requests) > 3, outside[:5]


def test_footer_links_to_our_rest_api_docs(page, app_url):
    _open(page, app_url + "/")
    href = page.locator(".sv-footer a", has_text="REST API").get_attribute("href")
    assert href == "docs"
    assert page.locator("footer a", has_text="Use via API").count() == 0


def test_shortcuts_act_on_the_visible_tab_only(page, app_url):
    page.goto(app_url + "/?tab=virl&route=1")
    page.wait_for_selector("#virl-status .sv-info")
    page.wait_for_selector("#gp-hand .sv-hand", state="attached")
    gp_before = (_deal_id(page), page.locator("#gp-info").inner_text())
    page.click("#virl-instructions")
    for key in ("n", "f"):
        page.keyboard.press(key)
    page.keyboard.press("r")  # runs the V-IRL models, not the 24 Points ones
    page.wait_for_selector("#virl-col-0 .sv-col", timeout=300_000)
    assert (_deal_id(page), page.locator("#gp-info").inner_text()) == gp_before
    assert page.locator("#gp-col-0 .sv-col").count() == 0
    assert "tab=virl" in page.url
    page.keyboard.press("?")
    page.wait_for_selector("#sv-help:not([hidden])")
    assert "run the models on the tab on screen" in page.inner_text("#sv-help")
    page.keyboard.press("Escape")
    page.wait_for_selector("#sv-help[hidden]", state="attached")
    for col in ("#virl-col-0", "#virl-col-1"):
        page.wait_for_selector(f"{col} .sv-col[data-done='true']", timeout=300_000)


def test_deep_link_restores_suits_dealing_and_target(page, app_url):
    _open(page, app_url + "/?tab=gp&seed=5&suits=red&mode=deck&target=30")
    page.wait_for_function("document.querySelector('#gp-info')?.innerText.includes('Make 30')")
    assert page.input_value("#gp-target input") == "30"
    assert page.input_value("#gp-suits input") == "Red suits (visual OOD)"
    assert page.input_value("#gp-mode input") == "Real deck"
    cards = page.locator("#gp-hand img").evaluate_all("els => els.map(e => e.dataset.card)")
    assert all(c[0] in "HD" for c in cards), cards
    for key in ("suits=red", "mode=deck", "target=30", "seed=5"):
        assert key in page.url
    first = _deal_id(page)
    page.click("#gp-next")  # Next deal continues with the restored settings
    page.wait_for_function(f"document.querySelector('#gp-hand .sv-hand')?.dataset.deal !== '{first}'")
    cards = page.locator("#gp-hand img").evaluate_all("els => els.map(e => e.dataset.card)")
    assert all(c[0] in "HD" for c in cards) and "Make 30" in page.inner_text("#gp-info")
    assert "seed=6" in page.url


def test_bad_deep_link_says_why_and_the_url_is_written_on_load(page, app_url):
    _open(page, app_url + "/?tab=gp&deal=NOTADEAL")
    page.wait_for_selector("#gp-error .sv-error")
    assert "NOTADEAL" in page.inner_text("#gp-error") and "not a hand" in page.inner_text("#gp-error")
    _open(page, app_url + "/")
    page.wait_for_function("window.location.search.includes('deal=')")


def test_default_hand_flips_to_a_solvable_ood_hand(page, app_url):
    _open(page, app_url + "/")
    first = _deal_id(page)
    assert "K" in page.inner_text("#gp-hand")  # a face card, so the flip changes a number
    page.click("#gp-flip")
    page.wait_for_function("document.querySelector('#gp-info')?.innerText.includes('OOD rule')")
    assert _deal_id(page) == first
    info = page.inner_text("#gp-info")
    assert "distinct solution" in info and "no solution" not in info and "13" in info


def test_a_models_virl_walk_is_drawn_on_the_map(page, app_url):
    import io

    from PIL import Image

    from app.ui.models_panel import COLOURS

    page.goto(app_url + "/?tab=virl&route=0")
    page.wait_for_selector("#virl-status .sv-info")

    def colour_pixels() -> int:
        src = page.locator("#virl-map img").get_attribute("src")
        import numpy as np

        img = np.asarray(Image.open(io.BytesIO(page.request.get(src).body())).convert("RGB"))
        return int(sum((img == np.array(c, dtype=img.dtype)).all(axis=-1).sum() for c in COLOURS[:2]))

    assert colour_pixels() == 0
    page.click("#virl-run")
    for col in ("#virl-col-0", "#virl-col-1"):
        page.wait_for_selector(f"{col} .sv-col[data-done='true']", timeout=300_000)
        assert page.locator(f"{col} .sv-swatch").count() == 1
    page.wait_for_function("!document.querySelector('#virl-map .pending')")
    assert colour_pixels() > 20


def test_stop_leaves_no_column_generating(page, app_url):
    _open(page, app_url + "/?tab=gp&deal=D7S5C2C4")
    page.click("#gp-run")
    page.wait_for_selector("#gp-col-0 .sv-col")
    page.click("#gp-stop")
    for col in ("#gp-col-0", "#gp-col-1"):
        page.wait_for_selector(f"{col} .sv-col[data-done='true']", timeout=300_000)
        text = page.inner_text(col)
        assert "generating" not in text and "waiting" not in text
        assert ("Stopped" in text) or ("Solved" in text) or ("Not solved" in text)


def test_absurd_input_gets_a_short_message(page, app_url):
    _open(page, app_url + "/")
    page.fill("#gp-seed input", "1e400")
    page.click("#gp-deal")
    page.wait_for_selector("#gp-error .sv-error")
    assert "whole number" in page.inner_text("#gp-error")
    page.fill("#gp-formula input", "1+" * 100)
    page.click("#gp-check")
    page.wait_for_selector("#gp-verdict .sv-verdict")
    assert "Too long" in page.inner_text("#gp-verdict")
    assert "Too long" in page.inner_text("#gp-subtotal")


def test_vision_option_says_why_it_is_off(page, app_url):
    _open(page, app_url + "/")
    assert page.locator("#gp-vision input").is_disabled()
    assert "sftvsrl vllm up" in page.inner_text("#gp-vision")
    page.goto(app_url + "/?tab=virl")
    page.wait_for_selector("#virl-status .sv-info")
    assert "text only" in page.inner_text("#virl-view")
    assert page.locator("#virl-vision").count() == 0  # one vision toggle on the tab: Observation


@pytest.mark.parametrize("size", [(1366, 768), (1024, 768)])
def test_screenshots_of_each_tab_and_the_fold(browser, app_url, size):
    """Every tab opens at both sizes, normal and presenter, with the hand and Run above the fold;
    screens for a look by eye (tests/artifacts/screens-*) with SFTVSRL_SCREENSHOTS=all."""
    width, height = size
    context = browser.new_context(viewport={"width": width, "height": height})
    pg = context.new_page()
    pg.set_default_timeout(300_000)
    try:
        pg.goto(app_url + "/")
        pg.wait_for_selector("#gp-hand .sv-hand img")
        assert pg.locator("#gp-info div.sv-info").bounding_box()["y"] < height  # "Make 24 from …" on screen
        if width >= 1366:
            box = pg.locator("#gp-run").bounding_box()
            assert box["y"] + box["height"] <= height, box  # Run models on screen without scrolling
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        for mode in ("normal", "presenter"):
            if mode == "presenter":
                _presenter(pg)
            for tab, name in (("gp", "24 Points"), ("virl", "V-IRL"), ("inspect", "Inspect"),
                              ("evaluate", "Evaluate"), ("models", "Models")):
                pg.get_by_role("tab", name=name).click()
                pg.wait_for_selector(f"#tab-{tab}", state="visible")
                if screenshots_wanted():
                    pg.screenshot(path=str(ARTIFACTS / f"screens-{width}x{height}-{tab}-{mode}.png"))
    finally:
        context.close()
