"""A task is added in one place: this file declares a toy third task — its engine, its registry entry
and its Findings words, nothing else — registers it for the module, and plays it through the whole
product with no product file changed: the evaluation CLI (`sftvsrl eval`, in-process), the REST API
on a real loopback server (live games over SSE, a person's moves, listing, export, an evaluation),
the episode store, Inspect (the functions its tab calls) and the Findings view (a findings file of
the task: numbers, words, the import of its episodes and their Inspect links).

The toy: one arithmetic question per episode, two tries. In distribution the rule is "add"; the
rule neither model saw is "multiply". The models are two OpenAI-compatible "servers" on loopback
(stdlib HTTP, `ToyUpstream`): `oracle` reads the question and answers right, `adder` always adds
(it memorised the ID rule), so it solves every ID question and no OOD one."""
from __future__ import annotations

import asyncio
import contextlib
import gzip
import io
import json
import random
import re
import socket
import threading
from dataclasses import dataclass
from enum import Enum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

# Every product module is imported before the toy is registered (as in a process that imported them
# long before): a module that copied the registry at import would not know the toy.
import app.api.episodes  # the routers and their request schemas (`create_app` imports them lazily)
import app.api.evaluations  # noqa: F401
from app import findings as fd
from app import services
from app.cli import main as sftvsrl
from app.live import ModelPool
from app.main import create_app
from app.settings import Settings
from app.store import Store
from app.ui import findings_tab, inspect_tab, landing_instances
from game import protocol
from game.protocol import binomial_se, paired_difference
from game.tasks import (TASKS, FindingsWords, Instance, InstanceError, Split, StepResult, Task, get_task, open_session,
                        outcomes)
from game.tasks.base import EpisodeSession, param

TOY = "toy-arith"
OPS = {"add": ("+", lambda a, b: a + b, "add the two numbers"),
       "mul": ("×", lambda a, b: a * b, "multiply the two numbers")}
QUESTION = re.compile(r"Compute (\d+) ([+×]) (\d+)\.")


# ------------------------------------------------------------------------------ the toy's engine
class ToyOutcome(Enum):
    CORRECT = "correct"
    WRONG_ANSWER = "wrong_answer"
    NO_NUMBER = "no_number"


@dataclass(frozen=True)
class Verdict:
    reward: float
    verify_info: str
    outcome: ToyOutcome
    answer: int | None


def read_answer(text: str) -> int | None:
    """The reply's number: `{"answer": n}` or a bare whole number."""
    text = text.strip()
    try:
        data = json.loads(text)
    except ValueError:
        return None
    value = data.get("answer") if isinstance(data, dict) else data
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class ToyGame:
    """One question, `verify_iter` tries; +1 for the right number, 0 for a wrong one, −1 for none."""

    def __init__(self, a: int, b: int, op: str, verify_iter: int) -> None:
        self.a, self.b, self.op, self.verify_iter = a, b, op, verify_iter
        self.tries, self.success = 0, False

    @property
    def answer(self) -> int:
        return OPS[self.op][1](self.a, self.b)

    @property
    def remaining(self) -> int:
        return self.verify_iter - self.tries

    @property
    def done(self) -> bool:
        return self.success or self.remaining <= 0

    def verdict(self, text: str) -> Verdict:
        got, sym = read_answer(text), OPS[self.op][0]
        if got is None:
            return Verdict(-1.0, "no number in the reply", ToyOutcome.NO_NUMBER, None)
        if got != self.answer:
            return Verdict(0.0, f"{self.a} {sym} {self.b} is not {got}", ToyOutcome.WRONG_ANSWER, got)
        return Verdict(1.0, f"{self.a} {sym} {self.b} = {got}", ToyOutcome.CORRECT, got)


# --------------------------------------------------------------------------- its registry entry
@dataclass(frozen=True)
class ToyConfig:
    a: int = param(..., "int", "the first number", 0, 99)
    b: int = param(..., "int", "the second number", 0, 99)
    op: str = param("add", "str", "add (in distribution) or mul (the rule neither model saw)")
    verify_iter: int = param(2, "int", "tries per question", 1, 5)

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise InstanceError(f"op must be one of {', '.join(OPS)}, got {self.op!r}")


