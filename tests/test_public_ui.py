"""The public demo holds for the web UI too (issue 24): a real `sftvsrl serve --public` with the UI
mounted, tiny models and an operator token, driven two ways — through Gradio's queue API (posting
events with any data and any page link, as a script or an attacker does: `gradio_queue.Visitor`)
and in a real browser (Chromium, two visitors with their own storage) — for every tab.

What must hold: an anonymous visitor launches no evaluation and sees none of another visitor's
games in Inspect (listing, deep link, export); a visitor sees, opens and exports its own; the
operator token (typed in the Evaluate tab) launches one; no absolute server paths are shown;
security headers are on every page and the UI works under its CSP (no violation in the console);
tokens stay out of the access log; a JSON body of any JSON content type with NaN is a 422; a
client flooding slow verifies gets answers and leaves a bystander's deals answered (0 × 5xx); the
largest allowed evaluation starts while the server keeps answering. No test waits on a clock.
"""
from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import httpx
import pytest

from game import protocol

from browsing import browser, page, playwright, profile, serve_app  # noqa: F401 (fixtures; they skip without Chromium)
from gradio_queue import Visitor, text_of

ADMIN = "operator-token-for-ui-tests"


def _models_toml(path: Path, ckpt: Path) -> Path:
    path.write_text(f"""
[models.sft]
backend = "local"
path = "{ckpt}"
label = "SFT"
tasks = ["gp-l", "virl-l"]
decoding = {{ max_tokens = 16 }}

[models.rl]
backend = "local"
path = "{ckpt}"
label = "RL"
tasks = ["gp-l", "virl-l"]
decoding = {{ max_tokens = 16 }}
""", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_llama_dir):
    tmp = tmp_path_factory.mktemp("public-ui")
    srv, url = serve_app(tmp, _models_toml(tmp / "models.toml", tiny_llama_dir), "--public",
                         env={"SFTVSRL_ADMIN_TOKEN": ADMIN, "SFTVSRL_CPU_TIMEOUT_S": "60"})
    srv.url, srv.tmp, srv.ckpt = url, tmp, tiny_llama_dir
    yield srv
    srv.stop()


def _client(server, source_ip: str = "127.0.0.1") -> httpx.Client:
    return httpx.Client(base_url=server.url, trust_env=False, timeout=300,
                        transport=httpx.HTTPTransport(local_address=source_ip))


def api_game(server, source_ip: str = "127.0.0.5") -> dict:
    """A human game started over the API by another client (its episode id and token)."""
    with _client(server, source_ip) as c:
        r = c.post("/api/episodes", json={"task": "gp-l", "instance": {"deal_id": "HKC5D2C4"},
                                          "participants": [{"human": True, "name": "alice"}]})
        assert r.status_code == 201, r.text
        game = r.json()
        # a move, so the stored episode has a step to read and export
        eid = game["episodes"][0]["episode_id"]
        assert c.post(f"/api/episodes/{eid}/submit", json={"text": "1+2"},
                      headers={"X-Game-Token": game["token"]}).status_code == 200
        assert c.post(f"/api/episodes/{eid}/cancel", headers={"X-Game-Token": game["token"]}).status_code == 200
        return {"episode_id": eid, "group_id": game["group_id"], "token": game["token"]}


def _runs(server) -> list[dict]:
    with _client(server) as c:
        return c.get("/api/evaluations").json()


def _shown_ids(outputs: dict) -> list[str]:
    """Episode ids an Inspect listing put on the page (its replay choices)."""
    pick = outputs.get("inspect-pick") or {}
    choices = pick.get("choices") if isinstance(pick, dict) else None
    return [c[1] for c in choices or []]


