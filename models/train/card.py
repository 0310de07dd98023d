"""The evaluation table (init / SFT / RL × ID / rule-OOD [/ held-out streets], with binomial SEs)
and the model card (`README.md`) written beside every tiny checkpoint from its `training.json` and
`eval.json`. The task (gp-l, virl-l) is read from the SFT checkpoint's `training.json`."""
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


def _task_of(table: dict) -> str:
    row = next(iter(table.values()), {})
    return "virl-l" if "per_step_accuracy" in row.get("id", {}) else "gp-l"


def virl_table_markdown(table: dict[str, dict[str, dict[str, Any]]]) -> str:
    """Markdown table for V-IRL-L: per-step accuracy and episode success (%) ± SE per split."""
    splits = [s for s in ("id", "ood", "streets") if any(s in r for r in table.values())]
    names = {"id": "ID (absolute)", "ood": "rule-OOD (relative)", "streets": "held-out streets (absolute)"}
    head = ["model"] + [f"{names[s]} {m}" for s in splits for m in ("per-step acc.", "success")]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in ROWS:
        if name not in table:
            continue
        cells = [name]
        for s in splits:
            r = table[name].get(s)
            cells += ([f"{100 * r['per_step_accuracy']:.1f} ± {100 * r['per_step_se']:.1f} %", f"{_pct(r)} %"]
                      if r else ["–", "–"])
        lines.append("| " + " | ".join(cells) + " |")
    any_row = (table.get("sft") or next(iter(table.values())))
    ns = ", ".join(f"{names[s]} {any_row[s]['n']} episodes ({any_row[s]['calls']:,} calls for this row) on "
                   f"{any_row[s]['routes']} routes of `{any_row[s]['source']}`" for s in splits if s in any_row)
    first = any_row["id"]
    lines += ["", f"The paper's V-IRL protocol: per-step accuracy = calls scored +1 / all calls (retries and the "
              f"wasted third call on a position count), episode success = the stop was reached without exhausting "
              f"the 2-try budget anywhere; ± binomial SE sqrt(p(1-p)/n) over calls and over episodes respectively "
              f"(calls within an episode are correlated, so the per-step SE is optimistic). Splits: {ns}; episode i "
              f"walks route i mod R with episode seed i (random initial heading, drop rate 0.5). ID and rule-OOD use "
              f"the same episodes, only the action space differs. Decoding: {first['decoding']}, max "
              f"{first['max_new_tokens']} new tokens (init row: {INIT_MAX_NEW_TOKENS}), torch seed {first['seed']}. "
              f"init = the random initialisation SFT starts from."]
    return "\n".join(lines)


def table_markdown(table: dict[str, dict[str, dict[str, Any]]]) -> str:
    """Markdown table: one row per model, episode success (%) ± SE for ID and rule-OOD."""
    if _task_of(table) == "virl-l":
        return virl_table_markdown(table)
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
    from .evaluate import evaluate, virl_data
    from .sft import SFTConfig, build_init

    record = read_record(sft_dir)
    cfg_data = record.get("config", {})
    cfg = SFTConfig(**{f.name: (tuple(cfg_data[f.name]) if f.name == "betas" else cfg_data[f.name])
                       for f in fields(SFTConfig) if f.name in cfg_data})
    task = cfg.task
    if task == "virl-l":  # held-out streets: one episode per route when there are fewer routes than n
        splits = {"id": n, "ood": n, "streets": min(n, len(virl_data("bundled:helsinki-ood").routes))}
    else:
        splits = {"id": n, "ood": n}
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
            table[name] = {s: evaluate(model, tok, task, s, k, seed=seed, batch_size=batch_size, progress=progress,
                                       max_new_tokens=max_new) for s, k in splits.items()}
    return table


def write_eval(table: dict, *dirs: "str | Path") -> None:
    for d in dirs:
        (Path(d) / "eval.json").write_text(json.dumps(table, indent=2) + "\n", encoding="utf-8")


def _size_mb(path: Path) -> float:
    f = path / "model.safetensors"
    return f.stat().st_size / 1e6 if f.is_file() else 0.0


def _facts_rows(rec: dict[str, Any], path: Path) -> list[str]:
    """The parameters / weights / seed / wall-time rows every card starts its table with."""
    cfg, kind = rec.get("config", {}), rec.get("kind", "?")
    return [
        f"| parameters | {rec.get('parameters', '?'):,} (hidden {cfg.get('hidden', '?')}, layers {cfg.get('layers', '?')}, "
        f"heads {cfg.get('heads', '?')}/{cfg.get('kv_heads', '?')} kv, vocab {cfg.get('vocab_size', '?')}) |"
        if kind == "sft" else f"| parameters | {rec.get('parameters', '?'):,} (architecture of the SFT init) |",
        f"| weights | `model.safetensors`, {_size_mb(path):.1f} MB (float32) |",
        f"| seed | {cfg.get('seed', '?')} |",
        f"| wall time | {rec.get('wall_s', '?')} s on a shared 2-core CPU (torch threads {cfg.get('threads', '?')}) |",
    ]


