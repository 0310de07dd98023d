"""The 24 Points tab's logic for people: deal, show the hand, check a formula, hints, all solutions.

Pure functions returning HTML/Markdown and a small state dict, so they are testable without a
browser; `app.ui.gp_tab` wires them to Gradio components.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, replace

from game.gp import arith
from game.gp.cards import Rule
from game.gp.deal import Deal, DealConfig
from game.gp.solver import distinct_solutions
from game.gp.verifier import sequence_violations, verify
from game.tasks import formula_reply, normalise_formula

from .common import badge, card_uri, esc, outcome_badge

RULE_CHOICES = [("J/Q/K = 10 (in-distribution)", "face10"), ("J/Q/K = 11/12/13 (rule OOD)", "face_jqk")]
SUIT_CHOICES = [("Mixed suits", "mixed"), ("Black suits (paper VL)", "black"), ("Red suits (visual OOD)", "red")]
MODE_CHOICES = [("Paper generator", "paper"), ("Real deck", "deck")]
MAX_SEED = 2**31 - 1


@dataclass(frozen=True)
class Table:
    """What the tab shows: one hand under one rule (the UI's state)."""

    deal_id: str
    rule: str = "face10"
    seed: int | None = None
    suits: str = "mixed"
    mode: str = "paper"
    hint_level: int = 0

    @property
    def deal(self) -> Deal:
        return Deal.from_id(self.deal_id)

    @property
    def rule_obj(self) -> Rule:
        return Rule.parse(self.rule)

    @property
    def numbers(self) -> list[int]:
        return self.deal.numbers(self.rule_obj)

    def link(self) -> dict[str, str]:
        out = {"tab": "gp", "deal": self.deal_id, "rule": self.rule}
        if self.seed is not None:
            out["seed"] = str(self.seed)
        return out


class InputError(ValueError):
    """Bad input from the page: shown inline, never as a stack trace."""


def parse_seed(value) -> int:
    if value is None or str(value).strip() == "":
        return random.SystemRandom().randrange(MAX_SEED)
    try:
        seed = int(float(str(value).strip()))
    except ValueError:
        raise InputError(f"the seed must be a whole number, got {value!r}") from None
    if not 0 <= seed <= MAX_SEED:
        raise InputError(f"the seed must be between 0 and {MAX_SEED}")
    return seed


def parse_target(value) -> int:
    """The Target field / deep-link `target`, under the one limit every entry uses (`MAX_TARGET`)."""
    from game.gp.deal import MAX_TARGET

    text = str(value).strip()
    if not text.isascii() or not text.isdigit() or len(text) > 9:
        raise InputError(f"the target must be a whole number from 1 to {MAX_TARGET}, got {text[:20]!r}")
    target = int(text)
    if not 1 <= target <= MAX_TARGET:
        raise InputError(f"the target must be a whole number from 1 to {MAX_TARGET}, got {target}")
    return target


def deal_table(seed, rule: str, target, suits: str, mode: str) -> Table:
    """Deal the first hand of `seed`'s stream. Rule OOD deals force a J/Q/K, as the paper does."""
    seed_i = parse_seed(seed)
    rule_obj = Rule.parse(rule)
    from .. import jobs
    from ..workers import WorkerUnavailable, WorkTimeout, shared_pool

    target_i = parse_target(target)
    try:
        DealConfig(rule_obj, rule_obj is Rule.FACE_JQK, suits, mode, target_i)  # validates the choices
        # Dealing is CPU work: the worker pool runs it under a time limit (never a stuck page).
        info = shared_pool().run_sync(jobs.gp_deal, seed_i, rule_obj.value, rule_obj is Rule.FACE_JQK, suits,
                                      mode, target_i)
    except (ValueError, WorkTimeout, WorkerUnavailable) as exc:
        raise InputError(str(exc)) from None
    return Table(info["deal_id"], rule_obj.value, seed_i, suits, mode)


def table_from_link(params: dict[str, str]) -> Table | None:
    """Restore a table from deep-link parameters (`deal`, `rule`, `seed`), or None."""
    rule = params.get("rule", "face10")
    try:
        rule = Rule.parse(rule).value
    except ValueError:
        rule = "face10"
    if params.get("deal"):
        try:
            hand = Deal.from_id(params["deal"])
        except ValueError:
            return None
        seed = params.get("seed")
        return Table(hand.id, rule, int(seed) if seed and seed.isdigit() else None)
    if params.get("seed", "").isdigit():
        return deal_table(params["seed"], rule, params.get("target", "24"), "mixed", "paper")
    return None


def flip_rule(table: Table) -> Table:
    return replace(table, rule="face_jqk" if table.rule == "face10" else "face10", hint_level=0)


def hand_html(table: Table) -> str:
    deal = table.deal
    cards = "".join(
        f'<figure class="sv-card"><img src="{card_uri(c)}" alt="{esc(c.label)} of {esc(c.suit)}" '
        f'data-card="{esc(c.card_id)}"/><figcaption>{esc(c.label)} = {v}</figcaption></figure>'
        for c, v in zip(deal.cards, table.numbers))
    return f'<div class="sv-hand" data-deal="{esc(deal.id)}">{cards}</div>'


def info_html(table: Table) -> str:
    deal = table.deal
    rule = table.rule_obj
    n = len(distinct_solutions(table.numbers, deal.target))
    rule_badge = badge("info", "ID rule: J/Q/K = 10") if rule is Rule.FACE10 else badge("warn", "OOD rule: J/Q/K = 11/12/13")
    solv = badge("ok", f"{n} distinct solution{'s' * (n != 1)}") if n else badge("bad", "no solution under this rule")
    seed = f" · seed {table.seed}" if table.seed is not None else ""
    return (f'<div class="sv-info">Make <b class="sv-target">{deal.target}</b> from '
            f'<b>{" ".join(str(v) for v in table.numbers)}</b> {rule_badge} {solv}'
            f'<span class="sv-dim"> · deal <code class="sv-deal-id">{esc(deal.id)}</code>{seed}</span></div>')


def subtotal_html(table: Table | None, formula: str) -> str:
    """Live feedback while typing: value so far, numbers used and left."""
    if table is None or not formula or not formula.strip():
        return '<div class="sv-subtotal sv-dim">Type a formula with + − × ÷ and parentheses.</div>'
    text = formula.replace("×", "*").replace("÷", "/").replace("−", "-").replace(" ", "")
    tokens = arith.tokenize(text)
    if not arith.is_clean(text, tokens):
        return '<div class="sv-subtotal sv-bad">Only numbers, + − × ÷ and parentheses are allowed.</div>'
    value = _value_so_far(tokens)
    used = [int(t) for t in tokens if t.isdigit()]
    left = list(table.numbers)
    extra = []
    for u in used:
        if u in left:
            left.remove(u)
        else:
            extra.append(u)
    parts = []
    if value is not None:
        parts.append(f"= <b>{esc(arith.format_number(value))}</b>")
    parts.append(f"cards left: {' '.join(map(str, left)) or '—'}")
    if extra:
        parts.append(f'<span class="sv-bad">not in your hand: {" ".join(map(str, extra))}</span>')
    return f'<div class="sv-subtotal">{" · ".join(parts)}</div>'


def _value_so_far(tokens: list[str]):
    """Exact value of the typed prefix, closing open parentheses and dropping a dangling operator."""
    toks = list(tokens)
    while toks and toks[-1] in "+-*/(":
        toks.pop()
    depth = toks.count("(") - toks.count(")")
    if depth < 0 or not toks:
        return None
    try:
        return arith.evaluate_tokens(toks + [")"] * depth, "exact")
    except arith.FormulaError:
        return None


def check_html(table: Table, formula: str) -> tuple[str, bool]:
    """The paper's verdict on a person's formula plus our exact second opinion. (html, solved)."""
    f = normalise_formula(formula)
    if not f:
        return '<div class="sv-verdict sv-dim">Enter a formula first.</div>', False
    deal = table.deal
    reply = formula_reply(deal.labels, table.numbers, f, deal.target)
    v = verify(reply, table.numbers, deal.labels, target=deal.target)
    lines = [f'{outcome_badge(v.outcome.value)} <span class="sv-reward">reward {v.reward:+g}</span>',
             f'<div class="sv-feedback">Verifier (paper): <q>{esc(v.verify_info)}</q></div>']
    if v.exact_value is not None:
        verdict = "correct" if v.exact_correct else "not a solution"
        lines.append(f'<div class="sv-exact">Exact arithmetic: {esc(v.formula)} = '
                     f'<b>{esc(v.exact_value)}</b> ({verdict})</div>')
    if v.float_rejected:
        lines.append('<div class="sv-exact sv-warn-text">Correct, rejected by float rounding: the paper\'s '
                     'verifier compares IEEE doubles, so this exact solution scores as the paper did.</div>')
    return f'<div class="sv-verdict" data-outcome="{v.outcome.value}">{"".join(lines)}</div>', v.terminated


def hint_html(table: Table) -> tuple[str, Table]:
    """Progressive hints: 1) how many solutions and a first step, 2) one full solution."""
    sols = distinct_solutions(table.numbers, table.deal.target)
    if not sols:
        return '<div class="sv-hint">No formula reaches the target under this rule — try flipping the rule.</div>', table
    level = table.hint_level + 1
    sol = sols[0]
    if level == 1:
        first = _first_step(sol)
        text = f"There {'is' if len(sols) == 1 else 'are'} {len(sols)} distinct solution{'s' * (len(sols) != 1)}. " \
               f"Try starting with <code>{esc(first)}</code>."
    else:
        text = f"One solution: <code>{esc(sol)}={table.deal.target}</code>"
        level = 2
    return f'<div class="sv-hint">{text}</div>', replace(table, hint_level=level)


def _first_step(solution: str) -> str:
    """The first parenthesis-free binary operation on two numbers in a solution."""
    tokens = arith.tokenize(solution)
    for i in range(len(tokens) - 2):
        a, op, b = tokens[i:i + 3]
        if a.isdigit() and op in "+-*/" and b.isdigit():
            before = tokens[i - 1] if i else ""
            if before in ("", "(", "+", "-") or op in "*/":
                return f"{a}{op}{b}"
    return solution


def all_solutions_html(table: Table) -> str:
    sols = distinct_solutions(table.numbers, table.deal.target)
    if not sols:
        return '<div class="sv-hint">No solution under this rule.</div>'
    items = "".join(f"<li><code>{esc(s)}={table.deal.target}</code></li>" for s in sols)
    return (f'<div class="sv-hint"><b>{len(sols)}</b> distinct solution{"s" * (len(sols) != 1)} '
            f'(up to commutativity and associativity):<ol class="sv-solutions">{items}</ol></div>')


def valid_formula_chars(formula: str) -> bool:
    f = normalise_formula(formula)
    tokens = arith.tokenize(f)
    return arith.is_clean(f, tokens) and not sequence_violations(tokens)
