"""The evaluation table (init / SFT / RL × the task's splits, with binomial SEs) and the model card
(`README.md`) written beside every tiny checkpoint from its `training.json` and `eval.json`.

`evaluation_table` runs the evaluation protocol (`game.protocol`) with the batched in-process
executor (`models.train.evaluate`) on every split of the task (read from the SFT checkpoint's
`training.json`); `eval.json` holds the protocol's metrics per (row, split), so the table means
what the app's evaluation tables mean. The per-task prose of a card is the task's training entry's
(`models.train.tasks`); the table, the findings and the paired comparison are the same for every task.

    sftvsrl train table --task gp-l --sft models/checkpoints/gp-l-sft --rl models/checkpoints/gp-l-rl
"""
from __future__ import annotations

import json
import tempfile
from dataclasses import fields
from pathlib import Path
from typing import Any

from game import protocol
from game.tasks import get_task

from .common import read_record

ROWS = ("init", "sft", "rl")

# The random init never emits <|eot_id|>: every try would run to the paper's 256 new tokens and the
# multi-turn chats grow past 1,300 tokens, for a certain 0 %. Its row caps replies at 64 tokens (a
# correct reply is ~30), which changes nothing but the cost.
INIT_MAX_NEW_TOKENS = 64

# (metric, its SE or None, column label) for a task's headline metric and the one shown beside it
_COLUMNS = {"success_rate": (("success_rate", "success_se", "success"), ("first_try_success", None, "first-try")),
            "per_step_accuracy": (("per_step_accuracy", "per_step_se", "per-step acc."),
                                  ("success_rate", "success_se", "success"))}


def _cell(r: dict[str, Any], metric: str, se: str | None) -> str:
    return f"{100 * r[metric]:.1f} ± {100 * r[se]:.1f} %" if se else f"{100 * r[metric]:.1f} %"


def _facts(table: dict) -> tuple[str, list[str], dict[str, Any]]:
    """The task, the splits present and one row's metrics (the SFT row when there is one)."""
    row = table.get("sft") or next(iter(table.values()))
    task = next(iter(row.values()))["task"]
    splits = [s for s in get_task(task).split_names if any(s in r for r in table.values())]
    return task, splits, row


