"""The episode runner and the store: typed events in order, every reported step committed,
paired participants on one instance, human players, resume from stored steps, V-IRL episodes,
migrations and bad store URLs. Every `store` test runs on a real SQLite file and on a real
PostgreSQL server (the `store` fixture in conftest.py); a real tiny checkpoint for the model path."""
from __future__ import annotations

import asyncio
import json
import sqlite3

import pytest

from app.runner import HumanPlayer, ModelPlayer, ScriptedPlayer, play, play_paired
from app.store import SCHEMA_VERSION, Store, StoreError
from game.tasks import Instance, InstanceError, open_session

GP = Instance("gp-l", {"deal_id": "HKC5D2C4", "rule": "face10"})
RIGHT = '{"cards": ["K", "5", "2", "4"], "number": [10, 5, 2, 4], "formula": "10+5*2+4=24"}'


async def _collect(agen):
    return [e async for e in agen]


def test_events_in_order_and_each_step_committed_before_reported(store):
    player = ScriptedPlayer("p", ["nonsense", '{"formula": "10*2+4"}', RIGHT])
    seen = []

    async def go():
        async for ev in play(player, GP, store):
            if ev.type == "step":  # the store already holds it when it is reported
                stored = store.steps(ev.episode_id)
                assert [s["call"] for s in stored][-1] == ev.call
                assert stored[-1]["output"] == ev.output and stored[-1]["reward"] == ev.reward
            seen.append(ev)

    asyncio.run(go())
    types = [e.type for e in seen]
    assert types[0] == "started" and types[-1] == "finished"
    assert types.count("step") == 3 and types.count("prompt") == 3
    steps = [e for e in seen if e.type == "step"]
    assert [s.outcome for s in steps] == ["illegal_formula", "wrong_numbers", "correct"]
    assert steps[-1].reward == 5.0 and steps[-1].terminated and steps[-1].exact_correct
    fin = seen[-1]
    assert fin.status == "finished" and fin.success and fin.n_steps == 3
    ep = store.get_episode(fin.episode_id)
    assert ep["success"] and ep["exact_success"] and ep["episode_return"] == -3 - 2 + 5
    # the chat grows by the reply and the feedback turn (sequential revision)
    prompts = [e for e in seen if e.type == "prompt"]
    assert [len(p.messages) for p in prompts] == [1, 3, 5]
    assert prompts[1].messages[2]["content"][0]["text"] == "You failed this trial because illegal characters."


def test_one_step_record_for_the_event_the_store_and_the_api(store):
    """The step record is declared once (`game.tasks.StepRecord`): the `step` event carries its
    fields (less the prompt), the store's `steps` columns are its fields, and the API's `Step`
    schema is it; a stored step validates as one."""
    from dataclasses import fields

    from app.schemas import Episode, Step
    from game.tasks import StepRecord

    names = {f.name for f in fields(StepRecord)}
    events = asyncio.run(_collect(play(ScriptedPlayer("p", [RIGHT]), GP, store)))
    step = next(e for e in events if e.type == "step")
    assert set(step.to_json()) == names - {"prompt"} | {"type", "episode_id"}
    stored = store.steps(step.episode_id)[0]
    assert names <= set(stored) and stored["output"] == step.output == RIGHT
    assert Step is StepRecord
    ep = Episode.model_validate({**store.get_episode(step.episode_id), "steps": [stored]})
    assert ep.steps[0].reward == 5.0 and ep.steps[0].prompt == stored["prompt"]


# The SSE wire format: every event's JSON keys, in order, as clients read them (a field may be added,
# never renamed or dropped). `state` joined the step record with the V-IRL walker's place.
WIRE_KEYS = {
    "started": ["type", "episode_id", "group_id", "participant", "kind", "task", "instance", "info"],
    "prompt": ["type", "episode_id", "call", "messages", "n_images"],
    "delta": ["type", "episode_id", "call", "text"],
    "step": ["type", "episode_id", "call", "reward", "feedback", "outcome", "graded", "terminated", "truncated",
             "parsed", "exact_correct", "float_rejected", "state", "output", "timing"],
    "finished": ["type", "episode_id", "status", "success", "exact_success", "n_steps", "episode_return", "error"],
    "group_finished": ["type", "group_id"],
}