class ToySession(EpisodeSession):
    def __init__(self, task: Task, instance: Instance) -> None:
        c = instance.config
        super().__init__(task, instance, ToyGame(c.a, c.b, c.op, c.verify_iter))

    def prompt(self) -> str:
        g = self.episode
        return (f"Toy arithmetic. The rule: {OPS[g.op][2]}. Compute {g.a} {OPS[g.op][0]} {g.b}. "
                'Reply with JSON: {"answer": <a whole number>}.')

    def image(self):
        return None

    @property
    def exact_success(self) -> bool | None:
        return None

    @property
    def positions(self) -> int:
        return 1

    def step(self, text: str) -> StepResult:
        g = self.episode
        v = g.verdict(text)
        g.tries += 1
        g.success = v.outcome is ToyOutcome.CORRECT
        return self._record(StepResult(g.tries, v.reward, v.verify_info, v.outcome.value, True, g.done, False,
                                       {"answer": v.answer}))

    def describe(self) -> dict:
        g = self.episode
        return {"a": g.a, "b": g.b, "op": g.op, "verify_iter": g.verify_iter}


class ToyTask(Task):
    name, family, vision, label = TOY, "toy", False, "Toy arithmetic (one question)"
    config_type, outcome_type = ToyConfig, ToyOutcome
    splits = (Split("id", "a + b", "toy", 4, {"op": "add"}),
              Split("rule-ood", "a × b, the rule neither model saw", "toy", 4, {"op": "mul"}))
    default_seed, headline = 7, "success_rate"
    words, call_words = ("Right", "Wrong"), ("try", "tries")
    reference_classes = {1.0: "CORRECT", 0.0: "WRONG_ANSWER", -1.0: "NO_NUMBER"}
    findings = FindingsWords(
        short="TOY", split_labels={"id": "adding (ID)", "rule-ood": "multiplying (rule-OOD)"},
        ood="multiplication", instances="questions",
        stage_notes={"init": "a model that half knows arithmetic", "sft": "imitates sums", "rl": "rewarded answers"},
        intro="A toy: one arithmetic question, two tries; trained to add, tested on multiplying.",
        base_line="The base: {id} adding, {ood} multiplying.", split_line="Adding / multiplying: ",
        diverse_line="SFT-diverse vs SFT on multiplying: {diff} ± {se}.")

    def key(self, config: ToyConfig) -> str:
        return f"{config.a}{OPS[config.op][0]}{config.b}"

    def session(self, instance: Instance) -> ToySession:
        return ToySession(self, instance)

    def instances(self, split, n=None, seed=None, sources=None, **overrides) -> list[Instance]:
        s = self.split(split)
        rng = random.Random(f"{s.stream}/{self.default_seed if seed is None else seed}")
        # 3..9: a product is never the sum, so the adder cannot luck into a rule-OOD answer
        return [Instance(self.name, {"a": rng.randint(3, 9), "b": rng.randint(3, 9), **s.params, **overrides})
                for _ in range(s.default_n if n is None else n)]

    def training_stream(self, seed, **overrides):
        rng = random.Random(seed)
        while True:
            yield Instance(self.name, {"a": rng.randint(3, 9), "b": rng.randint(3, 9), "op": "add", **overrides})

    def person_reply(self, session, text: str) -> str:
        """A bare number as the reply `{"answer": n}`; anything else is graded as typed."""
        try:
            return json.dumps({"answer": int(text)})
        except ValueError:
            return text

    def step_fields(self, parsed: dict) -> list[tuple[str, Any]]:
        return [("answer", parsed.get("answer"))]


