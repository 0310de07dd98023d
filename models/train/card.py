"""The evaluation table (init / SFT / RL × ID / rule-OOD, with binomial SEs) and the model card
(`README.md`) written beside every tiny checkpoint from its `training.json` and `eval.json`."""
from __future__ import annotations

import json
import tempfile
from dataclasses import fields
from pathlib import Path
from typing import Any

from .common import read_record

ROWS = ("init", "sft", "rl")


def _pct(r: dict[str, Any]) -> str:
    return f"{100 * r['success']:.1f} ± {100 * r['se']:.1f}"


def table_markdown(table: dict[str, dict[str, dict[str, Any]]]) -> str:
    """Markdown table: one row per model, episode success (%) ± SE for ID and rule-OOD."""
    lines = ["| model | ID success (J/Q/K = 10) | rule-OOD success (J/Q/K = 11/12/13) | ID first-try | OOD first-try | n per split |",
             "|---|---|---|---|---|---|"]
    for name in ROWS:
        if name not in table:
            continue
        r = table[name]
        lines.append(f"| {name} | {_pct(r['id'])} % | {_pct(r['ood'])} % | {100 * r['id']['first_try_success']:.1f} % "
                     f"| {100 * r['ood']['first_try_success']:.1f} % | {r['id']['n']} / {r['ood']['n']} |")
    any_row = (table.get("sft") or next(iter(table.values())))["id"]
    lines.append("")
    lines.append(f"Episode success with the paper's protocol (5 tries with sequential revision, success = some try "
                 f"scored +5), ± binomial standard error sqrt(p(1-p)/n). Hands: the first n of the paper's seed-42 "
                 f"streams (`language_id`, `language_rule_ood`). Decoding: {any_row['decoding']}, "
                 f"max {any_row['max_new_tokens']} new tokens (init row: {INIT_MAX_NEW_TOKENS}; the random init never "
                 f"stops on its own), torch seed {any_row['seed']}. init = the random initialisation SFT starts from.")
    return "\n".join(lines)


# The random init never emits <|eot_id|>: every try would run to the paper's 256 new tokens and the
# 5-try chats grow past 1,300 tokens, for a certain 0 %. Its row caps replies at 64 tokens (a
# correct reply is ~30), which changes nothing but the cost.
INIT_MAX_NEW_TOKENS = 64


