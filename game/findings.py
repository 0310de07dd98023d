"""The findings format and its lenses: what a staged-pipeline evaluation measured, and the words
that follow from the numbers. Pure: no model, no store; written by `models.train.pipeline`
(and the vision pipeline), read by the app's Findings view (`app.findings`) and the CLI.

A `findings.json` (format 2) holds, for one task:
- `table`: per stage (`base`, `init`, `sft`, `rl`, `sft-matched`, `sft-diverse`) and split, a
  cell {value (the task's headline), se (binomial), n, success, first_try_success,
  solved_after_feedback, unfinished_replies, …}; the seeded stages' cells are the primary seed's
  (what ships and what Inspect shows), `seed_table` aggregates them over every training seed
  (mean, spread, per-seed values and binomial SEs);
- `lenses`: the RL − SFT comparison under every lens a careful reviewer applies, per split, per
  seed and aggregated: `final` (final checkpoints), `matched_compute` (the SFT snapshot whose
  training FLOPs are closest to RL's), `matched_id` (the SFT snapshot whose ID score is closest to
  RL's — `sft-matched`), `matched_kl` (the SFT snapshot whose KL(Init ‖ ·) is closest to RL's);
  every comparison paired on the same instances;
- `paired`: the primary seed's paired differences between stages (`COMPARISONS`);
- `curves`: per seed, SFT and RL snapshots (step, FLOPs, KL, every split's headline);
- `config`, `protocol`, `environment`.

`words(findings, view)` turns those numbers into the headline, one verdict per OOD split and the
speaker's notes: "as the paper found" only when RL beats SFT at matched ID skill in every seed and
on the mean; otherwise it says which lens holds and which breaks. Nothing a person reads about a
result is written by hand.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from .protocol import paired_difference, paired_ratio_difference

FORMAT = 2
FINDINGS_FILE = "findings.json"
EPISODES_FILE = "episodes.jsonl.gz"
METRIC_WORDS = {"success_rate": "episode success", "per_step_accuracy": "per-step accuracy"}
STAGE_LABELS = {"base": "Base", "init": "Init", "sft": "SFT", "rl": "RL", "sft-matched": "SFT (matched ID)",
                "sft-diverse": "SFT-diverse"}
COMPARISONS = (("rl_minus_sft", "rl", "sft"), ("rl_minus_init", "rl", "init"), ("sft_minus_init", "sft", "init"),
               ("rl_minus_sft_matched", "rl", "sft-matched"), ("sft_diverse_minus_sft", "sft-diverse", "sft"))
LENSES = ("final", "matched_compute", "matched_id", "matched_kl")
LENS_WORDS = {"final": "at the final checkpoints", "matched_compute": "at matched training compute",
              "matched_id": "at matched in-distribution skill", "matched_kl": "at matched KL to Init"}
SIGNIFICANT = 2.0        # |z| at which a difference counts


def cell_value(cell: Mapping[str, Any]) -> float:
    """A table cell's headline value (`value`; files written before V-IRL-L carry `success`)."""
    return cell["value"] if "value" in cell else cell["success"]


def paired_outcomes(a: Sequence, b: Sequence) -> dict[str, float]:
    """Paired difference of two models' per-instance outcomes on the same instances: of 1/0
    successes, or of pooled per-step accuracy from [correct, calls] per episode."""
    if a and isinstance(a[0], (list, tuple)):
        return paired_ratio_difference(a, b)
    return paired_difference(a, b)


def headline_of(outcomes: Sequence) -> float:
    """The headline of per-instance outcomes: mean success, or pooled per-step accuracy."""
    if outcomes and isinstance(outcomes[0], (list, tuple)):
        steps = sum(s for _, s in outcomes)
        return sum(c for c, _ in outcomes) / steps if steps else 0.0
    return sum(outcomes) / len(outcomes) if outcomes else 0.0


# ---------------------------------------------------------------------------------------------
# Lenses


def closest(points: Sequence[Mapping[str, Any]], key: str, target: float) -> Mapping[str, Any] | None:
    """The point whose `key` is closest to `target` (the earliest on ties); None if none has it."""
    have = [p for p in points if p.get(key) is not None]
    if not have:
        return None
    return min(have, key=lambda p: (abs(float(p[key]) - target), p.get("step", 0)))