def _run_models_as(v: Visitor, deal: str = "HKC5D2C4") -> list[str]:
    """A queue-API visitor deals a hand and runs both models on it; its new episode ids."""
    dealt = v.fire("gp-deal", values={"gp-seed": "3", "gp-target": "24"})
    assert dealt["success"], dealt["raw"]
    ran = v.fire("gp-run", values={"gp-model-pick": ["sft", "rl"]})
    assert ran["success"], ran["raw"]
    cols = " ".join(text_of(ran["outputs"].get(f"gp-col-{i}")) for i in range(2))
    ids = sorted(set(re.findall(r"tab=inspect&(?:amp;)?episode=([A-Za-z0-9_-]+)", cols)))
    assert len(ids) == 2, cols[:2000]
    assert len(v.tokens) == 1   # the page keeps the game's token
    return ids


# ------------------------------------------------------------------ queue API: every tab
def test_queue_api_evaluate_needs_the_operator_token_and_is_bounded(server):
    before = len(_runs(server))
    with Visitor(server.url, source_ip="127.0.0.21") as mallory:
        for values in ({"eval-episodes": 1_000_000, "eval-models": ["sft", "rl"]},
                       {"eval-episodes": 5, "eval-models": ["sft"]},
                       {"eval-episodes": 5, "eval-models": ["sft"], "eval-operator-token": "guess"}):
            out = mallory.fire("eval-run", values=values)
            shown = text_of(out["outputs"].get("eval-progress")) + json.dumps(out["raw"].get("output"))
            assert "operator" in shown or "maximum" in shown.lower(), shown[:500]
        # with the operator token the size is still bounded
        big = mallory.fire("eval-run", values={"eval-episodes": 1_000_000, "eval-operator-token": ADMIN})
        shown = text_of(big["outputs"].get("eval-progress")) + json.dumps(big["raw"].get("output"))
        assert "10,000" in shown or "10000" in shown, shown[:500]
        # nor can a visitor stop what it did not start (Stop acts on the page's own run only)
        stopped = mallory.fire("eval-stop")
        assert stopped["success"]
    assert len(_runs(server)) == before   # nothing was started


def test_queue_api_inspect_shows_only_the_visitors_own_games(server):
    theirs = api_game(server)
    with Visitor(server.url, source_ip="127.0.0.22") as mallory:
        listed = mallory.fire("inspect-refresh")
        assert theirs["episode_id"] not in _shown_ids(listed["outputs"])
        # a forged token (right group, wrong signature) opens nothing
        mallory.tokens = [f"{theirs['group_id']}.{'0' * 32}"]
        assert theirs["episode_id"] not in _shown_ids(mallory.fire("inspect-refresh")["outputs"])
        # the deep link to it says whose it is and shows nothing
        linked = mallory.fire("load", output="inspect-summary", query=f"tab=inspect&episode={theirs['episode_id']}")
        assert "another visitor" in text_of(linked["outputs"]["inspect-summary"])
        assert _shown_ids(linked["outputs"]) == []
        # picking it by id replays nothing (Gradio refuses a value its dropdown did not offer)
        picked = mallory.fire("inspect-pick", "change", values={"inspect-pick": theirs["episode_id"]})
        assert not picked["success"] or "alice" not in text_of(picked["outputs"].get("inspect-replay"))
        # exporting: nothing of theirs was shown, so nothing of theirs is exported
        for button in ("inspect-export-jsonl", "inspect-export-md", "inspect-export-zip"):
            for pick in (theirs["episode_id"], None):
                out = mallory.fire(button, values={"inspect-pick": pick})
                assert not out["success"] or "Nothing to export" in text_of(out["outputs"].get("inspect-summary"))
                assert not (out["outputs"].get("inspect-download") or {}).get("value")
    # the owner's page (its token in storage) sees, opens and exports it
    with Visitor(server.url, source_ip="127.0.0.5", tokens=[theirs["token"]]) as alice:
        assert theirs["episode_id"] in _shown_ids(alice.fire("inspect-refresh")["outputs"])
        linked = alice.fire("load", output="inspect-summary", query=f"tab=inspect&episode={theirs['episode_id']}")
        assert _shown_ids(linked["outputs"]) == [theirs["episode_id"]]
        out = alice.fire("inspect-export-jsonl", values={"inspect-pick": theirs["episode_id"]})
        assert (out["outputs"].get("inspect-download") or {}).get("value"), out["raw"]


