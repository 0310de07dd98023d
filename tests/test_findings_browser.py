"""Browser test of the Findings tab: a real `sftvsrl serve` on loopback, Debian's Chromium via
Playwright. It opens the Findings view (the quick-pipeline fixture in tests/fixtures/findings),
checks the five-way table, the bars and the paper's numbers, follows a bar into Inspect where that
stage's episodes are listed, switches the view to V-IRL-L (its three splits, per-step accuracy)
and follows one of its bars into Inspect, and checks that the pipeline's extra models are offered
but not ticked.
A failed test leaves a screenshot in tests/artifacts/; the page must fetch nothing from outside loopback."""
from __future__ import annotations

import json
import shutil
from urllib.parse import parse_qs, urlparse

import pytest

from browsing import browser, page, playwright, profile, require_browser, serve_app  # noqa: F401 (fixtures)
from conftest import ROOT

FIXTURE = ROOT / "tests" / "fixtures" / "findings"
pytestmark = pytest.mark.browser
require_browser()


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_llama_dir):
    tmp = tmp_path_factory.mktemp("findings-ui")
    shutil.copytree(FIXTURE, tmp / "findings")
    models = "\n".join(f'[models.{name}]\nbackend = "local"\npath = "{tiny_llama_dir}"\ntasks = ["gp-l"]\n'
                       for name in ("sft", "rl", "init", "sft-diverse"))
    (tmp / "models.toml").write_text(models, encoding="utf-8")
    server, url = serve_app(tmp, tmp / "models.toml",
                            env={"SFTVSRL_FINDINGS_DIR": str(tmp / "findings"),
                                 "SFTVSRL_CPU_TIMEOUT_S": "120"})  # a busy machine
    yield url
    server.stop()


def _wait_for_episode_count(page, n: int) -> None:
    # the expected count itself is the condition waited for (Gradio may still overlay a queue status)
    page.wait_for_function("n => new RegExp('^' + n + ' episodes? match').test("
                           "document.querySelector('#inspect-summary')?.innerText.trim() ?? '')", arg=n)


def _bar_into_inspect(page, task: str, findings: dict, stage: str, split: str) -> list[str]:
    """Click `stage`'s bar on `split`: Inspect opens on that findings run, stage and split and
    lists exactly its episodes; returns the table's cells."""
    n = findings["table"][stage][split]["n"]
    page.locator(f'[data-testid="bar-{stage}-{split}"]').click()
    page.wait_for_url("**tab=inspect**")
    q = parse_qs(urlparse(page.url).query)
    assert q["model"] == [stage] and q["split"] == [split] and q["run"][0].startswith(f"findings-{task}-")
    _wait_for_episode_count(page, n)
    cells = [c.strip() for c in page.inner_text("#inspect-table").splitlines()]
    assert cells.count(task) == n
    return cells


def test_findings_view_and_a_bar_into_inspect(page, served):
    findings = json.loads((FIXTURE / "gp-l" / "findings.json").read_text(encoding="utf-8"))
    page.goto(served + "/?tab=findings")  # the tab's link (also what the tab writes when clicked)
    page.wait_for_selector("#findings-root")
    rows = page.locator("#findings-table tbody tr")
    assert rows.count() == 5
    assert [rows.nth(i).get_attribute("data-stage") for i in range(5)] == ["base", "init", "sft", "rl", "sft-diverse"]
    sft_id = findings["table"]["sft"]["id"]
    assert f"{100 * sft_id['success']:.1f} ± {100 * sft_id['se']:.1f} %" in page.inner_text("#findings-table")
    bars = page.inner_text("#findings-bars")
    assert "reported in the paper, Llama-3.2-11B" in bars
    for value in ("11.5 %", "3.4 %", "15.0 %"):
        assert value in bars
    assert page.locator("#findings-curves img[data-look='light']").count() == 1   # (and presenter mode's)
    assert "RL − SFT" in page.inner_text("#findings-paired")
    assert page.locator("#findings-explain li").count() >= 3

    bar = page.locator('[data-testid="bar-rl-rule-ood"]')
    assert f"{100 * findings['table']['rl']['rule-ood']['success']:.1f} %" in bar.inner_text()
    cells = _bar_into_inspect(page, "gp-l", findings, "rl", "rule-ood")
    assert "sft" not in cells and "init" not in cells
    page.wait_for_function("document.querySelector('#inspect-replay')?.innerText.includes('rl')")


def test_findings_link_before_the_view_was_opened(page, served):
    """A shared Inspect link of a findings bar works on a fresh page (the import runs on demand)."""
    from app import findings as fd

    f = fd.load("gp-l", FIXTURE)
    page.goto(served + "/" + fd.inspect_link(f.run_id, "sft-diverse", "id"))
    _wait_for_episode_count(page, f.data["table"]["sft-diverse"]["id"]["n"])


