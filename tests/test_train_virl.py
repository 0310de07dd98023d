"""V-IRL-L training outside the staged pipeline's own tests: `sftvsrl train rl --task virl-l --quick`
(the pipeline's GRPO from any checkpoint) end to end through the CLI, loaded by the `local` backend
and graded by the verifier; the expert data against the rail; the pipeline tokenizer's direction
and action words; the V-IRL evaluation; the per-task checkpoint table of `models.toml` and how the
app picks a checkpoint for a task."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from app.cli import main  # noqa: E402
from game.virl.verifier import verify  # noqa: E402
from models.config import ConfigError, dump_toml, load_config  # noqa: E402
from models.train.data import virl_data, virl_episode_pairs, virl_sft_pairs, virl_start  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINTS = ROOT / "models" / "checkpoints"


@pytest.fixture(scope="module")
def quick_virl(tmp_path_factory, tiny_llama_dir):
    """`sftvsrl train rl --task virl-l --quick --init <a tiny random checkpoint>`."""
    rl = tmp_path_factory.mktemp("virl") / "rl"
    assert main(["train", "rl", "--task", "virl-l", "--quick", "--init", str(tiny_llama_dir), "--out", str(rl),
                 "--no-progress"]) == 0
    return rl


def test_quick_virl_rl_writes_an_hf_checkpoint(quick_virl):
    for name in ("config.json", "model.safetensors", "tokenizer.json", "generation_config.json",
                 "chat_template.jinja"):
        assert (quick_virl / name).is_file(), name
    rl = json.loads((quick_virl / "training.json").read_text())
    assert rl["kind"] == "rl" and rl["task"] == "virl-l"
    assert rl["algorithm"] == "grpo" and rl["updates"] == 2 and rl["config"]["verify_iter"] == 2
    assert rl["calls"] >= rl["episodes"] and "per_step_accuracy" in rl["history"][0]


def test_quick_virl_rl_answers_a_virl_prompt_through_local_backend(quick_virl):
    from models.backends.local import LocalBackend
    from models.chat import next_chat
    from models.decoding import DecodingSettings
    from models.train.data import virl_prompt_of

    ep = virl_start(virl_data(), 5, seed=3)
    backend = LocalBackend(name="tiny-virl-rl", path=str(quick_virl))
    messages = next_chat(None, virl_prompt_of(ep), verify_info=None)
    done = asyncio.run(backend.complete(messages, (), DecodingSettings(max_tokens=24, temperature=0.0)))
    assert done.error is None and done.completion_tokens > 0
    record = ep.step(done.text)  # graded by the V-IRL verifier, whatever a seconds-old model says
    assert record.graded and record.reward in (1.0, -1.0, -1.5)


def test_wrong_task_init_is_refused(quick_virl, capsys):
    assert main(["train", "rl", "--task", "gp-l", "--quick", "--init", str(quick_virl), "--no-progress"]) == 2
    assert "trained for virl-l" in capsys.readouterr().err


def test_expert_answers_follow_the_rail_and_are_graded_correct():
    from game.tasks import Instance, open_session

    data = virl_data()
    for route, seed in ((0, 0), (17, 5), (311, 123), (507, 9)):
        for absolute in (True, False):
            pairs = virl_episode_pairs(data, route, seed, absolute)
            ep = virl_start(data, route, seed, absolute)
            assert [p.gt_action for p in pairs] == ep.rail.gt_actions and pairs[-1].gt_action == "stop()"
            # the training prompt is the one the app sends for the same episode
            session = open_session(Instance("virl-l", {"route": route, "seed": seed, "absolute_action": absolute}))
            assert session.prompt() == pairs[0].prompt
            for pair, entry in zip(pairs, ep.rail.entries):
                assert pair.answer == ep.oracle_reply()  # `ResponseVIRL` with the golden action
                assert verify(pair.answer, entry.gt_action, entry.observation).reward == 1.0
                assert ep.step(pair.answer).reward == 1.0
            assert ep.success and ep.per_step_accuracy == 1.0
    sample = virl_sft_pairs(30, seed=1)
    assert all(verify(p.answer, p.gt_action, p.observation).reward == 1.0 for p in sample)
    assert all(p.seed >= 1_000_000 for p in sample)  # never an evaluation episode (seeds < 10,000)
    assert "['north', 'northeast'" in sample[0].prompt  # absolute actions (the ID rule) only
    assert virl_sft_pairs(30, seed=1) == sample  # seeded


def test_virl_tokenizer_keeps_directions_and_actions_whole():
    """The V-IRL-L pipeline's tokenizer (`build_tokenizer`: `VIRL_SPLIT`, trained on the synthetic
    towns only) holds every compass word, left / right and the action names whole, and decodes a
    Helsinki pair."""
    from models.train.pipeline import PipelineConfig, build_tokenizer

    tok = build_tokenizer(PipelineConfig.for_task("virl-l", quick=True))
    pair = virl_episode_pairs(virl_data(), 3, 3)[-1]
    ids = tok(pair.prompt + pair.answer, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == pair.prompt + pair.answer
    pieces = tok.convert_ids_to_tokens(ids)
    for piece in ("north", "northeast", "east", "southeast", "south", "southwest", "west", "northwest", "left",
                  "right", "stop", "forward", "turn_direction"):
        assert piece in tok.get_vocab(), piece
    assert "stop" in pieces


def test_virl_evaluation_counts_calls_and_splits(quick_virl):
    """The batched executor plays the protocol's instance lists (the app's) and its metrics."""
    from game import protocol
    from models.train.common import load_checkpoint
    from models.train.evaluate import evaluate

    ood = protocol.instances("virl-l", "rule-ood", 3)
    idd = protocol.instances("virl-l", "id", 3)
    assert [x.params["route"] for x in ood] == [x.params["route"] for x in idd] == [0, 1, 2]
    assert not ood[0].config.absolute_action and idd[0].config.absolute_action
    assert protocol.instances("virl-l", "streets", 1)[0].config.source == "bundled:helsinki-ood"
    model, tok = load_checkpoint(quick_virl)
    r = evaluate(model, tok, "virl-l", "rule-ood", 3, temperature=0, max_new_tokens=16)
    assert r["episodes"] == 3 and r["steps"] >= 3 and 0.0 <= r["per_step_accuracy"] <= 1.0
    assert r["split"] == "rule-ood" and r["first_instance"] == ood[0].key and len(r["successes"]) == 3
    # an episode that never answers right ends after 2 graded calls and the wasted third
    assert r["steps"] == 3 * 3 or r["correct_steps"] > 0
    assert sum(r["outcomes"].values()) == r["steps"]


# --- per-task checkpoints in models.toml -----------------------------------------------------

PER_TASK = """
[models.sft]
backend = "local"
label = "SFT (tiny)"
[models.sft.paths]
gp-l = "ck/gp"
virl-l = "ck/virl"