def test_queue_api_model_runs_belong_to_the_page_that_started_them(server):
    with Visitor(server.url, source_ip="127.0.0.23") as bob, Visitor(server.url, source_ip="127.0.0.24") as eve:
        mine = _run_models_as(bob)
        shown = _shown_ids(bob.fire("inspect-refresh")["outputs"])
        assert set(mine) <= set(shown)
        assert not set(mine) & set(_shown_ids(eve.fire("inspect-refresh")["outputs"]))
        # several shown episodes: a visitor's export is the one on screen (bulk export is the operator's)
        out = bob.fire("inspect-export-jsonl", values={"inspect-pick": mine[0]})
        assert "operator token" in text_of(out["outputs"].get("inspect-summary"))
        path = (out["outputs"].get("inspect-download") or {}).get("value", {})
        url = path.get("url") if isinstance(path, dict) else None
        assert url, out["raw"]
        lines = httpx.get(url, trust_env=False).text.splitlines()
        assert lines and {json.loads(line)["episode_id"] for line in lines} == {mine[0]}


def test_queue_api_show_me_the_difference_runs_as_the_page(server):
    """The talk's "Show me the difference" (issue 25) is one more way to start a model run: it goes
    through the same service layer as Run, so the game is the page's (its token kept in the page's
    storage), listed for that visitor and for nobody else."""
    with Visitor(server.url, source_ip="127.0.0.28") as carol, Visitor(server.url, source_ip="127.0.0.29") as eve:
        dealt = carol.fire("gp-deal", values={"gp-seed": "3", "gp-rule": "face_jqk"})
        assert dealt["success"], dealt["raw"]
        picked, ran = carol.fire_chain("gp-difference")
        assert picked["success"], picked["raw"]
        assert 'data-direction="' in text_of(picked["outputs"].get("gp-difference-note"))
        assert ran["success"], ran["raw"]
        cols = " ".join(text_of(ran["outputs"].get(f"gp-col-{i}")) for i in range(2))
        mine = sorted(set(re.findall(r"tab=inspect&(?:amp;)?episode=([A-Za-z0-9_-]+)", cols)))
        assert len(mine) == 2, cols[:2000]
        assert len(carol.tokens) == 1   # the page keeps the game's token
        assert set(mine) <= set(_shown_ids(carol.fire("inspect-refresh")["outputs"]))
        assert not set(mine) & set(_shown_ids(eve.fire("inspect-refresh")["outputs"]))


def test_queue_api_other_tabs_follow_the_same_rules(server):
    with Visitor(server.url, source_ip="127.0.0.25") as v:
        # 24 Points: an unreachable target is refused at once; a rare one is dealt (the CPU pool)
        refused = v.fire("gp-deal", values={"gp-seed": "1", "gp-target": "461"})
        assert "no four cards make 461" in text_of(refused["outputs"].get("gp-error"))
        rare = v.fire("gp-deal", values={"gp-seed": "1", "gp-target": "577"})
        assert rare["success"] and "577" in json.dumps(rare["outputs"])
        # V-IRL: a server path as the route source is refused
        virl = v.fire("virl-start", values={"virl-source": "/etc", "virl-route": "1"})
        shown = text_of(virl["outputs"].get("virl-error")) + json.dumps(virl["raw"].get("output"))
        assert "not allowed" in shown or "not in the list" in shown.lower() or not virl["success"], shown[:400]
        # Findings: the view renders (no policy beyond reading)
        assert v.fire("findings-task", "input", values={"findings-task": "gp-l"})["success"]
        # Models: no absolute server paths for a visitor
        health = text_of(v.fire("models-refresh")["outputs"]["models-health"])
        assert "sft" in health and str(server.ckpt) not in health and str(server.tmp) not in health