def evaluation_table(sft_dir: "str | Path", rl_dir: "str | Path | None" = None, n: int = 500, *, seed: int = 0,
                     progress: bool = True, batch_size: int = 250,
                     rows: tuple[str, ...] = ROWS) -> dict[str, dict[str, dict[str, Any]]]:
    """Evaluate the random init (rebuilt from the SFT record), SFT and RL on both splits."""
    from .common import load_checkpoint
    from .evaluate import evaluate_gp
    from .sft import SFTConfig, build_init

    record = read_record(sft_dir)
    cfg_data = record.get("config", {})
    cfg = SFTConfig(**{f.name: (tuple(cfg_data[f.name]) if f.name == "betas" else cfg_data[f.name])
                       for f in fields(SFTConfig) if f.name in cfg_data})
    table: dict[str, dict[str, dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        dirs = {"init": lambda: build_init(cfg, Path(tmp) / "init"), "sft": lambda: Path(sft_dir)}
        if rl_dir:
            dirs["rl"] = lambda: Path(rl_dir)
        for name, path in dirs.items():
            if name not in rows:
                continue
            model, tok = load_checkpoint(path())
            max_new = INIT_MAX_NEW_TOKENS if name == "init" else 256
            table[name] = {s: evaluate_gp(model, tok, s, n, seed=seed, batch_size=batch_size, progress=progress,
                                          max_new_tokens=max_new) for s in ("id", "ood")}
    return table


def write_eval(table: dict, *dirs: "str | Path") -> None:
    for d in dirs:
        (Path(d) / "eval.json").write_text(json.dumps(table, indent=2) + "\n", encoding="utf-8")


def _size_mb(path: Path) -> float:
    f = path / "model.safetensors"
    return f.stat().st_size / 1e6 if f.is_file() else 0.0


def model_card(path: "str | Path", *, name: str, repro: str) -> str:
    """The README.md text for one checkpoint directory."""
    path = Path(path)
    rec = read_record(path)
    evaluation = json.loads((path / "eval.json").read_text()) if (path / "eval.json").is_file() else None
    cfg = rec.get("config", {})
    kind = rec.get("kind", "?")
    lines = [
        "---", "license: mit", "library_name: transformers", "pipeline_tag: text-generation",
        "tags: [sftvsrl, generalpoints, tiny-llama]", "---", "",
        f"# {name}: tiny GP-L {'SFT' if kind == 'sft' else 'RL (GRPO)'} checkpoint",
        "",
        "A ~1 M-parameter Llama-architecture model trained in this repository on CPU, for the GP-L "
        "(GeneralPoints, language-only) task of \"SFT Memorizes, RL Generalizes\" (Chu et al., 2025). It reads "
        "the paper's exact prompt through its chat template and answers in the paper's `ResponseEqn` format, "
        "so it runs through the same prompt → backend → verifier path as the 11B checkpoints "
        "(`AutoModelForCausalLM`, the `local` backend, vLLM).",
        "",
        "| | |", "|---|---|",
        f"| parameters | {rec.get('parameters', '?'):,} (hidden {cfg.get('hidden', '?')}, layers {cfg.get('layers', '?')}, "
        f"heads {cfg.get('heads', '?')}/{cfg.get('kv_heads', '?')} kv, vocab {cfg.get('vocab_size', '?')}) |"
        if kind == "sft" else f"| parameters | {rec.get('parameters', '?'):,} (architecture of the SFT init) |",
        f"| weights | `model.safetensors`, {_size_mb(path):.1f} MB (float32) |",
        f"| seed | {cfg.get('seed', '?')} |",
        f"| wall time | {rec.get('wall_s', '?')} s on a shared 2-core CPU (torch threads {cfg.get('threads', '?')}) |",
    ]
    if kind == "sft":
        lines += [
            f"| data | {rec.get('examples', '?'):,} single-turn expert examples on fresh in-distribution hands "
            f"(J/Q/K = 10; {rec.get('distinct_value_multisets', '?')} distinct value multisets), one pass |",
            f"| steps | {rec.get('steps', '?')} AdamW steps × batch {cfg.get('batch_size', '?')}, LR {cfg.get('lr', '?')} "
            f"(warm-up {cfg.get('warmup_steps', '?')}, cosine to {cfg.get('min_lr_ratio', '?')}×) |",
            f"| speed | {rec.get('steps_per_s', '?')} steps/s; final loss {rec.get('final_loss', 0):.4f} (answer tokens) |",
        ]
        lines += ["", "**Data.** Prompt = `models.prompts.gp_prompt(cards, 'face10')` byte-exact in the chat template; "
                  "answer = `response_eqn(cards, numbers, formula)` + `<|eot_id|>`, where the formula is the canonical "
                  "expert solution of the hand's values (`models.train.data.expert_formula`: the shortest "
                  "`distinct_solutions` entry the paper's float verifier grades +5). Loss on answer tokens only. "
                  "The tokenizer is a byte-level BPE trained on the task's own prompts and answers with cards, digit "
                  "runs and parentheses as single pieces (`models.tiny.train_tokenizer(compact=True)`)."]
    else:
        hist = rec.get("history", [])
        k = max(1, min(5, len(hist) // 2))
        first = {m: sum(h[m] for h in hist[:k]) / k for m in ("mean_return", "success")} if hist else {}
        last = {m: sum(h[m] for h in hist[-k:]) / k for m in ("mean_return", "success")} if hist else {}
        lines += [
            f"| init | the tiny SFT checkpoint (`gp-l-sft`) |",
            f"| algorithm | GRPO, {rec.get('updates', '?')} updates × {cfg.get('hands_per_update', '?')} hands × "
            f"{cfg.get('group_size', '?')} episodes, {cfg.get('epochs', '?')} epochs, clip {cfg.get('clip', '?')}, "
            f"Adam LR {cfg.get('lr', '?')}, no KL |",
            f"| data | {rec.get('episodes', '?'):,} on-policy multi-turn episodes ({rec.get('turns', '?'):,} graded tries) "
            f"on in-distribution hands only, reward = the verifier's step rewards |",
            f"| rollouts (T = {cfg.get('temperature', '?')}) | mean return {first.get('mean_return', 0):+.2f} over the first {k} "
            f"updates → {last.get('mean_return', 0):+.2f} over the last {k}; success {first.get('success', 0):.2f} → "
            f"{last.get('success', 0):.2f} (8 new hands per update: noisy) |",
        ]
    lines += ["", "## Evaluation", ""]
    if evaluation:
        lines.append(table_markdown(evaluation))
        lines += ["", "The in-distribution game is finite (566 solvable value multisets under J/Q/K = 10) and SFT saw "
                  "almost all of them, so ID success measures how well the mapping was learned, not generalisation "
                  "to unseen hands. Rule-OOD changes the prompt text and the values of J/Q/K."]
    else:
        lines.append("Not evaluated yet: `sftvsrl train table --sft … --rl …`.")
    lines += ["", "## Reproduce", "", "```bash", repro, "```", "",
              "Decoding defaults (`generation_config.json`): sampling T = 0.6, top-p = 0.9 (what the paper's "
              "evaluation is believed to have used), stop on `<|eot_id|>`.", ""]
    return "\n".join(lines)


def write_cards(sft_dir: "str | Path", rl_dir: "str | Path | None" = None) -> None:
    repro_sft = f"sftvsrl train sft --task gp-l --out {sft_dir}"
    Path(sft_dir, "README.md").write_text(model_card(sft_dir, name=Path(sft_dir).name, repro=repro_sft), encoding="utf-8")
    if rl_dir:
        repro_rl = f"{repro_sft}\nsftvsrl train rl --task gp-l --init {sft_dir} --out {rl_dir}"
        Path(rl_dir, "README.md").write_text(model_card(rl_dir, name=Path(rl_dir).name, repro=repro_rl), encoding="utf-8")
