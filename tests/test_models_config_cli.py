"""Model configuration (models.toml + environment overrides), the `sftvsrl models` / `prompt` /
`vllm up` commands, and the vLLM command lines."""
from __future__ import annotations

import json

import pytest

from app.cli import main
from conftest import load_conformance
from models.config import ConfigError, dump_toml, load_config
from models.decoding import DecodingSettings
from models.prompts import gp_prompt
from models.vllm import VllmServerSpec, config_text, pair_specs

TOML = """
[models.sft]
backend = "openai"
base_url = "http://127.0.0.1:9/v1"
served_name = "sft-served"
tasks = ["gp-l", "virl-l"]
[models.sft.decoding]
max_tokens = 64
temperature = 0.2

[models.rl]
backend = "local"
path = "ckpt/rl"
"""


def _write(tmp_path, text=TOML):
    f = tmp_path / "models.toml"
    f.write_text(text)
    return f


def test_load_config(tmp_path):
    cfg = load_config(_write(tmp_path), env={})
    assert list(cfg.models) == ["sft", "rl"]
    sft, rl = cfg["sft"], cfg["rl"]
    assert sft.backend == "openai" and sft.served_name == "sft-served" and sft.tasks == ("gp-l", "virl-l")
    assert sft.decoding == DecodingSettings(max_tokens=64, temperature=0.2)
    assert rl.backend == "local" and rl.path == str(tmp_path / "ckpt" / "rl")
    assert rl.decoding.max_tokens == 256 and rl.decoding.temperature is None  # paper eval default
    assert [m.name for m in cfg.for_task("gp-vl")] == ["rl"]
    backend = sft.make_backend()
    assert backend.api_root == "http://127.0.0.1:9/v1" and backend.model_id == "sft-served"
    with pytest.raises(ConfigError):
        cfg["nope"]


def test_env_overrides_and_new_models(tmp_path):
    env = {"SFTVSRL_MODEL_SFT_BASE_URL": "http://gpu-host:8000/v1", "SFTVSRL_MODEL_SFT_MAX_TOKENS": "128",
           "SFTVSRL_MODEL_RL_TASKS": "gp-l,gp-vl", "SFTVSRL_MODEL_GPT_4O_BASE_URL": "http://127.0.0.1:7/v1",
           "SFTVSRL_MODEL_GPT_4O_API_KEY_ENV": "OPENAI_API_KEY", "SFTVSRL_MODEL_GHOST_TEMPERATURE": "1"}
    cfg = load_config(_write(tmp_path), env=env)
    assert cfg["sft"].base_url == "http://gpu-host:8000/v1"
    assert cfg["sft"].decoding.max_tokens == 128 and cfg["sft"].decoding.temperature == 0.2
    assert cfg["rl"].tasks == ("gp-l", "gp-vl")
    extra = cfg["gpt-4o"]
    assert extra.backend == "openai" and extra.api_key_env == "OPENAI_API_KEY"
    assert "ghost" not in cfg.models  # only backend/base_url/path create a model
    env_file = {"SFTVSRL_MODELS_CONFIG": str(_write(tmp_path))}
    assert load_config(env=env_file).source == str(tmp_path / "models.toml")


@pytest.mark.parametrize("text,needle", [
    ("[models.a]\nbackend = 'grpc'\n", "backend"),
    ("[models.a]\nbackend = 'openai'\n", "base_url"),
    ("[models.a]\nbackend = 'local'\n", "path"),
    ("[models.a]\nbase_url = 'x'\ncolour = 1\n", "colour"),
    ("[models.a]\nbase_url = 'x'\ntasks = ['chess']\n", "chess"),
    ("[models.a]\nbase_url = 'x'\n[models.a.decoding]\ntemprature = 1\n", "temprature"),
    ("[models.a\n", "TOML"),
])
def test_config_errors(tmp_path, text, needle):
    with pytest.raises(ConfigError, match=needle):
        load_config(_write(tmp_path, text), env={})
    with pytest.raises(ConfigError, match="expected a number"):
        load_config(_write(tmp_path), env={"SFTVSRL_MODEL_SFT_MAX_TOKENS": "lots"})


def test_dump_toml_round_trip(tmp_path):
    cfg = load_config(_write(tmp_path), env={})
    again = load_config(_write(tmp_path, dump_toml(cfg.models)), env={})
    assert {n: (m.backend, m.where, m.tasks, m.decoding) for n, m in again.models.items()} == \
        {n: (m.backend, m.where, m.tasks, m.decoding) for n, m in cfg.models.items()}


