"""Issue 25 (a talk without a hitch), the parts testable without a browser: "Show me the difference"
(`app.difference`) on synthetic and shipped findings files, the registry's `split_of`, the warm
start's states (`ModelPool.warm` / `state`), Inspect's honest count past its scan limit, the
24 Points and V-IRL wording fixes, the charts' presenter look and the map's labels.
The browser side is in test_talk_browser.py."""
from __future__ import annotations

import asyncio
import gzip
import json
import threading
from pathlib import Path

import pytest

from app import difference as diff
from app import findings as fd
from conftest import ROOT
from game.tasks import get_task

SHIPPED = ROOT / "models" / "checkpoints" / "findings"


# ------------------------------------------------------------------------- show me the difference
def _write_findings(folder: Path, task: str, episodes: list[dict], stages=("sft", "rl")) -> Path:
    """A findings folder with `episodes` (stage, split, index, params, success, rewards)."""
    base = folder / task
    base.mkdir(parents=True, exist_ok=True)
    splits = sorted({e["split"] for e in episodes})
    table = {s: {sp: {"value": 0.5, "se": 0.1, "n": 1} for sp in splits} for s in stages}
    (base / fd.FINDINGS_FILE).write_text(json.dumps({"task": task, "table": table}), encoding="utf-8")
    with gzip.open(base / fd.EPISODES_FILE, "wt", encoding="utf-8") as f:
        for e in episodes:
            steps = [{"output": "x", "reward": r, "outcome": "correct" if r > 0 else "wrong_value"}
                     for r in e.get("rewards", [5.0 if e["success"] else -1.0])]
            f.write(json.dumps({"stage": e["stage"], "split": e["split"], "index": e["index"], "task": task,
                                "params": e["params"], "success": e["success"], "steps": steps}) + "\n")
    return folder


def _gp(index: int, split: str = "rule-ood") -> dict:
    rule = "face_jqk" if split == "rule-ood" else "face10"
    return {"deal_id": ["HKC5D2C4", "SAHQDQS5", "CKHKH6H3", "HQS6DQH8", "D7S5C2C4"][index], "rule": rule}


def test_difference_counts_each_way_and_cycles_the_more_common_direction(tmp_path):
    # rule-OOD: RL alone solves 0, 1, 2; SFT alone solves 3; both fail 4. ID: only SFT solves.
    outcome = {0: (False, True), 1: (False, True), 2: (False, True), 3: (True, False), 4: (False, False)}
    eps = [{"stage": stage, "split": "rule-ood", "index": i, "params": _gp(i), "success": won[k]}
           for i, won in outcome.items() for k, stage in enumerate(("sft", "rl"))]
    eps += [{"stage": stage, "split": "id", "index": 0, "params": _gp(0, "id"), "success": stage == "sft"}
            for stage in ("sft", "rl")]
    folder = _write_findings(tmp_path, "gp-l", eps)
    first = diff.pick("gp-l", {"rule": "face_jqk"}, 0, folder)
    assert first.split == "rule-ood" and first.count.measure == "success" and first.count.n == 5
    assert {s: len(v) for s, v in first.count.only.items()} == {"sft": 1, "rl": 3}
    assert (first.count.both, first.count.neither) == (0, 1)
    assert first.winner.stage == "rl" and first.loser.stage == "sft"          # the more common way round
    picked = [diff.pick("gp-l", {"rule": "face_jqk"}, turn, folder).params for turn in range(4)]
    assert picked == [_gp(0), _gp(1), _gp(2), _gp(0)]                         # each click the next, cycling
    other = diff.pick("gp-l", {"rule": "face10"}, 0, folder)                    # the rule on screen picks the split
    assert other.split == "id" and other.winner.stage == "sft" and other.params == _gp(0, "id")
    assert diff.recorded_link(first, first.winner).startswith(f"?tab=inspect&run={first.run_id}&episode=")


