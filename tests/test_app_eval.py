"""Batch evaluation: the paper's instance lists, paired metrics and comparison, table/plot/JSONL
outputs, and `sftvsrl eval` interrupted with Ctrl-C (SIGINT) then continued with `--resume`."""
from __future__ import annotations

import asyncio
import ast
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from app.evaluation import EvalConfig, EvalError, markdown_table, run_evaluation, split_instances, write_outputs
from app.runner import ScriptedPlayer
from app.store import Store
from conftest import INTERRUPTIBLE_CLI
from models.backends.base import Completion

ROOT = Path(__file__).resolve().parents[1]


class Solver:
    """A perfect GP-L player: reads the cards from the prompt and answers with a solution."""

    kind = "model"

    def __init__(self, name: str) -> None:
        self.name = name

    async def stream(self, messages, images):
        from game.gp.cards import Rule, rank_from_label

        text = messages[0]["content"][-1]["text"]
        cards = ast.literal_eval(re.search(r"Cards: (\[.*?\])", text).group(1))
        rule = Rule.FACE10 if "count as '10'" in text else Rule.FACE_JQK
        numbers = [rule.value_of(rank_from_label(c)) for c in cards]
        from game.gp.solver import reference_solutions

        formula = reference_solutions(numbers, 24)[0]
        yield Completion(model=self.name, text=json.dumps({"cards": cards, "number": numbers, "formula": formula}),
                         finish_reason="stop")


def test_instances_follow_the_paper():
    gp = EvalConfig(task="gp-l", models=["a"])
    ids = [split_instances(gp, s) for s in gp.split_objs()]
    assert [len(x) for x in ids] == [234, 234, 234]      # id, rule-ood, and the wording control
    assert ids[0][0].params == {"deal_id": "HKC5D2C4", "rule": "face10"}
    # the control: the ID hands (those with a face card), the ID rule stated in held-out words
    assert ids[2][0].params["rule"] == "face10" and ids[2][0].params["rule_text"]
    assert ids[1][0].params["rule"] == "face_jqk" and ids[1][0].params["deal_id"].startswith("HQC2H7D6")
    vl = EvalConfig(task="gp-vl", models=["a"], episodes=2)
    assert [s.name for s in vl.split_objs()] == ["id", "rule-ood", "visual-ood"]
    red = split_instances(vl, vl.split_objs()[2])
    assert all(c in "HD" for i in red for c in i.params["deal_id"][0::2][:4])
    recog = EvalConfig(task="gp-vl", models=["a"], episodes=1, recognition=True)
    assert split_instances(recog, recog.split_objs()[0])[0].params["enable_verification"] is False
    assert recog.key != vl.key
    virl = EvalConfig(task="virl-vl", models=["a"])
    sizes = {s.name: len(split_instances(virl, s)) for s in virl.split_objs()}
    assert sizes == {"id": 48, "rule-ood": 48, "visual-ood": 18}
    assert not split_instances(virl, virl.split_objs()[1])[0].params["absolute_action"]
    with pytest.raises(EvalError, match="unknown split"):
        EvalConfig(task="gp-l", models=["a"], splits=["visual-ood"])


def test_paired_metrics_table_plot_and_jsonl(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'e.db'}")
    config = EvalConfig(task="gp-l", models=["good", "bad"], episodes=4, concurrency=3)

    def players(name):
        return Solver(name) if name == "good" else ScriptedPlayer(name, ["nope"] * 6)

    run_id = asyncio.run(run_evaluation(store, players, config))
    summary = write_outputs(store, run_id, tmp_path / "out")
    good, bad = summary["metrics"]["good"], summary["metrics"]["bad"]
    assert good["id"]["success_rate"] == 1.0 and good["id"]["episodes"] == 4 and good["id"]["success_se"] == 0
    assert bad["rule-ood"]["success_rate"] == 0.0 and bad["rule-ood"]["outcome_rates"]["step_limit"] == 1 / 6
    assert bad["id"]["reference_rates"] == {"CORRECT_SOLUTION": 0.0, "ILLEGAL_FORMULA": 5 / 6, "NO_SOLUTION": 1 / 6}
    assert good["id"]["reference_rates"]["CORRECT_SOLUTION"] == 1.0
    assert summary["paired"][0] == {"split": "id", "a": "good", "b": "bad", "n": 4, "both": 0, "only_a": 4,
                                    "only_b": 0, "neither": 0}
    table = markdown_table(summary)
    assert "| good | 100.0 ± 0.0 (n=4) | 100.0 ± 0.0 (n=4) |" in table
    assert (tmp_path / "out" / "plot.png").read_bytes()[:4] == b"\x89PNG"
    lines = (tmp_path / "out" / "bad__id.jsonl").read_text().splitlines()
    assert len(lines) == 4 * 6
    first = json.loads(lines[0])
    assert first["sample_id"] == 0 and first["veri_step"] == 0 and first["info"]["Verify Info"]
    assert store.get_run(run_id)["status"] == "finished"