def test_switch_to_virl_and_a_bar_into_inspect(page, served):
    """The task selector (only tasks with findings: here both) redraws the view for V-IRL-L, puts
    the task in the link, and a V-IRL-L bar opens its episodes in Inspect, where one replays."""
    findings = json.loads((FIXTURE / "virl-l" / "findings.json").read_text(encoding="utf-8"))
    page.goto(served + "/?tab=findings")
    page.wait_for_selector('#findings-root[data-task="gp-l"]')
    options = page.locator("#findings-task label")
    assert [options.nth(i).inner_text().strip() for i in range(options.count())] == ["GP-L", "V-IRL-L", "GP-VL"]
    # Back to the tab from another: the drawn view stays (the page never posts it back: with its
    # inline charts it is larger than a request body may be, which once showed an Error here)
    page.click("#tab-inspect-button")
    page.wait_for_url("**tab=inspect**")
    page.click("#tab-findings-button")   # (the select event's Error would block the next click)
    page.locator("#findings-task label", has_text="V-IRL-L").click()
    page.wait_for_selector('#findings-root[data-task="virl-l"]')
    assert page.locator("#findings-task .error, #findings-view .error").count() == 0
    page.wait_for_url("**task=virl-l**")
    assert parse_qs(urlparse(page.url).query) == {"tab": ["findings"], "task": ["virl-l"]}
    groups = page.locator("#findings-bars .sv-fd-group")
    assert [groups.nth(i).get_attribute("data-split") for i in range(groups.count())] == ["id", "rule-ood", "streets"]
    bars = page.inner_text("#findings-bars")
    for text in ("absolute actions (ID)", "relative actions (rule-OOD)", "held-out streets", "Per-step accuracy",
                 "80.8 %", "1.3 %", "91.8 %"):
        assert text in bars, text
    head = page.inner_text("#findings-table thead")
    assert "held-out streets" in head and "J/Q/K" not in page.inner_text("#findings-root")
    assert "relative actions instead of compass actions" in page.inner_text("#findings-explain")
    assert page.locator("#findings-curves img[data-look='light']").count() == 1   # (and presenter mode's)

    cells = _bar_into_inspect(page, "virl-l", findings, "rl", "streets")
    assert "gp-l" not in cells and "sft" not in cells
    page.wait_for_function("document.querySelector('#inspect-replay')?.innerText.includes('bundled:helsinki')")
    assert "virl-l" in page.inner_text("#inspect-replay")


def test_virl_findings_by_link(page, served):
    """`?tab=findings&task=virl-l` opens the V-IRL-L view directly, its selector set."""
    page.goto(served + "/?tab=findings&task=virl-l")
    page.wait_for_selector('#findings-root[data-task="virl-l"]')
    page.wait_for_selector("#findings-task input[value='virl-l']:checked", state="attached")
    assert page.locator('[data-testid="bar-sft-rule-ood"]').count() == 1


def test_gp_vl_findings_recognition_and_a_red_suit_bar_into_inspect(page, served):
    """`?tab=findings&task=gp-vl`: the vision pipeline's findings in the same view — bars on the
    three splits with the paper's rule-OOD and visual-OOD numbers, a verdict per OOD split, the
    recognition table — and a visual-OOD bar opens its GP-VL episodes in Inspect."""
    findings = json.loads((FIXTURE / "gp-vl" / "findings.json").read_text(encoding="utf-8"))
    page.goto(served + "/?tab=findings&task=gp-vl")
    page.wait_for_selector('#findings-root[data-task="gp-vl"]')
    page.wait_for_selector("#findings-task input[value='gp-vl']:checked", state="attached")
    groups = page.locator("#findings-bars .sv-fd-group")
    assert [groups.nth(i).get_attribute("data-split") for i in range(groups.count())] == [
        "id", "rule-ood", "visual-ood"]
    bars = page.inner_text("#findings-bars")
    for text in ("visual-OOD (red suits, J/Q/K = 10)", "Episode success", "23.6 %", "13.7 %", "41.2 %", "14.2 %"):
        assert text in bars, text
    verdict = page.inner_text("#findings-verdict")
    assert "the flipped rule" in verdict and "red suits" in verdict   # one sentence per OOD split
    recognition = page.inner_text("#findings-recognition")
    assert "Recognition accuracy" in recognition and "SFT-diverse" in recognition

    cells = _bar_into_inspect(page, "gp-vl", findings, "rl", "visual-ood")
    assert "sft" not in cells


def test_extra_pipeline_models_are_offered_not_ticked(page, served):
    page.goto(served + "/?tab=gp")
    page.wait_for_selector("#gp-model-pick input[type=checkbox]", state="attached")
    boxes = page.locator("#gp-model-pick label")
    ticked = {boxes.nth(i).inner_text().strip(): boxes.nth(i).locator("input").is_checked()
              for i in range(boxes.count())}
    assert ticked == {"sft": True, "rl": True, "init": False, "sft-diverse": False}, ticked