def test_difference_tie_alternates_and_no_disagreement_is_said(tmp_path):
    eps = []
    for i, (sft, rl) in enumerate([(True, False), (False, True), (True, True)]):
        eps += [{"stage": "sft", "split": "rule-ood", "index": i, "params": _gp(i), "success": sft},
                {"stage": "rl", "split": "rule-ood", "index": i, "params": _gp(i), "success": rl}]
    folder = _write_findings(tmp_path / "tie", "gp-l", eps)
    winners = [diff.pick("gp-l", {"rule": "face_jqk"}, t, folder).winner.stage for t in range(4)]
    assert winners == ["sft", "rl", "sft", "rl"]
    same = [{"stage": s, "split": "rule-ood", "index": 0, "params": _gp(0), "success": False} for s in ("sft", "rl")]
    none = diff.pick("gp-l", {"rule": "face_jqk"}, 0, _write_findings(tmp_path / "none", "gp-l", same))
    assert none.params is None and none.winner is None and none.count.neither == 1


def test_difference_on_virl_compares_correct_moves_when_arrivals_never_differ(tmp_path):
    def route(i):
        return {"source": "bundled:helsinki", "route": i, "seed": i, "absolute_action": False}

    eps = [{"stage": "sft", "split": "rule-ood", "index": 0, "params": route(0), "success": False,
            "rewards": [1.0, 1.0, -1.0]},
           {"stage": "rl", "split": "rule-ood", "index": 0, "params": route(0), "success": False,
            "rewards": [1.0, -1.0, -1.0]},
           {"stage": "sft", "split": "rule-ood", "index": 1, "params": route(1), "success": False, "rewards": [-1.0]},
           {"stage": "rl", "split": "rule-ood", "index": 1, "params": route(1), "success": False, "rewards": [-1.0]}]
    p = diff.pick("virl-l", {"absolute_action": False}, 0, _write_findings(tmp_path, "virl-l", eps))
    assert p.count.measure == "moves" and p.winner.stage == "sft" and p.params == route(0)
    assert p.count.both == 1


def test_difference_reads_the_stages_the_default_config_names(tmp_path, monkeypatch):
    """Regenerated findings with other stage names: the stage is the default model's checkpoint
    folder without the task prefix (nothing hard-coded)."""
    import models.config as mc

    toml = tmp_path / "default.toml"
    toml.write_text('[models.sft]\nbackend = "local"\ntasks = ["gp-l"]\n[models.sft.paths]\n'
                    'gp-l = "ckpt/gp-l-sft-long"\n[models.rl]\nbackend = "local"\ntasks = ["gp-l"]\n'
                    '[models.rl.paths]\ngp-l = "ckpt/gp-l-rl-seed3"\n[models.init]\nbackend = "local"\n'
                    'optional = true\ntasks = ["gp-l"]\npath = "ckpt/gp-l-init"\n', encoding="utf-8")
    monkeypatch.setattr(mc, "DEFAULT_FILE", toml)
    sides = diff.default_sides("gp-l")
    assert [(s.model, s.stage) for s in sides] == [("sft", "sft-long"), ("rl", "rl-seed3")]
    eps = [{"stage": st, "split": "rule-ood", "index": 0, "params": _gp(0), "success": st == "rl-seed3"}
           for st in ("sft-long", "rl-seed3")]
    folder = _write_findings(tmp_path / "f", "gp-l", eps, stages=("sft-long", "rl-seed3"))
    p = diff.pick("gp-l", {"rule": "face_jqk"}, 0, folder)
    assert p.winner.stage == "rl-seed3" and p.winner.model == "rl"


@pytest.mark.parametrize("task, choice, split", [
    ("gp-l", {"rule": "face_jqk"}, "rule-ood"), ("gp-l", {"rule": "face10", "suits": "red"}, "id"),
    ("gp-vl", {"rule": "face10", "suits": "red"}, "visual-ood"), ("gp-vl", {"rule": "face10"}, "id"),
    ("gp-vl", {"rule": "face10", "deal_id": "DJDJH3DA"}, "visual-ood"), ("gp-vl", {"rule": "face_jqk"}, "rule-ood"),
    ("virl-l", {"absolute_action": False}, "rule-ood"),
    ("virl-l", {"absolute_action": True, "source": "bundled:helsinki-ood"}, "streets"),
    ("virl-vl", {"absolute_action": True, "source": "bundled:helsinki-ood"}, "visual-ood"),
    ("virl-vl", {"absolute_action": True}, "id"),
])
def test_split_of_follows_the_registry(task, choice, split):
    assert get_task(task).split_of(choice) == split