def test_the_live_log_keeps_typed_events_and_sse_sends_the_same_json(tmp_path):
    """The live log holds the runner's typed events as they are (no dicts), closed by a typed
    `GroupFinished`; SSE writes each one from its `to_json()`, in the wire format clients read."""
    from app.api.episodes import sse
    from app.live import LiveRegistry
    from app.runner import Event, Finished, GroupError, GroupFinished, Started, StepDone

    async def go():
        reg = LiveRegistry(Store(f"sqlite:///{tmp_path / 'db.sqlite'}"), unwatched_s=None)
        group = await reg.start([ScriptedPlayer("p", ["x", RIGHT])], GP)
        await group.task
        watched = [ev async for _, ev in group.subscribe(0, group.episode_ids[0])]
        await reg.shutdown()
        return group, watched

    group, watched = asyncio.run(go())
    log = group.events
    assert all(isinstance(ev, Event) for ev in log) and watched == log
    assert isinstance(log[0], Started) and isinstance(log[-2], Finished) and isinstance(log[-1], GroupFinished)
    assert [ev.call for ev in log if isinstance(ev, StepDone)] == [1, 2] and log[-2].success
    for i, ev in enumerate(log, 1):
        text = sse(i, ev)
        head, data = text.split("data: ")
        assert head == f"id: {i}\nevent: {ev.type}\n" and text.endswith("\n\n")
        wire = json.loads(data)
        assert list(wire) == WIRE_KEYS[ev.type] and wire == json.loads(json.dumps(ev.to_json()))
    assert json.loads(sse(9, log[-1]).split("data: ")[1]) == {"type": "group_finished", "group_id": group.group_id}
    # optional fields appear only when set: a server stop's reason, a replay's flag; a failed group
    assert GroupFinished("g", reason="nobody watched").to_json() == {"type": "group_finished", "group_id": "g",
                                                                      "reason": "nobody watched"}
    assert GroupFinished("g", replay=True).to_json() == {"type": "group_finished", "group_id": "g", "replay": True}
    assert GroupError("g", "boom").to_json() == {"type": "error", "group_id": "g", "error": "boom"}
    started = log[0].to_json()
    assert Started(**{k: v for k, v in started.items() if k != "type"}, replay=True).to_json() == \
        {**started, "replay": True}


def test_step_limit_and_taxonomy(store):
    events = asyncio.run(_collect(play(ScriptedPlayer("p", ["x"] * 10), GP, store)))
    steps = [e for e in events if e.type == "step"]
    assert len(steps) == 6 and steps[-1].outcome == "step_limit" and not steps[-1].graded
    assert events[-1].success is False


def test_paired_participants_share_the_instance_and_group(store):
    a = ScriptedPlayer("a", [RIGHT])
    b = ScriptedPlayer("b", ["no"] * 6)
    events = asyncio.run(_collect(play_paired([a, b], GP, store)))
    started = [e for e in events if e.type == "started"]
    assert {e.participant for e in started} == {"a", "b"}
    assert len({e.group_id for e in started}) == 1
    eps = store.list_episodes(group_id=started[0].group_id)
    assert {e["instance_key"] for e in eps} == {"HKC5D2C4/face10"}
    assert {e["participant"]: e["success"] for e in eps} == {"a": True, "b": False}


def test_a_cancel_right_after_a_move_stops_the_human_player():
    """Stop pressed just after a move: the move has reached the player's queue but the player has
    not resumed yet. The cancel must win (on Python 3.11 `asyncio.wait_for` returned the move and
    swallowed the cancel, so the game waited for the next move until the idle limit)."""

    async def go():
        player = HumanPlayer(idle_timeout_s=3600)

        async def one_call():
            async for item in player.stream([], []):
                return item

        task = asyncio.create_task(one_call())
        await asyncio.sleep(0)             # the player runs until it waits for a move
        assert player.waiting
        await asyncio.sleep(0)
        player.submit("1+2")               # the move arrives ...
        task.cancel()                      # ... and Stop, before the player runs again
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(go())


def test_human_player_with_bare_formulas(store):
    human = HumanPlayer()

    async def go():
        out = []
        async for ev in play(human, GP, store):
            out.append(ev)
            if ev.type == "waiting":
                human.submit("(10-4)*(5-2)" if ev.call == 1 else "10+5*2+4")
        return out

    events = asyncio.run(go())
    steps = [e for e in events if e.type == "step"]
    assert steps[0].outcome == "wrong_value" and steps[1].outcome == "correct"
    assert events[-1].success


def test_cancellation_marks_interrupted_and_resume_continues(store):
    human = HumanPlayer()

    async def first():
        async for ev in play(human, GP, store):
            if ev.type == "waiting":
                if ev.call == 3:
                    return ev.episode_id
                human.submit("1+1")

    eid = asyncio.run(first())
    ep = store.get_episode(eid)
    assert ep["status"] == "interrupted" and ep["n_steps"] == 2
    # resume: stored replies replay into the engine, play goes on from call 3
    events = asyncio.run(_collect(play(ScriptedPlayer("human", [RIGHT]), GP, store, episode_id=eid, resume=True)))
    steps = [e for e in events if e.type == "step"]
    assert [s.call for s in steps] == [3] and steps[0].outcome == "correct"
    prompt = next(e for e in events if e.type == "prompt")
    assert len(prompt.messages) == 5  # the chat was rebuilt from the stored steps
    ep = store.get_episode(eid)
    assert ep["status"] == "finished" and ep["n_steps"] == 3 and ep["success"]