@pytest.fixture(scope="module")
def toy_task():
    """The toy in the registry for this module's tests, and out of it afterwards."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(TASKS, TOY, ToyTask())
        yield TASKS[TOY]
    assert TOY not in TASKS


def test_toy_task_is_a_registry_task(toy_task):
    assert get_task(TOY) is toy_task and protocol.splits(TOY) == ("id", "rule-ood")
    first = protocol.instances(TOY, "rule-ood")[0]
    assert protocol.instances(TOY, "rule-ood", 4) == protocol.instances(TOY, "rule-ood")  # seeded, the same list
    session = open_session(first)
    assert "Compute" in session.prompt() and not session.done
    assert session.step('{"answer": 1}').outcome == "wrong_answer" and session.step("nope").reward == -1
    assert session.done and not session.success
    assert {"wrong_answer", "no_number"} <= set(outcomes())
    with pytest.raises(InstanceError, match="op must be"):
        Instance(TOY, {"a": 1, "b": 2, "op": "pow"})


# ----------------------------------------------------------------------------------- the models
class ToyUpstream:
    """Two models behind one OpenAI-compatible server on loopback (stdlib HTTP, streamed replies):
    `oracle` answers the question it reads, `adder` always answers the sum."""

    MODELS = ("oracle", "adder")

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _send(self, body: bytes, kind: str) -> None:
                self.send_response(200)
                self.send_header("content-type", kind)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                self._send(json.dumps({"data": [{"id": m} for m in ToyUpstream.MODELS]}).encode(), "application/json")

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)))
                a, sym, b = QUESTION.search(body["messages"][0]["content"]).groups()
                a, b = int(a), int(b)
                answer = a * b if sym == "×" and body["model"] == "oracle" else a + b
                chunk = {"choices": [{"index": 0, "delta": {"content": json.dumps({"answer": answer})},
                                      "finish_reason": "stop"}]}
                self._send(b"data: " + json.dumps(chunk).encode() + b"\n\ndata: [DONE]\n\n", "text/event-stream")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def world(toy_task):
    """The upstream, a models.toml naming its two models (no `tasks`: every registered task, the
    toy included), and one data folder / SQLite store for the module (outside pytest's basetemp,
    which other pytest sessions on this machine may prune while the server still uses it)."""
    import shutil
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="sftvsrl-toy-"))
    upstream = ToyUpstream()
    config = root / "models.toml"
    config.write_text("".join(f'[models.{m}]\nbackend = "openai"\nbase_url = "{upstream.url}"\n\n'
                              for m in ToyUpstream.MODELS))
    yield {"root": root, "config": config, "data": root / "data", "db": f"sqlite:///{root / 'data' / 'toy.db'}"}
    upstream.close()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def evaluated(world):
    """`sftvsrl eval --task <toy> --models oracle adder`, in this process (where the toy is registered)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = sftvsrl(["eval", "--task", TOY, "--models", "oracle", "adder", "--concurrency", "2", "--quiet",
                     "--config", str(world["config"]), "--data-dir", str(world["data"]),
                     "--database-url", world["db"], "--out", str(world["root"] / "eval")])
    assert code == 0, err.getvalue()
    summary = json.loads((world["root"] / "eval" / "summary.json").read_text())
    return {"table": out.getvalue(), "out": world["root"] / "eval", "summary": summary, "run_id": summary["run_id"]}


def _store(world) -> Store:
    return Store(world["db"])


# ---------------------------------------------------------------------------- evaluation + store
def test_toy_task_evaluation_cli_and_store(world, evaluated):
    table = evaluated["table"]
    assert f"## {TOY}" in table and "| model | id | rule-ood |" in table
    assert "| oracle | 100.0 ± 0.0 (n=4) | 100.0 ± 0.0 (n=4) |" in table
    assert "| adder | 100.0 ± 0.0 (n=4) | 0.0 ± 0.0 (n=4) |" in table
    assert "| rule-ood | oracle | adder | 4 | 0 | 4 | 0 | 0 |" in table      # paired: only the oracle solves
    summary = evaluated["summary"]
    assert summary["metrics"]["adder"]["rule-ood"]["reference_rates"] == {"WRONG_ANSWER": 1.0, "CORRECT_SOLUTION": 0.0}
    assert (evaluated["out"] / "plot.png").read_bytes()[:4] == b"\x89PNG"
    lines = (evaluated["out"] / "adder__rule-ood.jsonl").read_text().splitlines()
    assert len(lines) == 8 and json.loads(lines[0])["info"]["outcome"] == "wrong_answer"

    store = _store(world)
    run = store.get_run(evaluated["run_id"])
    assert run["task"] == TOY and run["status"] == "finished" and run["done"] == run["total"] == 16
    eps = store.list_episodes(task=TOY, eval_run_id=run["id"], limit=100)
    assert len(eps) == 16 and all(e["status"] == "finished" for e in eps)
    adder = [e for e in eps if e["participant"] == "adder" and e["eval_split"] == "rule-ood"]
    assert {e["n_steps"] for e in adder} == {2} and not any(e["success"] for e in adder)
    full = store.get_episode(adder[0]["id"])
    assert full["instance"]["params"]["op"] == "mul" and full["instance_key"] == TASKS[TOY].key(
        Instance.from_dict(full["instance"]).config)
    first, second = full["steps"]
    assert "Compute" in first["prompt"][0]["content"][0]["text"] and first["outcome"] == "wrong_answer"
    assert "You failed this trial because" in second["prompt"][-1]["content"][0]["text"]   # the second try revises


