"""The evaluation protocol, defined once: splits, seeded instance lists, per-episode scores, the
paper's metrics with binomial standard errors, and the paired comparison. Pure: no model, no store.

Two executors run it and visit identical instance lists: the batched in-process one
(`models.train.evaluate`, for checkpoints) and the concurrent HTTP/store one (`app.evaluation`,
for any configured model). Both turn each finished episode into an `EpisodeScore` and call
`split_metrics`, so a table means the same thing whichever made it.

Splits (spec generalpoints.md §3.3, §4; virl.md §1.5, §1.7, §3), from the registry:
- GP-L:  id (`language_id`), rule-ood (`language_rule_ood`), reworded (the ID hands and rule in
  held-out words, `game.gp.phrasings`: reading the rule vs memorising a sentence); GP-VL adds visual-ood
  (`vl_visual_ood_red`); hands = the reference's stream from seed 42 (`evaluation_hands`), the
  paper's 234 by default; 5 tries with sequential revision.
- V-IRL: id (absolute actions), rule-ood (relative actions, the same episodes), and a held-out
  route set (`streets` for V-IRL-L, `visual-ood` for V-IRL-VL: VLN_mini when given, else
  `bundled:helsinki-ood`, one episode per route). Episode i walks route i mod R with episode
  seed `seed + i` (seed 0 by default): the reference draws its 48 episodes from one global random
  stream that depends on its process state, so no stream could match it; ours is deterministic.
Metrics (`split_metrics`): episode success (GP: some call scored +5; V-IRL: the stop reached
without exhausting a budget), per-step accuracy (calls with outcome `correct` / all calls, pooled;
the paper's V-IRL metric), recognition accuracy for GP-VL (1 − calls with `wrong_cards` / calls),
outcome rates, the reference logger's reward-class rates; binomial SE sqrt(p(1 − p)/n). Per-step
SEs are over calls, which are correlated within an episode, so they are optimistic.

`instances(task, split, n, seed)` is a deterministic list: a shard `i/N` of an evaluation is
`items[i::N]` of it, and every executor visits the same list.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from itertools import combinations
from typing import Any, Iterable, Mapping, Sequence

from .tasks import Instance, InstanceError, get_task


def binomial_se(p: float, n: int) -> float:
    """The binomial standard error sqrt(p(1 − p)/n) (0 for n = 0), as the paper's error bars."""
    return math.sqrt(p * (1 - p) / n) if n else 0.0


def splits(task: str) -> tuple[str, ...]:
    return get_task(task).split_names


def instances(task: str, split: str, n: int | None = None, seed: int | None = None,
              sources: Mapping[str, str] | None = None, recognition: bool = False,
              phrasings: Sequence[str] | None = None) -> list[Instance]:
    """The first `n` instances of a split (the paper's count when None). `sources` maps a V-IRL
    stream key (`id`, `ood`) to a route source; `recognition` is GP-VL's recognition protocol
    (one attempt per episode, no verification); `phrasings` replace a rewording split's own
    held-out phrasings (GP `reworded`: a researcher's wordings, `game.gp.phrasings.read_phrasings`)."""
    spec = get_task(task)
    if recognition and not spec.recognition:
        raise InstanceError(f"the recognition protocol is a gp-vl evaluation, not {task}")
    if n is not None and n < 1:
        raise InstanceError("episodes must be at least 1")
    extra: dict = {"verify_iter": 1, "enable_verification": False} if recognition else {}
    if phrasings is not None:
        extra["phrasings"] = tuple(phrasings)
    return spec.instances(split, n, seed, dict(sources or {}), **extra)


def shard(items: Sequence, index: int, count: int) -> list:
    """Shard `index` of `count` (0-based) of a deterministic item list: every `count`-th item."""
    if not 0 <= index < count:
        raise ValueError(f"shard {index}/{count}: need 0 <= index < count")
    return list(items[index::count])


@dataclass(frozen=True)
class EpisodeScore:
    """What the metrics need of one finished episode: its success and each call's outcome/reward."""

    success: bool
    outcomes: tuple[str, ...]
    rewards: tuple[float, ...]
    exact_success: bool | None = None

    @classmethod
    def of_session(cls, session) -> "EpisodeScore":
        return cls(bool(session.success), tuple(r.outcome for r in session.results),
                   tuple(float(r.reward) for r in session.results), session.exact_success)

    @classmethod
    def of_steps(cls, success: bool, steps: Iterable[Mapping], exact_success: bool | None = None) -> "EpisodeScore":
        steps = list(steps)
        return cls(bool(success), tuple(s["outcome"] for s in steps), tuple(float(s["reward"]) for s in steps),
                   exact_success)