def test_virl_metrics_are_per_step(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'v.db'}")
    config = EvalConfig(task="virl-l", models=["m"], episodes=2, splits=["id"])
    run_id = asyncio.run(run_evaluation(store, lambda n: ScriptedPlayer(n, ["x"] * 9), config))
    m = write_outputs(store, run_id, tmp_path / "o")["metrics"]["m"]["id"]
    assert m["steps"] == 6 and m["per_step_accuracy"] == 0 and m["outcome_rates"]["budget_exceeded"] == 1 / 3


@pytest.fixture(scope="module")
def eval_dir():
    import shutil
    import tempfile

    from models.tiny import build_tiny_llama

    root = Path(tempfile.mkdtemp(prefix="sftvsrl-eval-"))
    ckpt = build_tiny_llama(root / "tiny", seed=0)
    text = "".join(f'[models.{n}]\nbackend = "local"\npath = "{ckpt}"\n[models.{n}.decoding]\nmax_tokens = 24\n'
                   f'temperature = 0.0\n\n' for n in ("sft", "rl"))
    (root / "models.toml").write_text(text)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _cli(root: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "app.cli", "eval", "--task", "gp-l", "--models", "sft", "rl", "--episodes", "6",
            "--splits", "id", "--concurrency", "2", "--config", str(root / "models.toml"),
            "--data-dir", str(root / "data"), *extra]


class GatedUpstream:
    """A controlled OpenAI-compatible upstream on loopback (a real HTTP server, stdlib) for the
    Ctrl-C test: it answers the first `open_for` chat requests at once with a wrong GP-L reply,
    then holds every further request until `release()`. Once a request is held the evaluation
    cannot finish, so the test's Ctrl-C always lands mid-run, however loaded the machine is."""

    def __init__(self, open_for: int) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.open_for, self.served, self.held = open_for, 0, 0
        self.cond, self.gate = threading.Condition(), threading.Event()
        gate = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _send(self, code: int, body: bytes, kind: str) -> None:
                self.send_response(code)
                self.send_header("content-type", kind)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                self._send(200, json.dumps({"data": [{"id": "gate"}]}).encode(), "application/json")

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                with gate.cond:
                    hold = gate.served >= gate.open_for and not gate.gate.is_set()
                    gate.held += hold
                    gate.served += not hold
                    gate.cond.notify_all()
                if hold:
                    gate.gate.wait()
                chunk = {"choices": [{"index": 0, "delta": {"content": "nope"}, "finish_reason": "stop"}]}
                body = (b"data: " + json.dumps(chunk).encode() + b"\n\ndata: [DONE]\n\n")
                try:
                    self._send(200, body, "text/event-stream")
                except OSError:
                    pass                      # the client is gone (interrupted): nothing to answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_held(self, proc) -> None:
        """Until a request is held (or the process `proc` has exited: the caller then reports it)."""
        with self.cond:
            while not self.held and proc.poll() is None:
                self.cond.wait(1.0)           # wakes on every request; the 1 s only re-checks proc

    def release(self) -> None:
        self.gate.set()

    def close(self) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()


def test_eval_cli_interrupted_then_resumed(tmp_path):
    """Ctrl-C mid-run, then `--resume`. The models sit behind `GatedUpstream`: 12 episodes of
    wrong replies need at least 60 calls; the gate answers 40 (enough to finish some episodes),
    then holds the rest, so the interrupt is certain to land before the run ends."""
    upstream = GatedUpstream(open_for=40)
    try:
        _interrupt_and_resume(tmp_path, upstream)
    finally:
        upstream.close()