# ------------------------------------------------------------------------- the REST side
def test_api_models_show_no_absolute_paths_without_the_operator_token(server):
    with _client(server) as c:
        public = c.get("/api/models").text
        operator = c.get("/api/models", headers={"Authorization": f"Bearer {ADMIN}"}).text
    assert str(server.ckpt) not in public and server.ckpt.name in public
    assert str(server.ckpt) in operator


def test_security_headers_on_every_kind_of_response(server):
    with _client(server) as c:
        responses = [c.get("/"), c.get("/api/health"), c.get("/docs"), c.get("/config"), c.get("/api/nope"),
                     c.post("/api/gp/verify", content=b'{"deal_id": "HKC5D2C4", "formula": NaN}',
                            headers={"content-type": "application/json"}),
                     c.post("/api/gp/verify", content=b"x" * 100_000, headers={"content-type": "application/json"})]
    assert [r.status_code for r in responses] == [200, 200, 200, 200, 404, 422, 413]
    for r in responses:
        csp = r.headers.get("content-security-policy", "")
        assert "frame-ancestors 'none'" in csp and "default-src 'self'" in csp, (r.url, r.headers)
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "no-referrer"


@pytest.mark.parametrize("ctype", ["application/json", "application/json; charset=utf-8",
                                   "application/merge-patch+json", "application/vnd.api+json",
                                   "APPLICATION/JSON", None])
@pytest.mark.parametrize("raw", ['{"deal_id": "HKC5D2C4", "formula": NaN}',
                                 '{"deal_id": "HKC5D2C4", "formula": "\\ud800"}',
                                 '{"deal_id": "HKC5D2C4", "formula": "1", "x": -Infinity}'])
def test_json_guard_covers_every_json_content_type(server, ctype, raw):
    headers = {"content-type": ctype} if ctype else {}
    with _client(server) as c:
        for path in ("/api/gp/verify", "/api/episodes", "/api/evaluations"):
            r = c.post(path, content=raw.encode(), headers=headers)
            assert r.status_code == 422 and r.json()["detail"], (path, ctype, r.status_code, r.text[:200])


def test_tokens_never_reach_the_access_log(server):
    game = api_game(server, "127.0.0.26")
    with _client(server, "127.0.0.26") as c:
        with c.stream("GET", f"/api/groups/{game['group_id']}/events", params={"token": game["token"]}) as s:
            assert s.status_code == 200
            for _ in s.iter_lines():
                pass
    log = (server.tmp / "server.log").read_text(errors="replace")
    assert f"/api/groups/{game['group_id']}/events?token=***" in log
    assert game["token"].split(".")[1] not in log


def test_store_files_are_private(server):
    files = [p for p in (server.tmp / "data").iterdir() if p.name.startswith("playground.db") or p.name == ".secret"]
    assert any(p.name == "playground.db" for p in files)
    assert all(p.stat().st_mode & 0o077 == 0 for p in files), [(p.name, oct(p.stat().st_mode)) for p in files]


# ------------------------------------------------------------------ fair CPU sharing (HTTP)
LENIENT_FLOOD = json.dumps({"deal_id": "HKC5D2C4", "reply": '"cards": [' * 1638, "lenient": True})