# ------------------------------------------------------------------------------------- Inspect
def test_toy_task_in_inspect(world, evaluated):
    assert TOY in inspect_tab.task_choices()
    assert ("TOY: wrong answer", "wrong_answer") in inspect_tab.failure_classes()
    assert ("TOY: no number", "no_number") in inspect_tab.failure_classes()
    store, run = _store(world), evaluated["run_id"]
    eps = inspect_tab.filtered_episodes(store, task=TOY, run=run, failure="wrong_answer")
    assert len(eps) == 4 and {e["participant"] for e in eps} == {"adder"}
    assert all(e["classes"] == ["wrong_answer"] and e["eval_split"] == "rule-ood" for e in eps)
    disagree = inspect_tab.filtered_episodes(store, task=TOY, run=run, disagree=True, split="rule-ood")
    assert len(disagree) == 8 and {e["participant"] for e in disagree} == {"oracle", "adder"}
    assert not inspect_tab.filtered_episodes(store, task=TOY, run=run, disagree=True, split="id")
    row = inspect_tab.table_rows(eps[:1])[0]
    assert row[1] == TOY and row[4] == "failed" and row[7] == "Wrong answer"
    html = inspect_tab.step_html(eps[0], 1)
    assert "try 2 of 2" in html and "is not" in html and "answer" in html