def lens_entry(rl: Mapping[str, Any], sft: Mapping[str, Any], splits: Sequence[str], *, n: int | None = None,
               **facts) -> dict[str, Any]:
    """One seed's RL − SFT comparison: `rl` and `sft` carry per-split `outcomes` on the same
    instances (the first `n` of each are compared) and their headline values."""
    out: dict[str, Any] = {**facts, "diff": {}, "rl": {}, "sft": {}}
    for split in splits:
        a, b = rl["outcomes"].get(split), sft["outcomes"].get(split)
        if not a or not b:
            continue
        k = min(len(a), len(b), n or len(a))
        a, b = a[:k], b[:k]
        out["diff"][split] = paired_outcomes(a, b)
        out["rl"][split], out["sft"][split] = headline_of(a), headline_of(b)
    return out


def seed_lenses(rl: Mapping[str, Any], sft_final: Mapping[str, Any], sft_points: Sequence[dict[str, Any]],
                splits: Sequence[str], curve_n: int) -> dict[str, dict[str, Any]]:
    """Every lens for one training seed. `rl` and `sft_final`: the final checkpoints (outcomes,
    flops, kl); `sft_points`: SFT snapshots evaluated on the first `curve_n` instances (step,
    flops, kl, outcomes). The matched snapshot of each lens is the real checkpoint closest to RL
    on that axis; its comparison uses the first `curve_n` instances of both."""
    rl_id = headline_of(rl["outcomes"]["id"][:curve_n])
    for point in sft_points:
        point.setdefault("id", headline_of(point["outcomes"]["id"]))
    out = {"final": lens_entry(rl, sft_final, splits, sft_step="final", sft_flops=sft_final.get("flops"),
                               rl_flops=rl.get("flops"), sft_kl=sft_final.get("kl"), rl_kl=rl.get("kl"))}
    for lens, key, target in (("matched_compute", "flops", rl.get("flops")), ("matched_id", "id", rl_id),
                              ("matched_kl", "kl", rl.get("kl"))):
        if target is None:
            continue
        p = closest(sft_points, key, float(target))
        if p is None:
            continue
        out[lens] = lens_entry(rl, p, splits, n=curve_n, sft_step=p["step"], sft_flops=p.get("flops"),
                               rl_flops=rl.get("flops"), sft_kl=p.get("kl"), rl_kl=rl.get("kl"),
                               sft_id=p["id"], rl_id=rl_id)
    return out


def aggregate_lenses(per_seed: Mapping[int, Mapping[str, Mapping[str, Any]]], splits: Sequence[str]) -> dict:
    """Per lens and split, across seeds: every seed's paired difference, their mean, the smallest
    and largest, and whether the sign held in every seed with each beyond 2 SE."""
    out: dict[str, dict] = {}
    for lens in LENSES:
        rows = {seed: v[lens] for seed, v in per_seed.items() if lens in v}
        if not rows:
            continue
        out[lens] = {}
        for split in splits:
            diffs = [(seed, r["diff"][split]) for seed, r in rows.items() if split in r["diff"]]
            if not diffs:
                continue
            values = [d["diff"] for _, d in diffs]
            mean = sum(values) / len(values)
            # the SE of the mean of independent seeds' paired differences
            se = math.sqrt(sum(d["se"] ** 2 for _, d in diffs)) / len(diffs)
            out[lens][split] = {
                "per_seed": [{"seed": seed, **d, **{k: rows[seed].get(k) for k in
                                                   ("sft_step", "sft_flops", "rl_flops", "sft_kl", "rl_kl",
                                                    "sft_id", "rl_id")}} for seed, d in diffs],
                "mean": mean, "se": se, "z": mean / se if se else 0.0,
                "min": min(values), "max": max(values), "seeds": len(values),
                "positive_every_seed": all(v > 0 for v in values),
                "significant_every_seed": all(d["se"] and d["diff"] / d["se"] >= SIGNIFICANT for _, d in diffs),
                "negative_every_seed": all(v < 0 for v in values),
            }
    return out