def test_a_flood_of_slow_verifies_leaves_a_bystanders_deals_answered(server):
    """24 concurrent lenient verifies of the largest reply (and 1200-px renders, which really are
    slow) from one client, in a loop until a bystander on another address has had its deals and a
    pooled computation answered: every answer is a 200, none a 5xx. No clock is read."""

    async def go():
        done = asyncio.Event()
        flood_codes: list[int] = []
        mine: list[int] = []
        flooder = httpx.AsyncClient(base_url=server.url, trust_env=False, timeout=300,
                                    transport=httpx.AsyncHTTPTransport(local_address="127.0.0.31"),
                                    limits=httpx.Limits(max_connections=30))
        bystander = httpx.AsyncClient(base_url=server.url, trust_env=False, timeout=300,
                                      transport=httpx.AsyncHTTPTransport(local_address="127.0.0.32"))

        async def flood(i: int) -> None:
            while not done.is_set() or len(flood_codes) < 48:
                if i % 4 == 0:
                    r = await flooder.get("/api/gp/deals/HKC5D2C4/image.png", params={"resolution": 1200})
                else:
                    r = await flooder.post("/api/gp/verify", content=LENIENT_FLOOD,
                                           headers={"content-type": "application/json"})
                flood_codes.append(r.status_code)

        async def bystand() -> None:
            while len(flood_codes) < 24:     # the flood is under way
                await asyncio.sleep(0)
                await asyncio.sleep(0.01)    # yield to the flood (not a measurement)
            for seed in range(20):
                mine.append((await bystander.get("/api/gp/deal", params={"seed": seed})).status_code)
            # a computation that goes to the pool too: a fresh hand's solutions, a rare target
            mine.append((await bystander.get("/api/gp/deals/D7S5C2C9/solutions")).status_code)
            mine.append((await bystander.get("/api/gp/deal", params={"seed": 5, "target": 577})).status_code)
            done.set()

        await asyncio.gather(bystand(), *(flood(i) for i in range(24)))
        await flooder.aclose()
        await bystander.aclose()
        return flood_codes, mine

    flood_codes, mine = asyncio.run(go())
    assert mine == [200] * 22
    assert flood_codes and all(code == 200 for code in flood_codes), sorted(set(flood_codes))


# ---------------------------------------------------------- the largest evaluation starts
def test_the_largest_allowed_evaluation_starts_while_the_server_answers(server):
    """Its instance lists (10,000 hands per split) are built off the event loop: health checks
    sent after the start request are all answered before it returns."""
    headers = {"Authorization": f"Bearer {ADMIN}"}

    async def go():
        async with httpx.AsyncClient(base_url=server.url, trust_env=False, timeout=300) as c:
            start = asyncio.create_task(c.post("/api/evaluations", headers=headers,
                                               json={"task": "gp-l", "models": ["sft", "rl"], "episodes": 10_000}))
            health, answered_first = [], 0
            while not start.done() and len(health) < 20:
                health.append((await c.get("/api/health")).status_code)
                answered_first += not start.done()   # answered while the start was still building
            run = (await start).json()
            cancel = await c.post(f"/api/evaluations/{run['id']}/cancel", headers=headers)
            return health, answered_first, run, cancel.status_code

    health, answered_first, run, cancelled = asyncio.run(go())
    assert run["total"] == 10_000 * 2 * len(protocol.splits("gp-l")) and cancelled == 200
    assert health and set(health) == {200}
    assert answered_first >= 1, "no health check was answered while the evaluation was starting"


# ------------------------------------------------------------------------ real browser
def _watch_console(pg) -> list[str]:
    problems: list[str] = []
    pg.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: problems.append(str(e)))
    return problems


def _csp_violations(messages: list[str]) -> list[str]:
    return [m for m in messages if "Content Security Policy" in m or "Refused to" in m]


@pytest.mark.browser
def test_browser_every_tab_works_under_the_csp(page, server):
    console = _watch_console(page)
    page.goto(server.url + "/?tab=gp&deal=HKC5D2C4")
    page.wait_for_selector("#gp-hand .sv-hand", state="attached")
    page.fill("#gp-formula input", "(10+2*5)+4")
    page.click("#gp-check")
    page.wait_for_selector("#gp-verdict [data-outcome='correct']")
    page.click("#tab-virl-button")
    page.click("#virl-start")
    page.wait_for_selector("#virl-instructions li", state="attached")
    page.click("#tab-findings-button")
    page.wait_for_selector("#findings-view *", state="attached")
    page.click("#tab-inspect-button")
    page.wait_for_function("/episodes? match/.test(document.querySelector('#inspect-summary')?.innerText || '')")
    page.click("#tab-evaluate-button")
    page.wait_for_selector("#eval-public-note")
    page.click("#tab-models-button")
    page.wait_for_function("document.querySelector('#models-health')?.innerText.includes('healthy')")
    page.goto(server.url + "/docs")
    page.wait_for_selector(".swagger-ui .opblock", state="attached")
    page.goto(server.url + "/redoc")
    page.wait_for_selector("redoc *, [role=navigation], .menu-content", state="attached")
    assert not _csp_violations(console), console