def test_virl_episode_taxonomy(store):
    inst = Instance("virl-l", {"source": "bundled:helsinki", "route": 0, "seed": 1})
    session = open_session(inst)
    oracle = session.episode.oracle_reply()
    wrong = '{"current observation": "an intersection", "action": "forward()"}'
    events = asyncio.run(_collect(play(ScriptedPlayer("p", [oracle, wrong, "x", "y"]), inst, store)))
    outcomes = [e.outcome for e in events if e.type == "step"]
    assert outcomes[0] == "correct"
    assert set(outcomes[1:]) <= {"wrong_action", "wrong_observation", "budget_exceeded", "correct"}
    assert events[-1].type == "finished" and events[-1].status == "finished"


def test_model_player_and_backend_error_is_recorded(store, tiny_llama_dir):
    from models.backends.local import LocalBackend
    from models.decoding import DecodingSettings

    backend = LocalBackend(name="tiny", path=str(tiny_llama_dir))
    player = ModelPlayer("tiny", backend, DecodingSettings(max_tokens=8, temperature=0.0))
    events = asyncio.run(_collect(play(player, GP, store)))
    steps = [e for e in events if e.type == "step"]
    assert len(steps) == 6 and all(s.timing["completion_tokens"] >= 1 for s in steps)
    deltas = "".join(e.text for e in events if e.type == "delta" and e.call == 1)
    assert deltas == steps[0].output
    assert store.get_episode(events[0].episode_id)["settings"]["decoding"] == {"max_tokens": 8, "temperature": 0.0}
    broken = ModelPlayer("broken", LocalBackend(name="broken", path="/nonexistent/ckpt"))
    events = asyncio.run(_collect(play(broken, GP, store)))
    assert events[-1].status == "error" and "config.json" in events[-1].error
    assert store.get_episode(events[-1].episode_id)["status"] == "error"


def test_bad_instances_are_clear_errors():
    for inst, msg in [(Instance("gp-l", {"deal_id": "ZZ"}), "malformed deal id"),
                      (Instance("gp-l", {"deal_id": "HKC5D2C4", "rule": "x"}), "unknown rule"),
                      (Instance("virl-l", {"route": 99999}), "out of range"),
                      (Instance("virl-l", {"source": "/nope"}), "cannot open")]:
        with pytest.raises(InstanceError, match=msg):
            open_session(inst)
    with pytest.raises(InstanceError, match="unknown task"):
        Instance("chess", {})


def test_migrations_upgrade_an_old_database(tmp_path):
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    from app.store import MIGRATIONS

    conn.executescript(MIGRATIONS[0] + "; PRAGMA user_version=1;")
    conn.execute("INSERT INTO episodes (id, group_id, task, instance_key, instance, participant, participant_kind, "
                 "status, created_at) VALUES ('e1', 'g', 'virl-l', 'k', '{}', 'sft', 'model', 'finished', 0)")
    conn.execute("INSERT INTO steps (episode_id, call, prompt, output, parsed, reward, feedback, outcome, graded, "
                 "terminated, truncated, created_at) VALUES ('e1', 1, '[]', 'x', '{}', -1, 'f', 'wrong_action', 1, "
                 "0, 0, 0)")
    conn.commit()
    conn.close()
    s = Store(f"sqlite:///{path}")
    assert s.version == SCHEMA_VERSION
    ep = s.get_episode("e1")
    assert ep["eval_run_id"] is None  # kept, with the new columns
    assert ep["steps"][0]["state"] == {} and ep["steps"][0]["output"] == "x"   # a step stored before `state`
    from app.schemas import Episode

    assert Episode.model_validate(ep).steps[0].state == {}   # and the API still serves it
    with pytest.raises(StoreError, match="use sqlite:///PATH or postgresql://"):
        Store("mysql://x/y")


def test_ids_are_unguessable(store):
    ids = {store.create_episode(group_id="g", task="gp-l", instance={}, instance_key="k", participant="p",
                                participant_kind="model") for _ in range(50)}
    assert len(ids) == 50 and all(len(i) >= 22 for i in ids)
    json.dumps(list(ids))


