"""`sftvsrl virl …`, in-process through app.cli.main and once as a subprocess."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from app.cli import main
from conftest import ROOT
from virl_fixtures import fake_release


def test_show_prints_instructions_and_oracle_actions(capsys):
    assert main(["virl", "show", "0", "--heading", "10"]) == 0
    out = capsys.readouterr().out
    assert "1. First, turn " in out and "oracle actions:" in out
    assert out.rstrip().splitlines()[-1].split()[1] == "stop()"


def test_routes_lists_bundled_sets(capsys):
    assert main(["virl", "routes", "--json", "--source", "bundled:helsinki-ood"]) == 0
    rows = [json.loads(l) for l in capsys.readouterr().out.splitlines()]
    assert len(rows) >= 50 and rows[0]["route_id"].startswith("hel-ood-")


def test_score_adds_reward_and_verify_info(tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    lines = [{"model_output": '\n{\n  "action": "forward()",\n}\n', "gt_action": "forward()",
              "gt_observation": "No landmarks nearby", "absolute_action": True, "keep": 1},
             {"model_output": "garbage", "gt_action": "stop()", "gt_observation": "x", "absolute_action": True}]
    src.write_text("".join(json.dumps(l) + "\n" for l in lines))
    out = tmp_path / "out.jsonl"
    assert main(["virl", "score", str(src), "-o", str(out)]) == 0
    got = [json.loads(l) for l in out.read_text().splitlines()]
    assert [g["reward"] for g in got] == [1.0, -1.0] and got[0]["verify_info"] == "Correct action."
    assert got[0]["keep"] == 1


@pytest.mark.parametrize("content, message", [("{oops\n", "in.jsonl:1: malformed JSON"),
                                              ('{"model_output": "x"}\n', "in.jsonl:1: missing field")])
def test_score_bad_input_names_the_file(tmp_path, capsys, content, message):
    src = tmp_path / "in.jsonl"
    src.write_text(content)
    out = tmp_path / "out.jsonl"
    out.write_text("precious")
    assert main(["virl", "score", str(src), "-o", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert out.read_text() == "precious"          # never loses data


def test_errors_for_unknown_route_and_missing_dir(tmp_path, capsys):
    assert main(["virl", "show", "no-such-route"]) == 2
    assert "unknown route 'no-such-route'" in capsys.readouterr().err
    assert main(["virl", "routes", "--source", str(tmp_path / "missing")]) == 2
    assert "missing: not a directory" in capsys.readouterr().err


def test_convert_release_pickle_then_load_json(tmp_path, capsys):
    root = fake_release(tmp_path / "rel")
    assert main(["virl", "routes", "--source", str(root)]) == 2
    assert "refusing to unpickle" in capsys.readouterr().err
    assert main(["virl", "convert", str(root), "--trust-pickle"]) == 0
    assert (root / "gps_pano_mapping.json.gz").exists()
    assert main(["virl", "show", "tiny-0000", "--source", str(root), "--heading", "0"]) == 0
    assert "stop()" in capsys.readouterr().out


def test_generate_and_view(tmp_path, capsys):
    out = tmp_path / "gen"
    assert main(["virl", "generate", "-o", str(out), "-n", "3"]) == 0
    assert main(["virl", "view", "0", "--source", str(out), "--step", "1",
                 "--grid", str(tmp_path / "g.png"), "--map", str(tmp_path / "m.svg")]) == 0
    assert (tmp_path / "g.png").stat().st_size > 1000
    assert "<svg" in (tmp_path / "m.svg").read_text()


def test_cli_subprocess():
    script = Path(sys.executable).with_name("sftvsrl")
    cmd = [str(script)] if script.exists() else [sys.executable, "-c", "import sys; from app.cli import main; sys.exit(main())"]
    proc = subprocess.run(cmd + ["virl", "show", "3", "--heading", "10", "--relative"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "relative actions" in proc.stdout