def split_metrics(task: str, episodes: Sequence[EpisodeScore]) -> dict:
    """The paper's metrics of one (model, split): success and per-step accuracy with binomial
    SEs, recognition accuracy (GP-VL), exact-arithmetic success, outcome and reference-class rates,
    first-call success, mean calls when solved, mean return."""
    spec = get_task(task)
    n = len(episodes)
    outcomes = Counter(o for e in episodes for o in e.outcomes)
    classes = Counter(spec.reference_class(r) for e in episodes for r in e.rewards)
    steps = sum(outcomes.values())
    wins = sum(e.success for e in episodes)
    correct = outcomes.get("correct", 0)
    solved_calls = [next((i + 1 for i, o in enumerate(e.outcomes) if o == "correct"), len(e.outcomes))
                    if spec.headline == "success_rate" else len(e.outcomes) for e in episodes if e.success]
    m: dict[str, Any] = {
        "episodes": n, "success": wins, "success_rate": wins / n if n else 0.0,
        "exact_success": sum(bool(e.exact_success) for e in episodes),
        "steps": steps, "correct_steps": correct, "per_step_accuracy": correct / steps if steps else 0.0,
        "outcomes": dict(sorted(outcomes.items())),
        "first_try_success": sum(bool(e.outcomes) and e.outcomes[0] == "correct" for e in episodes) / n
        if n else 0.0,
        "mean_calls_when_solved": sum(solved_calls) / len(solved_calls) if solved_calls else None,
        "mean_return": sum(sum(e.rewards) for e in episodes) / n if n else 0.0,
        "first_outcomes": dict(sorted(Counter(e.outcomes[0] for e in episodes if e.outcomes).items())),
    }
    m["success_se"] = binomial_se(m["success_rate"], n)
    m["exact_success_rate"] = m["exact_success"] / n if n else 0.0
    m["per_step_se"] = binomial_se(m["per_step_accuracy"], steps)
    m["outcome_rates"] = {k: v / steps for k, v in m["outcomes"].items()} if steps else {}
    # the reference logger's rates: per step by reward class, CORRECT_SOLUTION per episode (GP)
    m["reference_rates"] = {k: v / steps for k, v in sorted(classes.items())} if steps else {}
    if spec.headline == "success_rate":
        m["reference_rates"]["CORRECT_SOLUTION"] = m["success_rate"]
    if spec.recognition:
        m["recognition_accuracy"] = 1 - outcomes.get("wrong_cards", 0) / steps if steps else 0.0
    m["headline"], m["headline_se"] = m[spec.headline], m["success_se" if spec.headline == "success_rate"
                                                        else "per_step_se"]
    return m


def paired_difference(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Paired difference mean(a − b) of per-instance values (1/0 success) on the same instances,
    its standard error, z = diff / SE and n."""
    n = len(a)
    if n != len(b) or n == 0:
        raise ValueError(f"paired difference needs two equal, non-empty lists (got {len(a)} and {len(b)})")
    d = [x - y for x, y in zip(a, b)]
    mean = sum(d) / n
    var = sum((x - mean) ** 2 for x in d) / max(1, n - 1)
    se = math.sqrt(var / n)
    return {"diff": mean, "se": se, "z": mean / se if se else 0.0, "n": n}


def paired_ratio_difference(a: Sequence[Sequence[int]], b: Sequence[Sequence[int]]) -> dict[str, float]:
    """Paired difference of two pooled ratios on the same episodes — per-step accuracy, Σcorrect /
    Σsteps, where each model walks its own number of steps per episode. `a[i] = (correct, steps)`
    of episode i. The SE linearises each ratio (delta method) and treats episodes, not steps, as
    the independent units, so steps of one episode are not counted as independent evidence."""
    n = len(a)
    if n != len(b) or n == 0:
        raise ValueError(f"paired difference needs two equal, non-empty lists (got {len(a)} and {len(b)})")
    sa, sb = sum(s for _, s in a), sum(s for _, s in b)
    if not sa or not sb:
        return {"diff": 0.0, "se": 0.0, "z": 0.0, "n": n, "steps_a": sa, "steps_b": sb}
    ra, rb = sum(c for c, _ in a) / sa, sum(c for c, _ in b) / sb
    ma, mb = sa / n, sb / n
    u = [(ca - ra * na) / ma - (cb - rb * nb) / mb for (ca, na), (cb, nb) in zip(a, b)]
    var = sum(x * x for x in u) / max(1, n - 1)
    se = math.sqrt(var / n)
    return {"diff": ra - rb, "se": se, "z": (ra - rb) / se if se else 0.0, "n": n, "steps_a": sa, "steps_b": sb}


def paired(split: str, results: Mapping[str, Mapping[int, bool]]) -> list[dict]:
    """The paired comparison of every two models on the instances both finished: per split,
    how many episodes both / only A / only B / neither solved. `results[model][index] = success`."""
    out = []
    for a, b in combinations(list(results), 2):
        common = sorted(set(results[a]) & set(results[b]))
        counts = Counter("both" if results[a][i] and results[b][i] else "only_a" if results[a][i]
                         else "only_b" if results[b][i] else "neither" for i in common)
        out.append({"split": split, "a": a, "b": b, "n": len(common),
                    **{k: counts.get(k, 0) for k in ("both", "only_a", "only_b", "neither")}})
    return out