# ------------------------------------------------------------------------------------ REST API
@pytest.fixture(scope="module")
def server(world):
    """The product's app (`app.main.create_app`) served by uvicorn on a loopback socket, in this
    process. The socket listens before the server starts, so requests wait for it, never fail."""
    settings = Settings(data_dir=world["data"], database_url=world["db"], models_config=str(world["config"]),
                        cpu_workers=1, warm_models=False)
    app = create_app(settings)
    sock = socket.create_server(("127.0.0.1", 0))
    uv = uvicorn.Server(uvicorn.Config(app, log_config=None, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    yield {"base": base, "app": app}
    uv.should_exit = True
    thread.join(60)
    sock.close()
    app.state.ctx.store.close()


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server["base"], trust_env=False, timeout=120) as c:
        yield c


def events(client, url: str, on_event=lambda ev: None) -> list[dict]:
    """A group's SSE events up to `group_finished`; `on_event` sees each as it arrives."""
    out = []
    with client.stream("GET", url) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: "):
                out.append(json.loads(line[6:]))
                on_event(out[-1])
                if out[-1]["type"] == "group_finished":
                    break
    return out


def test_toy_task_over_the_rest_api(client):
    spec = client.get("/openapi.json").json()
    assert TOY in spec["components"]["schemas"]["EpisodeRequest"]["properties"]["task"]["enum"]

    # two models on one rule-OOD question, streamed
    r = client.post("/api/episodes", json={"task": TOY, "instance": {"a": 4, "b": 5, "op": "mul"},
                                           "participants": [{"model": "oracle"}, {"model": "adder"}]})
    assert r.status_code == 201, r.text
    game = r.json()
    assert game["task"] == TOY and game["instance_key"] == "4×5"
    evs = events(client, game["events_url"])
    started = [e for e in evs if e["type"] == "started"]
    assert {e["info"]["op"] for e in started} == {"mul"}
    steps = [e for e in evs if e["type"] == "step"]
    assert [s["outcome"] for s in steps if s["output"] == '{"answer": 20}'] == ["correct"]
    assert [s["outcome"] for s in steps if s["output"] == '{"answer": 9}'] == ["wrong_answer", "wrong_answer"]
    done = {e["episode_id"]: e for e in evs if e["type"] == "finished"}
    by_name = {ref["participant"]: done[ref["episode_id"]] for ref in game["episodes"]}
    assert by_name["oracle"]["success"] is True and by_name["adder"]["success"] is False

    # a person: a wrong move, then (after its step is reported) the right one
    r = client.post("/api/episodes", json={"task": TOY, "instance": {"a": 3, "b": 4},
                                           "participants": [{"human": True, "name": "you"}]})
    assert r.status_code == 201, r.text
    human = r.json()
    eid, token = human["episodes"][0]["episode_id"], {"X-Game-Token": human["token"]}
    assert client.post(f"/api/episodes/{eid}/submit", json={"text": "8"}, headers=token).status_code == 200

    def move(ev: dict) -> None:
        if ev["type"] == "step" and ev["call"] == 1:
            assert client.post(f"/api/episodes/{eid}/submit", json={"text": "7"}, headers=token).status_code == 200

    evs = events(client, human["events_url"] + "?token=" + human["token"], move)
    assert [(e["outcome"], e["reward"]) for e in evs if e["type"] == "step"] == [("wrong_answer", 0.0), ("correct", 1.0)]

    # read back: one episode, the list filtered by the task and the last step's outcome, an export
    ep = client.get(f"/api/episodes/{eid}", headers=token).json()
    assert ep["task"] == TOY and ep["success"] and [s["parsed"]["answer"] for s in ep["steps"]] == [8, 7]
    listed = client.get("/api/episodes", params={"task": TOY, "outcome": "wrong_answer", "limit": 500}).json()
    assert by_name["adder"]["episode_id"] in {e["id"] for e in listed["episodes"]}
    assert all(e["task"] == TOY for e in listed["episodes"])
    md = client.get(f"/api/episodes/{eid}/export", params={"format": "markdown"}, headers=token).text
    assert f"task: **{TOY}**" in md and "Call 1 — wrong_answer" in md and "Compute 3 + 4" in md


def test_toy_task_evaluation_over_the_rest_api(client, server):
    r = client.post("/api/evaluations", json={"task": TOY, "models": ["oracle", "adder"], "episodes": 2,
                                              "splits": ["rule-ood"], "concurrency": 1})
    assert r.status_code == 202, r.text
    run_id = r.json()["id"]
    job = server["app"].state.ctx.evals[run_id]      # wait for the server's job itself: no polling
    asyncio.run_coroutine_threadsafe(asyncio.wait([job]), job.get_loop()).result(120)
    run = client.get(f"/api/evaluations/{run_id}").json()
    assert run["status"] == "finished" and run["task"] == TOY
    metrics = run["summary"]["metrics"]
    assert metrics["oracle"]["rule-ood"]["success_rate"] == 1.0 and metrics["adder"]["rule-ood"]["success_rate"] == 0
    assert "| adder | 0.0 ± 0.0 (n=2) |" in client.get(f"/api/evaluations/{run_id}/table").text


# ------------------------------------------------------------------------------------- Findings
def _findings_files(folder: Path) -> dict:
    """A findings.json and episodes.jsonl.gz for the toy, as the staged pipeline writes them: Init
    solves every other question, SFT adds (right on ID, wrong on OOD), RL is right but on one OOD
    question. Returns the per-(stage, split) successes."""
    task = TASKS[TOY]
    replies = {"init": lambda i, inst: [inst["answer"]] if i % 2 == 0 else ["nope", "nope"],
               "sft": lambda i, inst: [inst["sum"]] if inst["sum"] == inst["answer"] else [inst["sum"]] * 2,
               "rl": lambda i, inst: [inst["answer"]] if inst["op"] == "add" or i < 3 else [inst["sum"]] * 2}
    records, successes = [], {}
    for stage, policy in replies.items():
        for split in task.split_names:
            for i, instance in enumerate(task.instances(split)):
                p = instance.params
                answer = OPS[p["op"]][1](p["a"], p["b"])
                outputs = [str(x) for x in policy(i, {**p, "answer": answer, "sum": p["a"] + p["b"]})]
                steps = [{"output": o, "reward": 1.0 if o == str(answer) else (-1.0 if o == "nope" else 0.0),
                          "outcome": "correct" if o == str(answer) else ("no_number" if o == "nope" else "wrong_answer")}
                         for o in outputs]
                success = steps[-1]["outcome"] == "correct"
                successes.setdefault(stage, {}).setdefault(split, []).append(int(success))
                records.append({"stage": stage, "split": split, "index": i, "task": TOY, "params": p,
                                "instance_key": instance.key, "success": success, "steps": steps})
    table = {stage: {split: {"value": sum(v) / len(v), "se": binomial_se(sum(v) / len(v), len(v)), "n": len(v)}
                     for split, v in row.items()} for stage, row in successes.items()}
    paired = {f"{a}_minus_{b}": {split: paired_difference(successes[a][split], successes[b][split])
                                 for split in task.split_names}
              for a, b in (("rl", "sft"), ("rl", "init"), ("sft", "init"))}
    (folder / TOY).mkdir(parents=True)
    (folder / TOY / "findings.json").write_text(json.dumps({
        "task": TOY, "metric": "success_rate", "table": table, "paired": paired,
        "protocol": {"splits": {s: {} for s in task.split_names}, "episodes_per_split": 4}}))
    with gzip.open(folder / TOY / "episodes.jsonl.gz", "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    return successes


def test_toy_task_in_the_findings_view(world):
    folder = world["root"] / "findings"
    _findings_files(folder)
    # the registry's tasks with Findings words, by trainer: the toy's (default) is the text pipeline's
    assert fd.tasks() == ["gp-l", "virl-l", TOY, "gp-vl", "virl-vl"]
    assert fd.available(folder) == [TOY] and findings_tab.task_choices(folder) == [("TOY", TOY)]
    assert findings_tab.pick_task(None, folder) == (TOY, "") and findings_tab.pick_task(TOY, folder) == (TOY, "")

    f = fd.load(TOY, folder)
    assert f.splits == ["id", "rule-ood"] and f.stages == ["init", "sft", "rl"] and f.view.short == "TOY"
    assert [(b.stage, b.split, b.value) for b in fd.bars(f)] == [
        ("init", "id", 0.5), ("init", "rule-ood", 0.5), ("sft", "id", 1.0), ("sft", "rule-ood", 0.0),
        ("rl", "id", 1.0), ("rl", "rule-ood", 0.75)]
    verdict = fd.verdict(f)
    assert "RL − SFT on multiplication: +75.0 points ± 25.0" in verdict and "RL is ahead" in verdict
    lines = fd.explanation(f)
    assert lines[0] == TASKS[TOY].findings.intro
    assert "Adding / multiplying: Init 50.0 % / 50.0 %; SFT 100.0 % / 0.0 %; RL 100.0 % / 75.0 %." in lines

    settings = Settings(data_dir=world["data"], database_url=world["db"], findings_dir=folder)
    ctx = services.cli_context(settings, _store(world), ModelPool.from_file(str(world["config"])))
    result = fd.importer_for(ctx).ensure(TOY)    # what opening the view starts, done here first
    assert result.written and result.episodes == 24 and result.mismatches == 0
    html = findings_tab.view_html(ctx, TOY)
    assert f'data-task="{TOY}"' in html and f'data-run="{result.run_id}"' in html and "findings-missing" not in html
    assert "TOY: does SFT memorize" in html and 'data-testid="bar-rl-rule-ood"' in html
    assert "multiplying (rule-OOD)" in html and "sv-error" not in html

    # every number links to its episodes in Inspect
    link = fd.inspect_link(result.run_id, "sft", "rule-ood")
    assert link.replace("&", "&amp;") in html
    fd.ensure_for_run(ctx, result.run_id)
    eps = inspect_tab.filtered_episodes(ctx.store, run=result.run_id, model="sft", split="rule-ood")
    assert len(eps) == 4 and not any(e["success"] for e in eps) and {e["task"] for e in eps} == {TOY}
    assert all(e["classes"] == ["wrong_answer"] for e in eps)
    assert len(inspect_tab.filtered_episodes(ctx.store, run=result.run_id, disagree=True, split="rule-ood")) == 9


def test_toy_task_has_no_game_tab(toy_task):
    """The 24 Points and V-IRL tabs play their own families; the toy gets no landing instance (the
    model warm-up plays its first evaluation instance instead) and breaks none of theirs."""
    assert set(landing_instances()) == {"gp-l", "gp-vl", "virl-l", "virl-vl"}


def test_toy_task_names_no_product_file():
    """The toy lives here only: no product module or page names it."""
    root = Path(__file__).resolve().parents[1]
    named = [str(p.relative_to(root)) for folder in ("game", "models", "app", "static") for p in (root / folder).rglob("*")
             if p.suffix in (".py", ".toml", ".js", ".css", ".html") and TOY in p.read_text(encoding="utf-8")]
    assert named == []