def seed_table(rows: Mapping[int, Mapping[str, Mapping[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per split, a seeded stage's cells over seeds (`rows[seed][split]` = cell): mean headline,
    half-range spread, sample SD, per-seed values and binomial SEs."""
    out: dict[str, dict[str, Any]] = {}
    splits = sorted({s for r in rows.values() for s in r})
    for split in splits:
        cells = [(seed, r[split]) for seed, r in sorted(rows.items()) if split in r]
        values = [cell_value(c) for _, c in cells]
        mean = sum(values) / len(values)
        sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
        out[split] = {"mean": mean, "spread": (max(values) - min(values)) / 2, "sd": sd,
                      "values": {str(seed): cell_value(c) for seed, c in cells},
                      "se": {str(seed): c.get("se") for seed, c in cells},
                      "first_try": {str(seed): c.get("first_try_success") for seed, c in cells},
                      "after_feedback": {str(seed): c.get("solved_after_feedback") for seed, c in cells},
                      "n": cells[0][1].get("n")}
    return out


def feedback_share(successes: Sequence[int], solved_calls: Sequence[int | None]) -> float | None:
    """The share of solved episodes solved after the verifier's feedback (at try 2 or later)."""
    solved = [c for s, c in zip(successes, solved_calls) if s and c]
    return sum(1 for c in solved if c >= 2) / len(solved) if solved else None


# ---------------------------------------------------------------------------------------------
# Words that follow the numbers


@dataclass(frozen=True)
class View:
    """How one task's findings are told (from the task registry): the OOD splits a verdict speaks
    of with their words, what a paired comparison pairs, split headings."""

    ood: Mapping[str, str]                    # split -> words ("the flipped rule (J/Q/K = 11/12/13)")
    instances: str = "hands"
    labels: Mapping[str, str] = field(default_factory=dict)
    control: str | None = None                # the wording control split (GP-L `reworded`), if any


def _pts(x: float) -> str:
    return f"{100 * x:+.1f} points"


def _z(d: Mapping[str, Any]) -> float:
    return d["diff"] / d["se"] if d.get("se") else 0.0


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def lens_holds(agg: Mapping[str, Any] | None) -> bool | None:
    """A lens supports "RL generalizes better": the mean difference beyond 2 SE and positive in
    every seed. None when the lens was not measured."""
    if not agg:
        return None
    return agg["z"] >= SIGNIFICANT and agg["positive_every_seed"]


def lens_reverses(agg: Mapping[str, Any] | None) -> bool:
    if not agg:
        return False
    return agg["z"] <= -SIGNIFICANT and agg["negative_every_seed"]


def _lens_sentence(lens: str, agg: Mapping[str, Any], unit: str) -> str:
    seeds = agg["seeds"]
    per = ", ".join(f"{_pts(p['diff'])}" for p in agg["per_seed"])
    state = ("RL ahead" if lens_holds(agg) else "SFT ahead" if lens_reverses(agg)
             else "no consistent difference")
    return (f"{LENS_WORDS[lens]}: RL − SFT {_pts(agg['mean'])} ± {100 * agg['se']:.1f} "
            f"(mean of {seeds} seed{'s' if seeds != 1 else ''}: {per}; {unit}) — {state}")


def words(findings: Mapping[str, Any], view: View) -> dict[str, Any]:
    """The headline, one verdict per OOD split (every lens), the wording-control and feedback
    sentences, from the numbers only. Returns {"headline", "verdicts": [...], "notes": [...]}."""
    lenses = findings.get("lenses") or {}
    table = findings.get("table") or {}
    unit = "paired on the same " + view.instances
    verdicts, holds = [], {}
    for split, ood_words in view.ood.items():
        if not any(split in lenses.get(lens, {}) for lens in LENSES):
            continue
        parts = [_lens_sentence(lens, lenses[lens][split], unit) for lens in LENSES if split in lenses.get(lens, {})]
        holds[split] = {lens: lens_holds(lenses.get(lens, {}).get(split)) for lens in LENSES}
        verdicts.append(f"On {ood_words}: " + "; ".join(parts) + ".")
    primary = next(iter(view.ood), "")  # "": no OOD split (no split is named so)
    h = holds.get(primary, {})
    name = view.ood.get(primary, "the OOD split")
    learned = ((findings.get("paired") or {}).get("rl_minus_init") or {}).get("id")
    rl_learned = bool(learned and learned.get("se") and _z(learned) >= SIGNIFICANT)
    sizes = ", ".join(f"{_pts(lenses[k][primary]['mean'])} ± {100 * lenses[k][primary]['se']:.1f} {LENS_WORDS[k]}"
                      for k in LENSES if primary in lenses.get(k, {}))
    held = [LENS_WORDS[k] for k, v in h.items() if v]
    broke = [LENS_WORDS[k] for k, v in h.items() if v is False]
    reversed_ = [LENS_WORDS[k] for k in LENSES if lens_reverses(lenses.get(k, {}).get(primary))]
    no_learning = (f" But RL did not learn the in-distribution task here (RL − Init {_pts(learned['diff'])} ± "
                   f"{100 * learned['se']:.1f}): its lead is SFT losing ground while RL stays near Init, not the "
                   f"paper's RL gains." if learned and not rl_learned else "")
    if not h:
        headline = "No RL-vs-SFT comparison was measured for this task."
    elif h.get("matched_id") and h.get("final") and not broke and rl_learned:
        headline = (f"RL generalizes better than SFT on {name} under every lens, in every training seed "
                    f"(RL − SFT {sizes}) — as the paper found.")
    elif not held:
        headline = (f"On {name}, RL does not beat SFT under any lens here"
                    + (f"; SFT is ahead {', '.join(reversed_)}" if reversed_ else "")
                    + f" (RL − SFT {sizes}) — the paper's finding does not reproduce at this scale.")
    else:
        headline = (f"On {name}, RL beats SFT {', '.join(held)}"
                    + (f", but not {', '.join(broke)}" if broke else "")
                    + (f" (SFT is ahead {', '.join(reversed_)})" if reversed_ else "")
                    + f": RL − SFT {sizes}." + no_learning
                    + " The paper's finding holds only partly here.")
    # the same verdict in one line, for banners (the landing header)
    if not h:
        short = headline
    elif h.get("matched_id") and h.get("final") and not broke and rl_learned:
        short = f"RL generalizes better than SFT on {name} under every lens — as the paper found."
    elif not held:
        short = f"RL does not beat SFT on {name} under any lens — the paper's finding does not reproduce here."
    else:
        short = (f"RL beats SFT on {name} under {len(held)} of {len(held) + len(broke)} lenses"
                 + (f" (not {', '.join(broke)})" if broke else "")
                 + ("; but RL did not learn in distribution" if learned and not rl_learned else "")
                 + " — the paper's finding holds only partly.")
    notes = []
    if view.control and "id" in (findings.get("splits") or view.labels or {"id": 1}):
        rows, gaps = [], []
        for stage in ("init", "sft", "rl", "sft-matched"):
            row = table.get(stage) or {}
            if "id" in row and view.control in row:
                idv, ctl = cell_value(row["id"]), cell_value(row[view.control])
                se = math.sqrt((row["id"].get("se") or 0) ** 2 + (row[view.control].get("se") or 0) ** 2)
                gaps.append((ctl - idv, se))
                rows.append(f"{STAGE_LABELS.get(stage, stage)} {_pct(idv)} → {_pct(ctl)} ({_pts(ctl - idv)})")
        if rows:
            lost = [g for g, e in gaps if e and g / e <= -SIGNIFICANT]
            verdict = ("every stage scores about the same on both: they read the rule, not one sentence" if not lost
                       else f"{len(lost)} of {len(gaps)} stages lose {-100 * max(lost):.1f} to {-100 * min(lost):.1f} points "
                            f"when the rule is reworded: the wording still matters to them")
            notes.append(f"Reading the rule, not one sentence: in-distribution → the same rule in held-out words "
                         f"({view.labels.get(view.control, view.control)}): " + "; ".join(rows) + f". So {verdict}.")
    fb = []
    for stage in ("init", "sft", "rl"):
        row = table.get(stage) or {}
        share = (row.get("id") or {}).get("solved_after_feedback")
        if share is not None:
            fb.append(f"{STAGE_LABELS[stage]} solves {_pct(row['id'].get('first_try_success') or 0)} at the first "
                      f"try and {_pct(cell_value(row['id']))} within the budget in distribution "
                      f"({_pct(share)} of its solves came after the verifier's feedback)")
    if fb:
        notes.append("Using the feedback: " + "; ".join(fb) + ".")
    return {"headline": headline, "short": short, "verdicts": verdicts, "notes": notes, "holds": holds}


def markdown(findings: Mapping[str, Any], view: View) -> str:
    """The findings as Markdown, every number from the file: the primary seed's table (headline
    ± binomial SE per split, first-try success, share solved after feedback, KL to Init), the
    seeds' spread, the lens table, then `words` (headline, verdicts, notes)."""
    splits = list(findings.get("splits") or (findings.get("protocol") or {}).get("splits") or [])
    table = findings.get("table") or {}
    label = lambda s: view.labels.get(s, s)  # noqa: E731
    n = (findings.get("protocol") or {}).get("episodes_per_split")
    out = [f"| stage | {' | '.join(label(s) for s in splits)} | KL(Init ‖ ·) |", "|---" * (len(splits) + 2) + "|"]
    for stage, row in table.items():
        cells = []
        for s in splits:
            c = row.get(s)
            if not c:
                cells.append("–")
                continue
            extra = [f"first try {_pct(c['first_try_success'])}"] if c.get("first_try_success") is not None else []
            if c.get("solved_after_feedback") is not None:
                extra.append(f"{_pct(c['solved_after_feedback'])} of solves after feedback")
            cells.append(f"**{_pct(cell_value(c))}** ± {100 * c['se']:.1f}" + (f" ({'; '.join(extra)})" if extra else ""))
        kl = row.get("kl_from_init")
        step = f" (step {row['step']})" if row.get("step") is not None else ""
        out.append(f"| {STAGE_LABELS.get(stage, stage)}{step} | {' | '.join(cells)} | "
                   f"{'–' if kl is None else f'{kl:.3f}'} |")
    seeds = findings.get("seeds") or []
    out += ["", f"Primary training seed {findings.get('primary_seed', 0)}"
            + (f"; n = {n} {view.instances} per split" if n else "") + " (± binomial SE)."]
    spread = findings.get("seed_table") or {}
    if len(seeds) > 1 and spread:
        out += ["", f"Across training seeds ({', '.join(map(str, seeds))}): mean (per-seed values)", "",
                f"| stage | {' | '.join(label(s) for s in splits)} |", "|---" * (len(splits) + 1) + "|"]
        for stage, rows in spread.items():
            cells = [f"{_pct(rows[s]['mean'])} ({', '.join(_pct(v) for v in rows[s]['values'].values())})"
                     if s in rows else "–" for s in splits]
            out.append(f"| {STAGE_LABELS.get(stage, stage)} | {' | '.join(cells)} |")
    lenses = findings.get("lenses") or {}
    if lenses:
        out += ["", "RL − SFT, paired on the same " + view.instances + ", mean over seeds ± SE (per seed):", "",
                f"| lens | {' | '.join(label(s) for s in splits)} |", "|---" * (len(splits) + 1) + "|"]
        for lens in LENSES:
            if lens not in lenses:
                continue
            cells = []
            for s in splits:
                a = lenses[lens].get(s)
                cells.append("–" if not a else f"{_pts(a['mean'])} ± {100 * a['se']:.1f} "
                             f"({', '.join(_pts(p['diff']) for p in a['per_seed'])})")
            out.append(f"| {LENS_WORDS[lens]} | {' | '.join(cells)} |")
    w = words(findings, view)
    out += ["", f"**{w['headline']}**", "", *[f"- {v}" for v in w["verdicts"]], *[f"- {x}" for x in w["notes"]]]
    return "\n".join(out) + "\n"