[models.mixed]
backend = "local"
path = "ck/any"
[models.mixed.paths]
virl-l = "ck/virl"

[models.plain]
backend = "local"
path = "ck/plain"
"""


def _write(tmp_path, text):
    f = tmp_path / "models.toml"
    f.write_text(text)
    return f


def test_per_task_paths_config(tmp_path):
    cfg = load_config(_write(tmp_path, PER_TASK), env={})
    sft = cfg["sft"]
    assert sft.tasks == ("gp-l", "virl-l") and sft.path is None
    assert sft.path_for("gp-l") == str(tmp_path / "ck" / "gp")
    assert sft.path_for("virl-l") == str(tmp_path / "ck" / "virl")
    assert sft.path_for(None) == str(tmp_path / "ck" / "gp")
    assert sft.make_backend("virl-l").path == str(tmp_path / "ck" / "virl")
    assert "virl-l: " in sft.where
    mixed = cfg["mixed"]  # `path` serves every task without its own entry
    assert len(mixed.tasks) == 4 and mixed.path_for("gp-vl") == str(tmp_path / "ck" / "any")
    assert mixed.path_for("virl-l") == str(tmp_path / "ck" / "virl")
    plain = cfg["plain"]  # the one-path form is unchanged
    assert plain.paths == {} and plain.make_backend("virl-l").path == str(tmp_path / "ck" / "plain")
    again = load_config(_write(tmp_path, dump_toml(cfg.models)), env={})
    assert {n: (m.path, m.paths, m.tasks) for n, m in again.models.items()} == \
        {n: (m.path, m.paths, m.tasks) for n, m in cfg.models.items()}


def test_per_task_paths_env_overrides(tmp_path):
    f = _write(tmp_path, PER_TASK)
    one = load_config(f, env={"SFTVSRL_MODEL_SFT_PATH": "/x/one"})["sft"]
    assert one.paths == {} and one.path_for("virl-l") == "/x/one"
    two = load_config(f, env={"SFTVSRL_MODEL_NEW_PATHS": "gp-l=/x/a, virl-l=/x/b"})["new"]
    assert two.backend == "local" and two.tasks == ("gp-l", "virl-l") and two.path_for("virl-l") == "/x/b"


@pytest.mark.parametrize("text, needle", [
    ("[models.a]\nbackend = 'local'\n[models.a.paths]\nchess = 'x'\n", "unknown task"),
    ("[models.a]\nbackend = 'local'\ntasks = ['gp-l', 'virl-l']\n[models.a.paths]\ngp-l = 'x'\n", "no checkpoint for task"),
    ("[models.a]\nbase_url = 'http://h/v1'\n[models.a.paths]\ngp-l = 'x'\n", "local backend"),
    ("[models.a]\nbackend = 'local'\n[models.a.paths]\ngp-l = 3\n", "paths must be"),
])
def test_per_task_paths_errors(tmp_path, text, needle):
    with pytest.raises(ConfigError, match=needle):
        load_config(_write(tmp_path, text), env={})


def test_pool_routes_players_by_task(tmp_path, tiny_llama_dir, quick_virl):
    """The app asks the pool for a task's player; a V-IRL episode gets the V-IRL checkpoint."""
    from app.live import ModelPool
    from app.runner import play
    from app.store import Store
    from game.tasks import Instance

    text = f'[models.sft]\nbackend = "local"\n[models.sft.paths]\ngp-l = "{tiny_llama_dir}"\nvirl-l = "{quick_virl}"\n'
    pool = ModelPool(load_config(_write(tmp_path, text), env={}))
    gp, virl = pool.player("sft", task="gp-l"), pool.player("sft", task="virl-l")
    assert Path(gp.backend.path) == Path(tiny_llama_dir) and Path(virl.backend.path) == quick_virl
    assert pool.player("sft", task="virl-l").backend is virl.backend  # loaded once per checkpoint
    store = Store(f"sqlite:///{tmp_path / 'eps.db'}")

    async def go():
        from models.decoding import DecodingSettings

        player = pool.player("sft", DecodingSettings(max_tokens=16, temperature=0.0), task="virl-l")
        return [e async for e in play(player, Instance("virl-l", {"route": 2, "seed": 1}), store)]

    try:
        events = asyncio.run(go())
    finally:
        pool.wait_idle()
        store.close()
    assert events[-1].type == "finished" and any(e.type == "step" for e in events)
    assert virl.backend.loaded and not gp.backend.loaded