def table_markdown(table: dict[str, dict[str, dict[str, Any]]]) -> str:
    """Markdown table: one row per model, the task's headline metric (± SE) and the metric shown
    beside it per split, then what the numbers are and the command that made them."""
    task, splits, any_row = _facts(table)
    spec = get_task(task)
    cols = _COLUMNS[spec.headline]
    head = ["model"] + [f"{s} {label}" for s in splits for _, _, label in cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in ROWS:
        if name in table:
            cells = [name] + [_cell(table[name][s], m, se) if s in table[name] else "–"
                              for s in splits for m, se, _ in cols]
            lines.append("| " + " | ".join(cells) + " |")
    first = any_row[splits[0]]
    split_facts = "; ".join(f"`{s}` = {any_row[s]['description']} ({any_row[s]['episodes']} episodes, "
                            f"{any_row[s]['steps']:,} calls for this row)" for s in splits if s in any_row)
    lines += ["", f"The evaluation protocol (`game.protocol`) for {spec.label}: episode success, per-step accuracy "
              f"(calls with outcome `correct` / all calls, pooled), ± binomial SE sqrt(p(1-p)/n) over episodes and "
              f"over calls respectively (calls within an episode are correlated, so the per-step SE is optimistic). "
              f"Splits: {split_facts}; instances = `protocol.instances({task!r}, split, n)`, the same lists the app's "
              f"`sftvsrl eval` plays. Decoding: {first['decoding']}, max {first['max_new_tokens']} new tokens (init "
              f"row: {INIT_MAX_NEW_TOKENS}; the random init never stops on its own), torch seed {first['seed']}. "
              f"init = the random initialisation SFT starts from. Made by `sftvsrl train table --task {task} "
              f"--sft … --rl … --n {first['episodes']}`."]
    pairs = paired_lines(table, splits)
    if pairs:
        lines += ["", "Paired on the same instances (episodes solved by both / only the first / only the second / "
                  "neither):", "", *pairs]
    return "\n".join(lines)


def paired_lines(table: dict, splits: list[str]) -> list[str]:
    """`protocol.paired` of SFT and RL per split, one Markdown bullet each."""
    if not {"sft", "rl"} <= set(table):
        return []
    out = []
    for s in splits:
        runs = {m: dict(enumerate(table[m][s].get("successes", []))) for m in ("sft", "rl") if s in table[m]}
        for p in protocol.paired(s, runs) if len(runs) == 2 else []:
            out.append(f"- `{s}`, {p['a']} vs {p['b']} (n = {p['n']}): both {p['both']}, only {p['a']} "
                       f"{p['only_a']}, only {p['b']} {p['only_b']}, neither {p['neither']}")
    return out


def evaluation_table(sft_dir: "str | Path", rl_dir: "str | Path | None" = None, n: int = 500, *, seed: int = 0,
                     progress: bool = True, batch_size: int = 250,
                     rows: tuple[str, ...] = ROWS) -> dict[str, dict[str, dict[str, Any]]]:
    """Evaluate the random init (rebuilt from the SFT record), SFT and RL on every split of the
    task (`n` episodes each; a split with one episode per route stops at its routes)."""
    from .common import load_checkpoint
    from .evaluate import evaluate
    from .sft import SFTConfig, build_init

    record = read_record(sft_dir)
    known = {f.name for f in fields(SFTConfig)}
    cfg = SFTConfig.from_dict({k: v for k, v in record.get("config", {}).items() if k in known})
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
            table[name] = {s: evaluate(model, tok, cfg.task, s, n, seed=seed, batch_size=batch_size,
                                       progress=progress, max_new_tokens=max_new)
                           for s in protocol.splits(cfg.task)}
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


def findings(table: dict) -> list[str]:
    """Plain statements of what the table shows: init → SFT and SFT → RL per split, in SE units."""
    task, splits, _ = _facts(table)
    cols = [(m, se, label) for m, se, label in _COLUMNS[get_task(task).headline] if se]
    out = []
    for a, b in (("init", "sft"), ("sft", "rl")):
        if a in table and b in table:
            parts = [f"{s} {label} {_change(table, a, b, s, m, se)}" for s in splits
                     if s in table[a] and s in table[b] for m, se, label in cols]
            out.append(f"- {a} → {b}: " + "; ".join(parts) + ".")
    return out


def _evaluation_section(evaluation: dict | None, notes: list[str], task: str) -> list[str]:
    lines = ["", "## Evaluation", ""]
    if not evaluation:
        return lines + [f"Not evaluated yet: `sftvsrl train table --task {task} --sft … --rl …`."]
    return lines + [table_markdown(evaluation), "",
                    "What it shows (differences in units of their combined SE; |z| < 2 is called noise):", "",
                    *findings(evaluation), "", *notes]


def _card_head(path: Path, rec: dict[str, Any], *, name: str, label: str, tags: str, intro: str) -> list[str]:
    """Front matter, title, the introduction and the facts table's first rows (both tasks' cards)."""
    kind = rec.get("kind", "?")
    return [
        "---", "license: mit", "library_name: transformers", "pipeline_tag: text-generation",
        f"tags: [{tags}]", "---", "",
        f"# {name}: tiny {label} {'SFT' if kind == 'sft' else 'RL (GRPO)'} checkpoint",
        "",
        "A ~1 M-parameter Llama-architecture model trained in this repository on CPU, for the " + intro,
        "",
        "| | |", "|---|---|", *_facts_rows(rec, path),
    ]


def _sft_rows(rec: dict[str, Any], data: str) -> list[str]:
    """The SFT facts: data (the task's words), steps and speed."""
    cfg = rec.get("config", {})
    return [
        f"| data | {data} |",
        f"| steps | {rec.get('steps', '?')} AdamW steps × batch {cfg.get('batch_size', '?')}, LR {cfg.get('lr', '?')} "
        f"(warm-up {cfg.get('warmup_steps', '?')}, cosine to {cfg.get('min_lr_ratio', '?')}×) |",
        f"| speed | {rec.get('steps_per_s', '?')} steps/s; final loss {rec.get('final_loss', 0):.4f} (answer tokens) |",
    ]


def _card_tail(repro: str, decoding: str) -> list[str]:
    return ["", "## Reproduce", "", "```bash", repro, "```", "",
            "Decoding defaults (`generation_config.json`): sampling T = 0.6, top-p = 0.9 " + decoding + ", "
            "stop on `<|eot_id|>`.", ""]


def virl_model_card(path: Path, rec: dict[str, Any], evaluation: dict | None, *, name: str, repro: str) -> str:
    """The README.md text for a V-IRL-L checkpoint directory."""
    cfg, kind = rec.get("config", {}), rec.get("kind", "?")
    lines = _card_head(path, rec, name=name, label="V-IRL-L", tags="sftvsrl, virl, navigation, tiny-llama", intro=(
        "V-IRL-L (V-IRL navigation, language-only) task of \"SFT Memorizes, RL Generalizes\" (Chu et al., 2025), on the "
        "bundled offline Helsinki routes (`bundled:helsinki`). It reads the paper's exact `Q_VIRL_L` prompt "
        "through its chat template and answers in the paper's `ResponseVIRL` format, so it runs through the "
        "same prompt → backend → verifier path as the 11B checkpoints (`AutoModelForCausalLM`, the `local` "
        "backend, vLLM)."))
    if kind == "sft":
        lines += _sft_rows(rec, (
            f"{rec.get('examples', '?'):,} single-turn expert examples (one per rail position) from "
            f"{rec.get('episodes', '?'):,} training episodes on {rec.get('distinct_routes', '?')} of the 508 "
            f"`bundled:helsinki` routes, absolute actions only (actions: {rec.get('actions', '?')}), one pass"))
        lines += [
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
            "| init | the tiny SFT checkpoint (`virl-l-pair-sft`) |",
            f"| algorithm | GRPO, {rec.get('updates', '?')} updates × {cfg.get('hands_per_update', '?')} training "
            f"episodes × {cfg.get('group_size', '?')} rollouts each, {cfg.get('epochs', '?')} epochs, clip "
            f"{cfg.get('clip', '?')}, Adam LR {cfg.get('lr', '?')}, no KL |",
            f"| data | {rec.get('episodes', '?'):,} on-policy multi-step, multi-turn episodes ({rec.get('calls', rec.get('turns', 0)):,} "
            f"generated calls) on `bundled:helsinki` with absolute actions only (the ID rule), verify_iter "
            f"{cfg.get('verify_iter', '?')}, reward = the verifier's step rewards summed over the episode |",
            f"| rollouts (T = {cfg.get('temperature', '?')}) | mean return {first.get('mean_return', 0):+.2f} over the "
            f"first {k} updates → {last.get('mean_return', 0):+.2f} over the last {k}; per-step accuracy "
            f"{first.get('per_step_accuracy', 0):.2f} → {last.get('per_step_accuracy', 0):.2f}; success "
            f"{first.get('success', 0):.2f} → {last.get('success', 0):.2f} ({cfg.get('hands_per_update', '?')} new "
            f"episodes per update: noisy) |",
        ]
    lines += _evaluation_section(evaluation, [
        "The rule-OOD variant changes only the action-space text and the graded turn words (relative "
        "`left`/`right`/`slightly …` instead of compass words); both words are in every turn sentence of the "
        "instruction. Held-out streets = `bundled:helsinki-ood`: routes in a held-out district (entirely east of "
        "longitude 24.947; every ID route lies entirely west of it), absolute actions. The paper's headline V-IRL-L "
        "result is rule-OOD per-step accuracy (11B: SFT 1.3 %, RL 91.8 %); a ~1 M-parameter model trained for "
        "minutes is not expected to reproduce it."], rec.get("task", ""))
    lines += _card_tail(repro, "(as the GP-L pair)")
    return "\n".join(lines)


def model_card(path: "str | Path", *, name: str, repro: str) -> str:
    """The README.md text for one checkpoint directory (the prose is its task's training entry's)."""
    from .tasks import DEFAULT_TASK, training_task

    path = Path(path)
    rec = read_record(path)
    evaluation = json.loads((path / "eval.json").read_text()) if (path / "eval.json").is_file() else None
    layout = training_task(rec.get("task", DEFAULT_TASK)).card
    if layout not in _LAYOUTS:
        raise ValueError(f"no model-card layout for task {rec.get('task')!r}")
    return _LAYOUTS[layout](path, rec, evaluation, name=name, repro=repro)


def gp_model_card(path: Path, rec: dict[str, Any], evaluation: dict | None, *, name: str, repro: str) -> str:
    """The README.md text for a GP-L checkpoint directory."""
    cfg, kind = rec.get("config", {}), rec.get("kind", "?")
    lines = _card_head(path, rec, name=name, label="GP-L", tags="sftvsrl, generalpoints, tiny-llama", intro=(
        "GP-L (GeneralPoints, language-only) task of \"SFT Memorizes, RL Generalizes\" (Chu et al., 2025). It reads "
        "the paper's exact prompt through its chat template and answers in the paper's `ResponseEqn` format, "
        "so it runs through the same prompt → backend → verifier path as the 11B checkpoints "
        "(`AutoModelForCausalLM`, the `local` backend, vLLM)."))
    if kind == "sft":
        lines += _sft_rows(rec, (
            f"{rec.get('examples', '?'):,} single-turn expert examples on fresh in-distribution hands "
            f"(J/Q/K = 10; {rec.get('distinct_value_multisets', '?')} distinct value multisets), one pass"))
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
            f"| data | {rec.get('episodes', '?'):,} on-policy multi-turn episodes ({rec.get('calls', rec.get('turns', 0)):,} graded tries) "
            f"on in-distribution hands only, reward = the verifier's step rewards |",
            f"| rollouts (T = {cfg.get('temperature', '?')}) | mean return {first.get('mean_return', 0):+.2f} over the first {k} "
            f"updates → {last.get('mean_return', 0):+.2f} over the last {k}; success {first.get('success', 0):.2f} → "
            f"{last.get('success', 0):.2f} (8 new hands per update: noisy) |",
        ]
    lines += _evaluation_section(evaluation, [
        "The in-distribution game is finite (566 solvable value multisets under J/Q/K = 10) and SFT saw almost all "
        "of them, so ID success measures how well the mapping was learned, not generalisation to unseen hands. "
        "Rule-OOD changes the prompt text and the values of J/Q/K."], rec.get("task", ""))
    lines += _card_tail(repro, "(what the paper's evaluation is believed to have used)")
    return "\n".join(lines)