@pytest.mark.skipif(not (SHIPPED / "gp-l" / fd.EPISODES_FILE).is_file(), reason="no shipped findings")
@pytest.mark.parametrize("task, choice", [("gp-l", {"rule": "face_jqk"}), ("gp-vl", {"rule": "face_jqk"}),
                                          ("virl-l", {"absolute_action": False}),
                                          ("virl-vl", {"absolute_action": False})])
def test_difference_counts_match_the_shipped_episode_files(task, choice):
    """The counts are the file's own: recomputed here straight from the episodes file."""
    if not (SHIPPED / task / fd.EPISODES_FILE).is_file():
        pytest.skip(f"no shipped {task} findings")
    p = diff.pick(task, choice, 0)
    a, b = (s.stage for s in p.sides)
    res: dict[int, dict[str, bool]] = {}
    with gzip.open(SHIPPED / task / fd.EPISODES_FILE, "rt", encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            if r["split"] == p.split and r["stage"] in (a, b):
                res.setdefault(r["index"], {})[r["stage"]] = bool(r["success"])
    only_a = sum(1 for r in res.values() if r[a] and not r[b])
    only_b = sum(1 for r in res.values() if r[b] and not r[a])
    assert p.count.n == len(res)
    if p.count.measure == "success":
        assert (len(p.count.only[a]), len(p.count.only[b])) == (only_a, only_b)
    else:
        assert only_a == only_b == 0
    if p.params is not None:
        i = next(i for i, params in p.count.only[p.winner.stage] if params == p.params)
        assert res[i][p.winner.stage] or p.count.measure == "moves"


# -------------------------------------------------------------------------------------- warm start
class _SlowBackend:
    """A stand-in local backend whose load waits for the test, then answers every request."""

    def __init__(self, gate: threading.Event) -> None:
        self.gate, self.loaded, self.requests = gate, False, 0

    def load(self):
        self.gate.wait(30)
        self.loaded = True

    async def complete(self, messages, images=(), settings=None):
        from models.backends.base import Completion

        self.requests += 1
        return Completion(model="x", text="{}", finish_reason="stop")


def test_warm_start_states(tmp_path):
    from app.live import ModelPool
    from models.config import load_config

    toml = tmp_path / "models.toml"
    toml.write_text('[models.sft]\nbackend = "local"\npath = "a"\ntasks = ["gp-l"]\n'
                    '[models.rl]\nbackend = "local"\npath = "b"\ntasks = ["gp-l"]\n'
                    '[models.extra]\nbackend = "local"\npath = "c"\ntasks = ["gp-l"]\n', encoding="utf-8")
    pool = ModelPool(load_config(toml))
    gate = threading.Event()
    fakes = {n: _SlowBackend(gate) for n in pool.names}
    pool._backends.update({pool._key(n, "gp-l"): fakes[n] for n in pool.names})
    assert pool.defaults == ["sft", "rl"]
    assert pool.state("sft", "gp-l") == "cold"

    async def main():
        task = asyncio.create_task(pool.warm())
        while pool.state("sft", "gp-l") != "loading":  # noqa: ASYNC110 - polls the state as a client would
            await asyncio.sleep(0)
        assert pool.state("rl", "gp-l") == "loading" and pool.state("extra", "gp-l") == "cold"
        gate.set()
        await task

    asyncio.run(main())
    assert pool.state("sft", "gp-l") == pool.state("rl", "gp-l") == "ready"
    assert pool.state("extra", "gp-l") == "cold"                   # only the default models are warmed
    assert fakes["sft"].requests == fakes["rl"].requests == 1      # each answered one warm-up request
    assert fakes["extra"].requests == 0


def test_a_column_says_loading_until_its_first_token():
    from app.ui.models_panel import Column, StepView
    from game.tasks import Instance

    col = Column("sft", "SFT", 0, Instance("gp-l", {"deal_id": "HKC5D2C4", "rule": "face10"}), loading=True)
    assert "loading the model" in col.html("gp-l")
    col.steps.append(StepView(1))
    assert "loading the model" in col.html("gp-l")
    col.steps[0].text = "{"
    assert "loading the model" not in col.html("gp-l") and "generating" in col.html("gp-l")


# ---------------------------------------------------------------------------------------- inspect
def test_inspect_says_when_it_stops_at_the_newest_episodes():
    from app.ui.inspect_tab import SCAN_LIMIT, Matches, summary_text

    few = Matches([{}] * 3)
    few.total = 3
    assert summary_text(few, False) == "3 episodes match"
    many = Matches([{}] * SCAN_LIMIT)
    many.total = SCAN_LIMIT + 110
    assert summary_text(many, False) == f"{SCAN_LIMIT + 110:,} episodes match; the newest {SCAN_LIMIT:,} are " \
                                        "listed (narrow the filters to list the others)"
    narrowed = Matches([{}] * 7)
    narrowed.total = SCAN_LIMIT + 110
    assert f"among the newest {SCAN_LIMIT:,} of the {SCAN_LIMIT + 110:,}" in summary_text(narrowed, True)


# -------------------------------------------------------------------------------- 24 Points, V-IRL
def test_used_cards_cannot_be_added_twice():
    from app.ui import gp_play as play

    t = play.Table("HKC5D5C4")   # 10 5 5 4
    assert play.used_cards(t, "") == [False] * 4
    assert play.used_cards(t, "10+5") == [True, True, False, False]
    assert play.used_cards(t, "5*5") == [False, True, True, False]
    assert play.add_card(t, "10", 0) == "10"            # the same card again: nothing ("1010" before)
    assert play.add_card(t, "10", 3) == "10"            # a number right after a number: an operator first
    assert play.add_card(t, "10+", 0) == "10+"          # the card is used
    assert play.add_card(t, "10+", 1) == "10+5" and play.add_card(t, "10+5*", 1) == "10+5*"
    assert play.add_card(t, "10+5*", 2) == "10+5*5"      # the other 5 is still in the hand


@pytest.mark.parametrize("formula, verdict, words", [
    ("١٠+٥*٢+٤", "correct", "makes 24"),                       # Arabic-Indic digits read as digits
    ("１０+５*２+４", "correct", "makes 24"),                    # full-width digits too
    ("import os", "illegal_formula", "no letters or other characters"),
])
def test_formulas_in_other_scripts_and_letters_get_the_right_words(formula, verdict, words):
    from app.ui import gp_play as play

    t = play.Table("HKC5D2C4")
    html, _ = play.check_html(t, formula)
    assert f'data-outcome="{verdict}"' in html and words in html and "divides by zero" not in html
    sub = play.subtotal_html(t, formula)
    assert "Remove the spaces" not in sub
    if verdict == "correct":
        assert "= <b>24</b>" in sub


def test_a_link_with_a_bad_target_says_so():
    from app.ui import gp_play as play

    with pytest.raises(play.InputError, match="target"):
        play.table_from_link({"tab": "gp", "target": "abc"})
    assert play.table_from_link({"tab": "gp", "target": "30"}).deal.target == 30   # settings without a hand
    assert play.table_from_link({"tab": "virl", "target": "abc"}) is None          # another tab's link


def test_walking_yourself_is_told_in_plain_words():
    from app.ui import virl_play as vp

    walk = vp.new_walk("bundled:helsinki", 0, True)
    wrong = next(a for a in vp.action_choices(True) if a != vp.episode_of(walk).entry.gt_action)
    for _ in range(3):
        walk = vp.act(walk, wrong)
    log = vp.log_html(vp.episode_of(walk))
    assert "Please avoid" not in log and "[Output]" not in log
    assert "not the right move here" in log and "no tries left at this step" in log
    assert "tries left at this step" in vp.status_html(vp.episode_of(vp.new_walk("bundled:helsinki", 0, True)))


def test_model_columns_count_tries_on_gp_and_moves_on_virl():
    from app.runner import Finished, StepDone
    from app.ui.models_panel import Column, StepView
    from game.tasks import Instance

    def step(call, reward, outcome, graded=True):
        return StepDone("e", call, reward, "", outcome, graded, False, False, {})

    virl = Column("rl", "RL", 0, Instance("virl-l", {"route": 0}))
    virl.steps = [StepView(i, "x", step(i, 1.0, "correct")) for i in (1, 2, 3)]
    virl.finished = Finished("e", "finished", True, None, 3, 3.0)
    html = virl.html("virl-l")
    assert "Arrived after 3 moves" in html and "Move 1" in html and "Try" not in html
    gp = Column("sft", "SFT", 0, Instance("gp-l", {"deal_id": "HKC5D2C4", "rule": "face10"}))
    gp.steps = [StepView(i, "x", step(i, -1.0, "wrong_value")) for i in range(1, 6)]
    gp.steps.append(StepView(6, "x", step(6, -1.0, "step_limit", graded=False)))
    gp.finished = Finished("e", "finished", False, False, 6, -6.0)
    html = gp.html("gp-l")
    assert "Try 5" in html and "Try 6" not in html and "the tries were used up" in html


# ------------------------------------------------------------------------------- charts and the map
def _corner(png: bytes) -> tuple:
    import io

    from PIL import Image

    return Image.open(io.BytesIO(png)).convert("RGB").getpixel((2, 2))


def test_charts_have_a_presenter_look(tmp_path):
    from app.evaluation import plot

    summary = {"task": "gp-l", "splits": ["id", "rule-ood"], "models": ["sft", "rl"],
               "metrics": {m: {s: {"success_rate": 0.5, "success_se": 0.05} for s in ("id", "rule-ood")}
                           for m in ("sft", "rl")}}
    light = plot(summary, tmp_path / "l.png").read_bytes()
    dark = plot(summary, tmp_path / "d.png", "presenter").read_bytes()
    assert _corner(light) == (255, 255, 255) and _corner(dark) == (0, 0, 0)
    f = fd.load("gp-l", ROOT / "tests" / "fixtures" / "findings")
    assert _corner(fd.curves_plot(f, tmp_path / "c.png", "presenter").read_bytes()) == (0, 0, 0)
    from app.charts import pair_html

    html = pair_html(lambda path, look: plot(summary, path, look), "chart")
    assert 'class="sv-light-only ' in html and 'class="sv-presenter-only ' in html


def test_map_labels_do_not_overlap():
    from PIL import Image, ImageDraw

    from app.ui import virl_play as vp
    from game.virl.mapview import _labels
    from game.virl.panorama import font

    walk = vp.new_walk("bundled:helsinki", 0, True)
    ep = vp.episode_of(walk)
    data = vp.data_for(walk.source)
    places = [((100 + 3 * (i % 7), 100 + 2 * (i // 7)), p.name) for i, p in enumerate(data.features.places[:30])]
    d = ImageDraw.Draw(Image.new("RGB", (720, 720)))
    f = font(20)
    boxes = []
    for _, name, (x, y) in _labels(d, places, [(100, 100), (300, 300)], f, 720):
        l, t, r, b = d.textbbox((x, y), name, font=f)
        boxes.append((l, t, r, b))
    assert boxes
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]), (a, b)
    assert ep is not None


def test_models_tab_loaded_column_shows_no_server_paths_on_a_public_server(tmp_path):
    """The 'loaded' column (issue 25) follows the public demo's rule (issue 24): a failed warm-up's
    reason names a checkpoint path, which a visitor of a public server sees cut to its last part."""
    from types import SimpleNamespace

    from app.access import Access, Caller
    from app.live import ModelPool
    from app.ui.models_tab import listing
    from models.config import load_config

    ckpt = tmp_path / "secret-dir" / "gp-l-sft"
    toml = tmp_path / "models.toml"
    toml.write_text(f'[models.sft]\nbackend = "local"\npath = "{ckpt}"\ntasks = ["gp-l"]\n', encoding="utf-8")
    pool = ModelPool(load_config(toml))
    pool._warming[pool._key("sft", "gp-l")] = f"failed: no checkpoint at {ckpt}"
    public = SimpleNamespace(pool=pool, access=Access(b"k" * 32, public=True, admin_token="op"))
    shown = listing(public, Caller(client="198.51.100.7"))
    assert 'data-state="failed"' in shown and "gp-l-sft" in shown
    assert str(tmp_path) not in shown
    operator = listing(public, Caller(client="198.51.100.7", operator=True))
    assert f"no checkpoint at {ckpt}" in operator       # the operator sees where