def test_cli_models_list(tmp_path, capsys, tiny_llama_dir):
    text = TOML.replace('path = "ckpt/rl"', f'path = "{tiny_llama_dir}"')
    assert main(["models", "--config", str(_write(tmp_path, text)), "--json", "--timeout", "3"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["models"]}
    assert rows["rl"]["healthy"] is True and "loads on first use" in rows["rl"]["detail"]
    assert rows["sft"]["healthy"] is False and "unreachable" in rows["sft"]["detail"]
    assert main(["models", "--config", str(_write(tmp_path, text)), "--no-health"]) == 0
    assert "sft" in capsys.readouterr().out
    assert main(["models", "--config", str(tmp_path / "missing.toml")]) == 2


def test_cli_prompt_gp(capsys):
    assert main(["prompt", "gp-l", "--cards", "K", "5", "10", "A", "--rule", "11-13", "--eg"]) == 0
    assert capsys.readouterr().out == gp_prompt(["K", "5", "10", "A"], "face_jqk", eg=True)
    assert main(["prompt", "gp-l", "--cards", "k", "5", "T", "a"]) == 0
    assert "Cards: ['K', '5', '10', 'A']" in capsys.readouterr().out
    assert main(["prompt", "gp-vl", "--json"]) == 0
    msg = json.loads(capsys.readouterr().out)
    assert msg[0]["content"][0] == {"type": "image"} and msg[0]["content"][1]["text"] == gp_prompt(None, vision=True)
    assert main(["prompt", "gp-l", "--cards", "K", "5", "10", "Z"]) == 2


def test_cli_prompt_virl_from_route_line(tmp_path, capsys):
    lines = [l for l in load_conformance("virl_routes.jsonl") if "prompt_L" in l["rail"][0]]
    line = lines[3]
    f = tmp_path / "routes.jsonl"
    f.write_text("\n".join(json.dumps(l) for l in lines[:5]))
    for task, key in (("virl-l", "prompt_L"), ("virl-vl", "prompt_VL")):
        step = len(line["rail"]) - 1
        assert main(["prompt", task, "--route", str(f), "--route-id", line["route_id"], "--step", str(step)]) == 0
        got = capsys.readouterr().out
        candidates = [l["rail"][step][key] for l in lines[:5] if l["route_id"] == line["route_id"]
                      and len(l["rail"]) > step]
        assert got == candidates[0]
    assert main(["prompt", "virl-l", "--instruction", "1. Go.\\n", "--obs-act-seq",
                 "O_1: No landmarks nearby; \\nA_1: \\n", "--relative"]) == 0
    assert "'slightly right']" in capsys.readouterr().out
    assert main(["prompt", "virl-l"]) == 2
    assert main(["prompt", "virl-l", "--route", str(f), "--step", "999"]) == 2


def test_vllm_commands_and_config(tmp_path, capsys):
    text_ckpt = tmp_path / "tiny"
    text_ckpt.mkdir()
    (text_ckpt / "config.json").write_text(json.dumps({"model_type": "llama"}))
    vision_ckpt = tmp_path / "mllama"
    vision_ckpt.mkdir()
    (vision_ckpt / "config.json").write_text(json.dumps({"model_type": "mllama"}))

    sft, rl = pair_specs(str(vision_ckpt), str(text_ckpt), gpu_memory_split=0.4, ports=(9001, 9002))
    cmd = sft.command()
    assert cmd[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    assert cmd[cmd.index("--served-model-name") + 1] == "sft" and cmd[cmd.index("--port") + 1] == "9001"
    assert cmd[cmd.index("--gpu-memory-utilization") + 1] == "0.4"
    assert "--enforce-eager" in cmd and cmd[cmd.index("--max-num-seqs") + 1] == "16"
    assert json.loads(cmd[cmd.index("--limit-mm-per-prompt") + 1]) == {"image": 1}
    assert "--enforce-eager" not in rl.command() and rl.env() == {}
    cpu = VllmServerSpec("rl", str(text_ckpt), 9003, cpu=True, gpu_memory_utilization=None, kv_cache_gib=1)
    assert cpu.env() == {"VLLM_CPU_KVCACHE_SPACE": "1"} and "--gpu-memory-utilization" not in cpu.command()
    with pytest.raises(ValueError):
        pair_specs("a", "b", gpu_memory_split=0.9)

    f = tmp_path / "written.toml"
    f.write_text(config_text([sft, rl]))
    cfg = load_config(f, env={})
    assert cfg["sft"].base_url == "http://127.0.0.1:9001/v1" and cfg["sft"].served_name == "sft"
    assert "gp-vl" in cfg["sft"].tasks and "gp-vl" not in cfg["rl"].tasks

    assert main(["vllm", "up", "--sft", str(vision_ckpt), "--rl", str(text_ckpt), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.count("vllm.entrypoints.openai.api_server") == 2 and "[models.rl]" in out
    assert main(["vllm", "up", "--sft", str(tmp_path / "none"), "--rl", str(text_ckpt)]) == 2
