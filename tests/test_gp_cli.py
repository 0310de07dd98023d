"""The `sftvsrl gp` command line, in-process and as a real subprocess."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from app.cli import main
from conftest import ROOT, load_conformance


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_deal_is_seeded_and_prints_a_reusable_id(capsys):
    code, out, _ = run(capsys, "gp", "deal", "--seed", "7", "--ood", "--json")
    assert code == 0
    info = json.loads(out)
    assert info["rule"] == "face_jqk" and info["solvable"] and any(c in "JQK" for c in info["cards"])
    code, again, _ = run(capsys, "gp", "deal", "--seed", "7", "--ood", "--json")
    assert again == out
    code, out, _ = run(capsys, "gp", "solve", info["id"], "--rule", "11-13")
    assert code == 0 and "distinct solution" in out


def test_paper_config_hand_list(capsys):
    code, out, _ = run(capsys, "gp", "deal", "--config", "language_id", "-n", "3")
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()] == ["HKC5D2C4", "D7S5C2C4", "SAHQDQS5"]


def test_solve_and_unsolvable(capsys):
    code, out, _ = run(capsys, "gp", "solve", "3", "8", "8", "K")
    assert code == 0 and "(10*8-8)/3=24" in out
    code, out, _ = run(capsys, "gp", "solve", "A", "A", "A", "A")
    assert code == 1 and "no solution" in out


def test_check_prints_reward_and_feedback(capsys):
    code, out, _ = run(capsys, "gp", "check", "--cards", "K", "5", "10", "A", "10+10+5-1")
    assert code == 0 and "+5" in out and "Correct solution." in out
    code, out, _ = run(capsys, "gp", "check", "--cards", "3", "3", "8", "8", "8/(3-8/3)")
    assert "rejected by float rounding" in out
    code, out, _ = run(capsys, "gp", "check", "--cards", "K", "5", "10", "A", "--rule", "11-13", "13+10+1")
    assert "you didn't use numbers: [5]" in out


@pytest.mark.parametrize("argv, message", [
    (["gp", "check", "--cards", "K", "5", "10", "Z", "1"], "unknown card 'Z'"),
    (["gp", "deal", "--target", "0"], "target must be a positive integer"),
    (["gp", "check", "--deal", "HKC5", "1"], "malformed deal id"),
    (["gp", "score", "/nonexistent.jsonl"], "no such file"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 2 and message in err and err.count("\n") == 1


def test_score_matches_conformance_and_keeps_lines_aligned(tmp_path):
    rows = load_conformance("gp_verifier.jsonl")[:300]
    src = tmp_path / "in.jsonl"
    lines = [json.dumps({k: r[k] for k in ("cards", "rule", "target", "language_only", "model_output")})
             for r in rows]
    lines.insert(5, "{not json")
    lines.insert(9, json.dumps({"cards": ["K", "5", "10", "X"], "model_output": "x"}))
    lines.insert(12, json.dumps({"cards": ["K", "5", "10", "A"], "target": -3, "model_output": "x"}))
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    dst = tmp_path / "out.jsonl"
    proc = subprocess.run([sys.executable, "-m", "app.cli", "gp", "score", str(src), "-o", str(dst)],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2
    err_lines = proc.stderr.strip().splitlines()
    assert [e.split(": ")[3] for e in err_lines] == ["line 6", "line 10", "line 13"]
    out = [json.loads(line) for line in dst.read_text(encoding="utf-8").splitlines()]
    assert len(out) == len(lines)
    assert "error" in out[5] and "unknown card" in out[9]["error"] and "target" in out[12]["error"]
    graded = [o for i, o in enumerate(out) if i not in (5, 9, 12)]
    for got, r in zip(graded, rows, strict=True):
        if r.get("exception"):
            assert got["reward"] == -3.0
        else:
            assert (got["reward"], got["verify_info"], got["terminated"]) == (r["reward"], r["verify_info"], r["terminated"])


def test_score_refuses_to_overwrite_its_input(tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"cards": ["K", "5", "10", "A"], "model_output": "x"}) + "\n")
    code, _, err = run(capsys, "gp", "score", str(src), "-o", str(src))
    assert code == 2 and "refusing to overwrite" in err
    assert "model_output" in src.read_text()


def test_console_script_help_runs_as_subprocess():
    proc = subprocess.run([sys.executable, "-m", "app.cli", "gp", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0 and "deal" in proc.stdout and "score" in proc.stdout