def _rollout_trend(rec: dict[str, Any], metrics: tuple[str, ...]) -> tuple[int, dict, dict]:
    hist = rec.get("history", [])
    k = max(1, min(5, len(hist) // 2))
    first = {m: sum(h[m] for h in hist[:k]) / k for m in metrics} if hist else {}
    last = {m: sum(h[m] for h in hist[-k:]) / k for m in metrics} if hist else {}
    return k, first, last


def _change(table: dict, a: str, b: str, split: str, metric: str, se: str) -> str:
    ra, rb = table[a][split], table[b][split]
    d = rb[metric] - ra[metric]
    if d == 0 and ra[se] == rb[se] == 0:
        return f"no change ({100 * ra[metric]:.0f} % both)"
    z = abs(d) / max(1e-9, (ra[se] ** 2 + rb[se] ** 2) ** 0.5)
    verdict = "within noise" if z < 2 else ("up" if d > 0 else "down")
    return f"{100 * d:+.1f} pts ({verdict}, {z:.1f} SE)"


def virl_findings(table: dict) -> list[str]:
    """Plain statements of what the V-IRL-L table shows (differences in SE units)."""
    out = []
    names = {"id": "ID", "ood": "rule-OOD", "streets": "held-out streets"}
    for a, b in (("init", "sft"), ("sft", "rl")):
        if a not in table or b not in table:
            continue
        parts = []
        for split in ("id", "ood", "streets"):
            if split in table[a] and split in table[b]:
                parts.append(f"{names[split]} per-step accuracy {_change(table, a, b, split, 'per_step_accuracy', 'per_step_se')}, "
                             f"success {_change(table, a, b, split, 'success', 'se')}")
        out.append(f"- {a} → {b}: " + "; ".join(parts) + ".")
    return out


def virl_model_card(path: Path, rec: dict[str, Any], evaluation: dict | None, *, name: str, repro: str) -> str:
    """The README.md text for a V-IRL-L checkpoint directory."""
    cfg, kind = rec.get("config", {}), rec.get("kind", "?")
    lines = [
        "---", "license: mit", "library_name: transformers", "pipeline_tag: text-generation",
        "tags: [sftvsrl, virl, navigation, tiny-llama]", "---", "",
        f"# {name}: tiny V-IRL-L {'SFT' if kind == 'sft' else 'RL (GRPO)'} checkpoint",
        "",
        "A ~1 M-parameter Llama-architecture model trained in this repository on CPU, for the V-IRL-L "
        "(V-IRL navigation, language-only) task of \"SFT Memorizes, RL Generalizes\" (Chu et al., 2025), on the "
        "bundled offline Helsinki routes (`bundled:helsinki`). It reads the paper's exact `Q_VIRL_L` prompt "
        "through its chat template and answers in the paper's `ResponseVIRL` format, so it runs through the "
        "same prompt → backend → verifier path as the 11B checkpoints (`AutoModelForCausalLM`, the `local` "
        "backend, vLLM).",
        "",
        "| | |", "|---|---|", *_facts_rows(rec, path),
    ]
    if kind == "sft":
        lines += [
            f"| data | {rec.get('examples', '?'):,} single-turn expert examples (one per rail position) from "
            f"{rec.get('episodes', '?'):,} training episodes on {rec.get('distinct_routes', '?')} of the 508 "
            f"`bundled:helsinki` routes, absolute actions only (actions: {rec.get('actions', '?')}), one pass |",
            f"| steps | {rec.get('steps', '?')} AdamW steps × batch {cfg.get('batch_size', '?')}, LR {cfg.get('lr', '?')} "
            f"(warm-up {cfg.get('warmup_steps', '?')}, cosine to {cfg.get('min_lr_ratio', '?')}×) |",
            f"| speed | {rec.get('steps_per_s', '?')} steps/s; final loss {rec.get('final_loss', 0):.4f} (answer tokens) |",
            "", "**Data.** Every training episode is the reference's: a random route, a random initial heading, the "
            "drop-rate-0.5 rail (`game.virl.episode.start_episode`), walked with the golden action at every position. "
            "Prompt = `models.prompts.virl_prompt(instruction, obs_act_seq, absolute action space)` byte-exact with "
            "the golden history so far, in the chat template; answer = `response_virl(oracle observation, current "
            "sentence, golden action)` + `<|eot_id|>` (the paper's \"optimal single-turn prompt-response pairs\"; "
            "`models.train.data.virl_sft_pairs`). Loss on answer tokens only. Episode seeds start at 1,000,000, so "
            "no training episode is an evaluation episode (evaluation routes are the same 508 ID routes, as in the "
            "paper, with other headings and rails). The tokenizer is a byte-level BPE trained on V-IRL-L prompts of "
            "both action spaces and answers, with capitalised words (names), direction words, action names, digits "
            "and parentheses as separate pieces (`models.tiny.VIRL_SPLIT`).",
        ]
    else:
        k, first, last = _rollout_trend(rec, ("mean_return", "success", "per_step_accuracy"))
        lines += [
            "| init | the tiny SFT checkpoint (`virl-l-sft`) |",
            f"| algorithm | GRPO, {rec.get('updates', '?')} updates × {cfg.get('hands_per_update', '?')} training "
            f"episodes × {cfg.get('group_size', '?')} rollouts each, {cfg.get('epochs', '?')} epochs, clip "
            f"{cfg.get('clip', '?')}, Adam LR {cfg.get('lr', '?')}, no KL |",
            f"| data | {rec.get('episodes', '?'):,} on-policy multi-step, multi-turn episodes ({rec.get('turns', '?'):,} "
            f"generated calls) on `bundled:helsinki` with absolute actions only (the ID rule), verify_iter "
            f"{cfg.get('verify_iter', '?')}, reward = the verifier's step rewards summed over the episode |",
            f"| rollouts (T = {cfg.get('temperature', '?')}) | mean return {first.get('mean_return', 0):+.2f} over the "
            f"first {k} updates → {last.get('mean_return', 0):+.2f} over the last {k}; per-step accuracy "
            f"{first.get('per_step_accuracy', 0):.2f} → {last.get('per_step_accuracy', 0):.2f}; success "
            f"{first.get('success', 0):.2f} → {last.get('success', 0):.2f} ({cfg.get('hands_per_update', '?')} new "
            f"episodes per update: noisy) |",
        ]
    lines += ["", "## Evaluation", ""]
    if evaluation:
        lines.append(table_markdown(evaluation))
        lines += ["", "What it shows (differences in units of their combined SE; |z| < 2 is called noise):", "",
                  *virl_findings(evaluation), "",
                  "The rule-OOD variant changes only the action-space text and the graded turn words (relative "
                  "`left`/`right`/`slightly …` instead of compass words); both words are in every turn sentence of "
                  "the instruction. Held-out streets = `bundled:helsinki-ood`: routes in a held-out district (entirely "
                  "east of longitude 24.947; every ID route lies entirely west of it), absolute actions. The paper's headline V-IRL-L result is rule-OOD per-step accuracy (11B: SFT 1.3 %, RL "
                  "91.8 %); a ~1 M-parameter model trained for minutes is not expected to reproduce it."]
    else:
        lines.append("Not evaluated yet: `sftvsrl train table --task virl-l --sft … --rl …`.")
    lines += ["", "## Reproduce", "", "```bash", repro, "```", "",
              "Decoding defaults (`generation_config.json`): sampling T = 0.6, top-p = 0.9 (as the GP-L pair), "
              "stop on `<|eot_id|>`.", ""]
    return "\n".join(lines)


def model_card(path: "str | Path", *, name: str, repro: str) -> str:
    """The README.md text for one checkpoint directory."""
    path = Path(path)
    rec = read_record(path)
    evaluation = json.loads((path / "eval.json").read_text()) if (path / "eval.json").is_file() else None
    if rec.get("task") == "virl-l":
        return virl_model_card(path, rec, evaluation, name=name, repro=repro)
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
        "| | |", "|---|---|", *_facts_rows(rec, path),
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
        k, first, last = _rollout_trend(rec, ("mean_return", "success"))
        lines += [
            "| init | the tiny SFT checkpoint (`gp-l-sft`) |",
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
    task = read_record(sft_dir).get("task", "gp-l")
    repro_sft = f"sftvsrl train sft --task {task} --out {sft_dir}"
    Path(sft_dir, "README.md").write_text(model_card(sft_dir, name=Path(sft_dir).name, repro=repro_sft), encoding="utf-8")
    if rl_dir:
        repro_rl = f"{repro_sft}\nsftvsrl train rl --task {task} --init {sft_dir} --out {rl_dir}"
        Path(rl_dir, "README.md").write_text(model_card(rl_dir, name=Path(rl_dir).name, repro=repro_rl), encoding="utf-8")