def _interrupt_and_resume(root: Path, upstream: GatedUpstream) -> None:
    (root / "models.toml").write_text("".join(
        f'[models.{n}]\nbackend = "openai"\nbase_url = "{upstream.url}"\nread_timeout_s = 3600\n\n'
        for n in ("sft", "rl")))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("DATABASE_URL", None)
    # Ctrl-C must reach the CLI even when this test itself runs with SIGINT ignored
    interruptible = [*INTERRUPTIBLE_CLI, *_cli(root)[3:]]
    proc = subprocess.Popen(interruptible, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    db = root / "data" / "playground.db"
    upstream.wait_held(proc)             # from now on the run cannot finish until the gate opens
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)      # Ctrl-C
    out, err = proc.communicate()
    assert proc.returncode == 130, err
    assert "--resume" in err
    upstream.release()
    store = Store(f"sqlite:///{db}")
    before = {e["id"]: e for e in store.list_episodes(limit=100)}
    assert any(e["status"] != "finished" for e in before.values()) or len(before) < 12
    run = store.list_runs()[0]
    assert run["status"] == "interrupted" and run["done"] < run["total"] == 12

    done = subprocess.run(_cli(root, "--resume", "--quiet"), env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "resuming run" in done.stderr and "| sft |" in done.stdout and "paired comparison" in done.stdout
    after = store.run_episodes(run["id"])
    assert len(after) == 12 and all(e["status"] == "finished" for e in after)
    keys = {(e["eval_split"], e["eval_index"], e["participant"]) for e in after}
    assert len(keys) == 12  # nothing ran twice
    for eid, e in before.items():  # finished episodes were kept as they were, the rest continued
        now = next(a for a in after if a["id"] == eid)
        if e["status"] == "finished":
            assert now["n_steps"] == e["n_steps"] and now["finished_at"] == e["finished_at"]
        else:
            assert now["n_steps"] >= e["n_steps"]
    out_dir = root / "data" / "eval" / run["id"]
    assert (out_dir / "plot.png").exists() and (out_dir / "table.md").exists()
    assert store.get_run(run["id"])["status"] == "finished"
    # replay and bundle the run without a model
    rep = subprocess.run([sys.executable, "-m", "app.cli", "episodes", "--data-dir", str(root / "data"), "replay",
                          "--run", run["id"]], env=env, capture_output=True, text=True)
    assert rep.returncode == 0 and rep.stdout.count("== ") == 12 and "call 6" in rep.stdout
    zpath = root / "run.zip"
    exp = subprocess.run([sys.executable, "-m", "app.cli", "episodes", "--data-dir", str(root / "data"), "export",
                          "--run", run["id"], "--format", "bundle", "-o", str(zpath)], env=env, capture_output=True,
                         text=True)
    assert exp.returncode == 0, exp.stderr
    import zipfile

    names = zipfile.ZipFile(zpath).namelist()
    assert {"replay.html", "episodes.json", "steps.jsonl", "table.md", "plot.png"} <= set(names)


def test_play_cli_human_against_a_model(eval_dir):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("DATABASE_URL", None)
    r = subprocess.run([sys.executable, "-m", "app.cli", "play", "--human", "--models", "sft", "--config",
                        str(eval_dir / "models.toml"), "--data-dir", str(eval_dir / "play")],
                       input="10*2+4\n10+5*2+4\n", env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "[you] call 2: correct (+5)" in r.stdout and "[sft] finished" in r.stdout
    store = Store(f"sqlite:///{eval_dir / 'play' / 'playground.db'}")
    eps = store.list_episodes()
    assert {e["participant"] for e in eps} == {"you", "sft"} and len({e["group_id"] for e in eps}) == 1
    bad = subprocess.run([sys.executable, "-m", "app.cli", "play", "--human", "--deal", "XX"], env=env,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "malformed deal id" in bad.stderr and "Traceback" not in bad.stderr


def test_release_folders_are_used_when_present(tmp_path):
    from app.evaluation import release_sources

    assert release_sources(tmp_path, env={}) == {}
    (tmp_path / "VLN_mini").mkdir()
    assert release_sources(tmp_path, env={}) == {"ood": str(tmp_path / "VLN_mini")}
    assert release_sources(tmp_path, env={"SFTVSRL_VIRL_RELEASE": "/r"})["id"] == "/r"


def test_a_researchers_phrasings_reword_the_control_split(tmp_path):
    """`sftvsrl eval --phrasings FILE`: the reworded split states the ID rule in the file's words
    (hand i in line i mod N), every other split is untouched; bad input is a clear error."""
    from app.cli import main as cli_main
    from game.tasks import open_session

    mine = ["each of J, Q and K scores exactly 10 points", "take J, Q and K as tens"]
    config = EvalConfig(task="gp-l", models=["m"], splits=["id", "reworded"], episodes=4, phrasings=mine)
    by_split = {s.name: split_instances(config, s) for s in config.split_objs()}
    for i, inst in enumerate(by_split["reworded"]):
        assert inst.params["rule_text"] == mine[i % 2]
        prompt = open_session(inst).prompt()
        assert mine[i % 2] in prompt and "count as '10'" not in prompt
    # the control is paired with the ID hands; ID itself keeps the paper's sentence
    assert [i.params["deal_id"] for i in by_split["reworded"]] == [i.params["deal_id"] for i in by_split["id"]]
    assert all("rule_text" not in i.params for i in by_split["id"])
    with pytest.raises(EvalError, match="has none"):
        EvalConfig(task="virl-l", models=["m"], phrasings=mine)
    with pytest.raises(EvalError, match="evaluate it too"):
        EvalConfig(task="gp-l", models=["m"], splits=["id"], phrasings=mine)
    with pytest.raises(EvalError, match="at most 300 characters"):
        EvalConfig(task="gp-l", models=["m"], phrasings=["x" * 301])
    bad = tmp_path / "bad.txt"
    bad.write_text("# only a comment\n")
    assert cli_main(["eval", "--task", "gp-l", "--models", "m", "--phrasings", str(bad),
                     "--data-dir", str(tmp_path)]) != 0