_LAYOUTS = {"gp": gp_model_card, "virl": virl_model_card}   # TrainingTask.card -> its writer


def write_cards(sft_dir: "str | Path", rl_dir: "str | Path | None" = None) -> None:
    """Write README.md (the model card) into the SFT and RL checkpoint directories."""
    from .tasks import DEFAULT_TASK

    task = read_record(sft_dir).get("task", DEFAULT_TASK)
    evaluation = json.loads(Path(sft_dir, "eval.json").read_text()) if Path(sft_dir, "eval.json").is_file() else {}
    n = max((r.get("episodes", 0) for row in evaluation.values() for r in row.values()), default=500)
    table = f"sftvsrl train table --task {task} --sft {sft_dir}" + (f" --rl {rl_dir}" if rl_dir else "") + f" --n {n}"
    repro_sft = f"sftvsrl train sft --task {task} --out {sft_dir}"
    Path(sft_dir, "README.md").write_text(model_card(sft_dir, name=Path(sft_dir).name, repro=f"{repro_sft}\n{table}"),
                                          encoding="utf-8")
    if rl_dir:
        repro_rl = f"{repro_sft}\nsftvsrl train rl --task {task} --init {sft_dir} --out {rl_dir}\n{table}"
        Path(rl_dir, "README.md").write_text(model_card(rl_dir, name=Path(rl_dir).name, repro=repro_rl), encoding="utf-8")
