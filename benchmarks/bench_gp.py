"""GeneralPoints benchmarks: verifier throughput, scripted episodes, solution table, table image."""
from __future__ import annotations

import random
import time
from itertools import combinations_with_replacement, permutations, product

from run import report, timed

from game.gp import render, solver, verifier
from game.gp.arith import evaluate
from game.gp.cards import Rule
from game.gp.deal import DealConfig, Dealer
from game.gp.episode import Episode


def _reply(formula: str, hand) -> str:
    return ("\n{\n" f'  "cards": {hand.labels!r},\n' f'  "number": {hand.numbers()!r},\n'
            f'  "formula": "{formula}=24",\n' "}")


def _workload(n_hands: int = 400):
    """Realistic replies: correct, wrong value, wrong numbers, illegal, partial — per hand."""
    rng = random.Random(0)
    out = []
    for hand in Dealer(1, DealConfig()).take(n_hands):
        nums = hand.numbers()
        sol = rng.choice(hand.solutions())
        out += [
            (_reply(sol, hand), nums),
            (_reply("+".join(map(str, nums)), hand), nums),
            (_reply(sol.replace(str(nums[0]), str(nums[0] % 9 + 1), 1), hand), nums),
            (_reply(" ".join(sol), hand), nums),
            (_reply(sol[:-1] if sol.endswith(")") else sol + "+", hand), nums),
        ]
    return out


def _clear_caches():
    verifier._grade_cached.cache_clear()
    solver._reference_cached.cache_clear()
    solver._prefixes.cache_clear()


def bench_verifier() -> None:
    work = _workload()
    n = len(work)

    def run_all():
        for text, nums in work:
            verifier.verify(text, nums)

    def naive():  # no caches at all: every check re-solves its hand, like a naive verifier
        for text, nums in work[:40]:
            _clear_caches()
            verifier.verify(text, nums)

    naive_rate = 40 / timed(naive, min_time=0.5)
    _clear_caches()
    for _, nums in work:
        solver.solution_prefixes(nums)  # per-hand solver cache, built at deal time in practice

    def cold():
        verifier._grade_cached.cache_clear()
        run_all()

    cold_rate = n / timed(cold, min_time=0.5)
    run_all()
    warm_rate = n / timed(run_all, min_time=0.5)
    report("verifier checks/s, unique replies (cold cache)", cold_rate, "checks/s",
           baseline=naive_rate, baseline_name="re-solving verifier")
    report("verifier checks/s, repeated formulas (warm cache)", warm_rate, "checks/s",
           baseline=naive_rate, baseline_name="re-solving verifier", target=">= 100k/s")


def bench_episodes() -> None:
    hands = Dealer(2, DealConfig()).take(300)
    for h in hands:
        h.solutions()

    def play():
        for hand in hands:
            ep = Episode(hand, Rule.FACE10)
            sol = hand.solutions()[0]
            for text in (_reply("1+1", hand), _reply(" ".join(sol), hand), _reply(sol, hand)):
                if ep.done:
                    break
                ep.step(text)

    rate = len(hands) / timed(play, min_time=0.5)
    report("GP-L episodes/s (scripted: wrong, illegal, right)", rate, "episodes/s")


def _naive_reference(values, target=24):
    """Pure-Python Fraction enumeration of the reference's solution strings (the baseline)."""
    found = set()
    for a, b, c, d in set(permutations(values)):
        for o1, o2, o3 in product("+-*/", repeat=3):
            for shape in solver.SHAPES:
                text = shape.format(a=a, b=b, c=c, d=d, o1=o1, o2=o2, o3=o3)
                try:
                    if evaluate(text, "exact") == target:
                        found.add(text)
                except Exception:  # noqa: BLE001
                    pass
    return found


def bench_solution_table() -> None:
    def build():
        solver.solution_table.cache_clear()
        solver.solution_table(24)

    ours = timed(build, min_time=1.0)
    sample = list(combinations_with_replacement(range(1, 14), 4))[::91][:20]
    start = time.perf_counter()
    for key in sample:
        _naive_reference(key)
    naive_full = (time.perf_counter() - start) / len(sample) * 1820
    report("full solution table, cold build (1820 multisets)", ours * 1000, "ms",
           baseline=naive_full * 1000, baseline_name="pure-Python Fractions (extrapolated)",
           target="< 1000 ms", higher_is_better=False)


def bench_table_image() -> None:
    hands = Dealer(3, DealConfig(suits="black")).take(40)
    cards = [h.cards for h in hands]
    it = iter(range(10**9))

    def draw():
        render.table_image(cards[next(it) % len(cards)])

    for c in cards:
        render.table_image(c)
    ours = timed(draw, min_time=0.5)

    def cold():
        render.card_image.cache_clear()
        render._resized.cache_clear()
        draw()

    base = timed(cold, min_time=1.0)
    report("table image render (1200x1200)", ours * 1000, "ms", baseline=base * 1000,
           baseline_name="no card cache", target="< 30 ms", higher_is_better=False)
    png = timed(lambda: render.encode(render.table_image(cards[0]), "png"), min_time=0.3)
    jpeg = timed(lambda: render.encode(render.table_image(cards[0]), "jpeg"), min_time=0.3)
    report("table image + PNG encode", png * 1000, "ms", higher_is_better=False)
    report("table image + JPEG encode", jpeg * 1000, "ms", higher_is_better=False)


def run() -> None:
    bench_verifier()
    bench_episodes()
    bench_solution_table()
    bench_table_image()