@pytest.mark.browser
def test_browser_visitors_see_only_their_own_games(browser, server):
    theirs = api_game(server, "127.0.0.6")
    ctx_a, ctx_b = browser.new_context(), browser.new_context()   # two visitors, two storages
    try:
        a, b = ctx_a.new_page(), ctx_b.new_page()
        for pg in (a, b):
            pg.set_default_timeout(300_000)
        a.goto(server.url + "/?tab=gp&deal=SAHQDQS5")
        a.wait_for_selector("#gp-hand .sv-hand", state="attached")
        a.click("#gp-run")
        for col in ("#gp-col-0", "#gp-col-1"):
            a.wait_for_selector(f"{col} .sv-col[data-done='true']")
        href = a.locator("#gp-col-0 a[href*='episode=']").get_attribute("href")
        episode = href.split("episode=")[1].split("&")[0]
        # A lists and opens its own game (also after a reload: the token is in the browser)
        a.goto(server.url + "/?tab=inspect")
        a.wait_for_function("/episodes? match/.test(document.querySelector('#inspect-summary')?.innerText || '')")
        table_a = a.inner_text("#inspect-table")
        assert episode[:8] in table_a and theirs["episode_id"][:8] not in table_a
        a.goto(server.url + f"/?tab=inspect&episode={episode}")
        a.wait_for_function("/^1 episode match/.test(document.querySelector('#inspect-summary')?.innerText.trim() || '')")
        a.wait_for_selector("#inspect-replay .sv-step", state="attached")
        # B: the same link says it is somebody else's; B's listing has neither game
        b.goto(server.url + f"/?tab=inspect&episode={episode}")
        b.wait_for_function("document.querySelector('#inspect-summary')?.innerText.includes('another visitor')")
        assert episode[:8] not in b.inner_text("#inspect-table")
        b.goto(server.url + "/?tab=inspect")
        b.wait_for_function("/episodes? match/.test(document.querySelector('#inspect-summary')?.innerText || '')")
        table_b = b.inner_text("#inspect-table")
        assert episode[:8] not in table_b and theirs["episode_id"][:8] not in table_b
        # B's export has nothing of A's
        b.click("#inspect-export-jsonl")
        b.wait_for_function("document.querySelector('#inspect-summary')?.innerText.length > 0")
        if b.locator("#inspect-download a").count():
            data = httpx.get(b.locator("#inspect-download a").first.get_attribute("href"), trust_env=False).text
            assert episode not in data and theirs["episode_id"] not in data
    finally:
        ctx_a.close()
        ctx_b.close()


@pytest.mark.browser
def test_browser_evaluate_needs_the_operator_token(page, server):
    before = len(_runs(server))
    page.goto(server.url + "/?tab=evaluate")
    page.wait_for_selector("#eval-public-note")
    assert "operator" in page.inner_text("#eval-public-note")
    page.fill("#eval-episodes input", "1")
    page.click("#eval-run")
    page.wait_for_function("document.querySelector('#eval-progress')?.innerText.includes('operator token')")
    assert len(_runs(server)) == before
    page.fill("#eval-operator-token input", ADMIN)   # the operator, in the same page
    page.click("#eval-run")
    page.wait_for_selector("#eval-progress [data-status='finished'], #eval-progress [data-status='incomplete']")
    assert len(_runs(server)) == before + 1