@pytest.mark.parametrize("task,params", [
    ("gp-vl", {"deal_id": "SKC5C2C4", "rule": "face10"}),
    ("virl-vl", {"source": "bundled:helsinki", "route": 2, "seed": 0}),
])
def test_vision_tasks_send_the_image_with_every_call(store, task, params):
    class Recorder(ScriptedPlayer):
        async def stream(self, messages, images):
            self.seen = getattr(self, "seen", []) + [(len(messages), images)]
            async for item in super().stream(messages, images):
                yield item

    player = Recorder("p", ["no", "no"])
    inst = Instance(task, params)
    events = asyncio.run(_collect(play(player, inst, store)))
    assert events[-1].status == "finished"
    n_msgs, images = player.seen[0]
    assert n_msgs == 1 and len(images) == 1 and images[0].size[0] >= 200  # a PIL image
    assert player.seen[1][0] == 3 and len(player.seen[1][1]) == 1  # one placeholder, same image
    first = next(e for e in events if e.type == "prompt")
    assert first.messages[0]["content"][0] == {"type": "image"} and first.n_images == 1


def test_abandoned_human_game_ends_with_an_error(store):
    human = HumanPlayer(idle_timeout_s=0.05)
    events = asyncio.run(_collect(play(human, GP, store)))
    assert events[-1].status == "error" and "abandoned" in events[-1].error
    assert store.get_episode(events[-1].episode_id)["status"] == "error"


def test_human_virl_actions_may_be_bare(store):
    inst = Instance("virl-l", {"source": "bundled:helsinki", "route": 0, "seed": 1})
    gt = open_session(inst).episode.entry.gt_action
    human = HumanPlayer()

    async def go():
        out = []
        async for ev in play(human, inst, store):
            out.append(ev)
            if ev.type == "waiting":
                if ev.call > 1:
                    return out
                human.submit(gt)
        return out

    steps = [e for e in asyncio.run(go()) if e.type == "step"]
    assert steps[0].outcome == "correct" and steps[0].parsed["action"] == gt


def test_a_virl_step_keeps_where_the_walker_is_in_the_event_the_store_and_the_api(store):
    """The step record's `state` (V-IRL: the walker's place) travels with the `step` event, is
    stored with the step and is part of the API's step JSON."""
    from app.schemas import Episode

    inst = Instance("virl-l", {"source": "bundled:helsinki", "route": 0, "seed": 1})
    session = open_session(inst)
    right = session.episode.oracle_reply()
    events = asyncio.run(_collect(play(ScriptedPlayer("p", [right, "no", "no"]), inst, store)))
    steps = [e for e in events if e.type == "step"]
    rail = session.episode.rail.entries
    assert [s.state["rail_index"] for s in steps] == [1, 1, 1, 1]   # a move, two misses, the budget spent
    assert steps[0].state["position"] == list(rail[1].position) and steps[0].state["heading"] == rail[1].heading
    assert steps[0].state["walk"] == [list(rail[0].position), list(rail[1].position)]
    assert json.loads(json.dumps(steps[0].to_json()))["state"] == steps[0].state     # on the wire
    stored = store.get_episode(steps[0].episode_id)
    assert [s["state"] for s in stored["steps"]] == [s.state for s in steps]
    api = Episode.model_validate(stored).model_dump(mode="json")
    assert [s["state"] for s in api["steps"]] == [s.state for s in steps]


def test_store_is_safe_to_share_between_threads(store):
    import threading

    eid = store.create_episode(group_id="g", task="gp-l", instance={}, instance_key="k", participant="p",
                               participant_kind="model")
    errors = []

    def reader():
        try:
            for _ in range(200):
                store.list_episodes(limit=10)
                store.get_episode(eid)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for call in range(1, 101):
        store.add_step(eid, {"call": call, "output": "x", "reward": -1.0, "feedback": "f", "outcome": "wrong_value",
                             "graded": True, "terminated": False, "truncated": False})
    for t in threads:
        t.join()
    assert not errors and store.get_episode(eid)["n_steps"] == 100


def test_stored_group_replays_side_by_side(store):
    from app.export import replay_group_events

    events = asyncio.run(_collect(play_paired([ScriptedPlayer("a", ["x", RIGHT]), ScriptedPlayer("b", ["y"] * 6)],
                                              GP, store)))
    ids = [e.episode_id for e in events if e.type == "started"]

    async def go():
        return [ev async for ev in replay_group_events(store, ids)]

    replay = asyncio.run(go())
    steps = [(e.episode_id, e.call) for e in replay if e.type == "step"]
    assert steps[:4] == [(ids[0], 1), (ids[1], 1), (ids[0], 2), (ids[1], 2)]
    assert [e.type for e in replay][:2] == ["started", "started"] and replay[-1].type == "finished"
    assert all(e.replay for e in replay if e.type == "started")
    live = [e for e in events if e.type == "step"]
    # a replayed step is the live one: the same typed event with the same JSON
    assert sorted((e.episode_id, e.call, json.dumps(e.to_json(), sort_keys=True)) for e in live) == \
        sorted((e.episode_id, e.call, json.dumps(e.to_json(), sort_keys=True)) for e in replay if e.type == "step")