@pytest.mark.skipif(not (CHECKPOINTS / "virl-l-sft" / "config.json").is_file(),
                    reason="shipped V-IRL-L checkpoints not present")
def test_default_config_serves_both_tasks_from_shipped_checkpoints():
    from models.config import DEFAULT_FILE

    cfg = load_config(DEFAULT_FILE, env={})
    for name in ("sft", "rl"):
        spec = cfg[name]
        assert spec.supports("gp-l") and spec.supports("virl-l")
        for task in ("gp-l", "virl-l"):
            path = Path(spec.path_for(task))
            assert path == CHECKPOINTS / f"{task}-{name}" and (path / "model.safetensors").is_file()
            assert json.loads((path / "training.json").read_text())["task"] == task


def test_health_checks_every_per_task_checkpoint(tmp_path, tiny_llama_dir, capsys):
    """A model with per-task checkpoints is healthy only when each one is; the detail says which
    task's checkpoint is missing (`sftvsrl models` and /api/models use the same check)."""
    missing = tmp_path / "gone"
    text = (f'[models.sft]\nbackend = "local"\n[models.sft.paths]\ngp-l = "{tiny_llama_dir}"\n'
            f'virl-l = "{missing}"\n\n[models.rl]\nbackend = "local"\npath = "{tiny_llama_dir}"\n')
    cfg = load_config(_write(tmp_path, text), env={})
    sft, rl = cfg["sft"], cfg["rl"]
    assert [tasks for _, tasks in sft.checkpoint_tasks()] == [("gp-l",), ("virl-l",)]
    bad = asyncio.run(sft.health(sft.make_backend, 30))
    assert not bad.ok and "virl-l: no checkpoint at" in bad.detail and str(missing) in bad.detail
    good = asyncio.run(rl.health(rl.make_backend, 30))
    assert good.ok and len(rl.checkpoint_tasks()) == 1
    assert main(["models", "--config", str(tmp_path / "models.toml"), "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["models"]}
    assert rows["sft"]["healthy"] is False and "virl-l" in rows["sft"]["detail"] and rows["rl"]["healthy"]
