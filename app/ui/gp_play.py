"""The 24 Points tab's logic for people: deal, show the hand, check a formula, hints, all solutions.

Pure functions returning HTML/Markdown and a small state dict, so they are testable without a
browser; `app.ui.gp_tab` wires them to Gradio components.
"""
from __future__ import annotations

import random
from typing import cast
from dataclasses import dataclass, replace

from game.gp import arith
from game.gp.cards import Rule
from game.gp.deal import MAX_TARGET, Deal, DealConfig, Dealer, DealMode, deal
from game.gp.solver import distinct_solutions
from game.gp.verifier import verify
from game.tasks import formula_reply, normalise_formula

from .. import jobs, services
from ..access import Caller
from .common import badge, card_uri, esc, outcome_badge

RULE_CHOICES = [("J/Q/K = 10 (ID)", "face10"), ("J/Q/K = 11/12/13 (OOD)", "face_jqk")]
SUIT_CHOICES = [("Mixed suits", "mixed"), ("Black suits (paper VL)", "black"), ("Red suits (visual OOD)", "red")]
MODE_CHOICES = [("Paper generator", "paper"), ("Real deck", "deck")]
MAX_SEED = 2**31 - 1
MAX_FIELD_CHARS = 32       # seed / target fields: longer input is refused before parsing
MAX_FORMULA_CHARS = 120    # a four-card formula needs ~20; longer input is refused, not checked
DEFAULT_SEED = 1           # K 4 2 8: a face card, solvable under both rules (11 vs 2 solutions)
FLIP_SEARCH = 500          # hands of a seed's stream searched for one solvable under both rules
SUIT_NAMES = {"H": "hearts", "S": "spades", "D": "diamonds", "C": "clubs"}
ALLOWED_CHARS = frozenset("0123456789+-*/().")   # what a formula may hold (after normalise_formula)


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
        """Every control of the tab, so a deep link restores the hand and what Next deal does."""
        out = {"tab": "gp", "deal": self.deal_id, "rule": self.rule, "target": str(self.deal.target),
               "suits": self.suits, "mode": self.mode}
        if self.seed is not None:
            out["seed"] = str(self.seed)
        return out


class InputError(ValueError):
    """Bad input from the page: shown inline, never as a stack trace."""


def shown(value, limit: int = 24) -> str:
    """A user's input as quoted in a message: repr, cut to `limit` characters."""
    text = str(value)
    if len(text) > limit:
        return repr(text[:limit]) + f"… ({len(text):,} characters)"
    return repr(text)


def _whole_number(value, what: str) -> int:
    text = str(value).strip()
    if len(text) > MAX_FIELD_CHARS:
        raise InputError(f"the {what} is too long ({len(text):,} characters): type a whole number "
                         f"of at most {MAX_FIELD_CHARS} characters")
    try:
        number = float(text)
        if number != int(number):
            raise ValueError
        return int(number)
    except (ValueError, OverflowError):  # 'abc', 'nan', '1e400' (inf), '2.5'
        raise InputError(f"the {what} must be a whole number, got {shown(value)}") from None


def parse_seed(value) -> int:
    if value is None or str(value).strip() == "":
        return random.SystemRandom().randrange(MAX_SEED)
    seed = _whole_number(value, "seed")
    if not 0 <= seed <= MAX_SEED:
        raise InputError(f"the seed must be between 0 and {MAX_SEED:,}, got {shown(value)}")
    return seed


def parse_target(value) -> int:
    """The Target field / deep-link `target`, under the one limit every entry uses (`MAX_TARGET`)."""
    text = str(value).strip()
    if not text.isascii() or not text.isdigit() or len(text) > 9:
        raise InputError(f"the target must be a whole number from 1 to {MAX_TARGET}, got {shown(text, 20)}")
    target = int(text)
    if not 1 <= target <= MAX_TARGET:
        raise InputError(f"the target must be a whole number from 1 to {MAX_TARGET}, got {target}")
    return target


def _choice(value: str, choices: list[tuple[str, str]], what: str) -> str:
    allowed = [v for _, v in choices]
    if value not in allowed:
        raise InputError(f"unknown {what} {shown(value)}: use one of {', '.join(allowed)}")
    return value


def deal_table(seed, rule: str, target, suits: str, mode: str, *, client: str = "") -> Table:
    """Deal the first hand of `seed`'s stream. Rule OOD deals force a J/Q/K, as the paper does.
    `client` is the visitor's address (its share of the CPU pool when the deal can be slow)."""
    seed_i, rule, target_i = parse_seed(seed), parse_rule(rule), parse_target(target)
    _dealer(seed_i, rule, target_i, suits, mode)  # validates the choices
    try:  # CPU work: inline when cheap, else the fair pool under its time limit (never a stuck page)
        info = services.compute_sync(None, Caller(client=client), jobs.gp_deal, seed_i, rule, rule == "face_jqk",
                                     suits, mode, target_i)
    except services.ServiceError as exc:
        raise InputError(str(exc)) from None
    return Table(info["deal_id"], rule, seed_i, suits, mode)


def parse_rule(value: str) -> str:
    return _choice(str(value), RULE_CHOICES, "rule")


def _dealer(seed: int, rule: str, target: int, suits: str, mode: str) -> Dealer:
    rule_obj = Rule.parse(rule)
    suits, mode = _choice(suits, SUIT_CHOICES, "suits"), _choice(mode, MODE_CHOICES, "dealing mode")
    try:
        return Dealer(seed, DealConfig(rule_obj, rule_obj is Rule.FACE_JQK, suits, cast(DealMode, mode), target))
    except ValueError as exc:
        raise InputError(str(exc)) from None


def default_table() -> Table:
    """The hand a page shows without a link (seed 1's first hand), dealt here: a known input needs
    no worker pool, so the server's warm-up and a benchmark can ask for it too."""
    hand = deal(DEFAULT_SEED, DealConfig(Rule.FACE10, ood=False, suits="mixed", mode="paper", target=24))
    return Table(hand.id, "face10", DEFAULT_SEED, "mixed", "paper")


def table_from_link(params: dict[str, str], *, client: str = "") -> Table | None:
    """Restore a table from deep-link parameters (`deal`, `rule`, `seed`, `target`, `suits`,
    `mode`); None when the link names nothing of this tab. A link with settings but no hand deals
    the default seed with them. A bad parameter raises InputError (shown), `target=abc` included."""
    if params.get("tab", "gp") != "gp":
        return None
    if not any(params.get(k) for k in ("deal", "seed", "rule", "target", "suits", "mode")):
        return None
    rule = parse_rule(params.get("rule", "face10"))
    if params.get("target"):
        parse_target(params["target"])
    if not params.get("deal") and not params.get("seed"):
        return deal_table(DEFAULT_SEED, rule, params.get("target", "24"), _choice(params.get("suits", "mixed"),
                          SUIT_CHOICES, "suits"), _choice(params.get("mode", "paper"), MODE_CHOICES, "dealing mode"),
                          client=client)
    suits = _choice(params.get("suits", "mixed"), SUIT_CHOICES, "suits")
    mode = _choice(params.get("mode", "paper"), MODE_CHOICES, "dealing mode")
    seed = parse_seed(params["seed"]) if params.get("seed") else None
    if params.get("deal"):
        try:
            hand = Deal.from_id(params["deal"][:64])
        except ValueError:
            raise InputError(f"the link's deal {shown(params['deal'])} is not a hand: a deal id is four "
                             "cards such as HKC5D2C4 (suit letter + rank), optionally -TARGET") from None
        if params.get("target") and parse_target(params["target"]) != hand.target:
            raise InputError(f"the link's target {shown(params['target'])} does not match deal {hand.id}")
        return Table(hand.id, rule, seed, suits, mode)
    return deal_table(seed, rule, params.get("target", "24"), suits, mode, client=client)


def solvable(deal: Deal, rule: str) -> bool:
    return bool(distinct_solutions(deal.numbers(Rule.parse(rule)), deal.target))


def flip_rule(table: Table) -> tuple[Table, str]:
    """The same table under the other rule, and a note for the page ('' when nothing to say).

    The cards stay when the hand is solvable under both rules (the contrast the paper studies).
    Otherwise, for a seeded table, the nearest hand of the seed's rule-OOD stream (which always holds
    a J/Q/K, so the flip shows a contrast) that is solvable under both rules is dealt instead; a hand
    from a link without a seed stays, and the note says why."""
    new_rule = "face_jqk" if table.rule == "face10" else "face10"
    flipped = replace(table, rule=new_rule, hint_level=0)
    if solvable(table.deal, new_rule) or table.seed is None:
        return flipped, ("" if solvable(table.deal, new_rule) else
                         "This hand has no solution under the other rule. Press Next deal for a seeded hand "
                         "that is solvable under both.")
    dealer = _dealer(table.seed, "face_jqk", table.deal.target, table.suits, table.mode)
    for _ in range(FLIP_SEARCH):
        hand = dealer.next()
        if solvable(hand, "face10") and solvable(hand, "face_jqk"):
            old = " ".join(c.label for c in table.deal.cards)
            return (replace(flipped, deal_id=hand.id),
                    f"{old} has no solution under {_rule_text(new_rule)}, so this is the nearest hand of seed "
                    f"{table.seed}'s stream that is solvable under both rules.")
    return flipped, ""


def _rule_text(rule: str) -> str:
    return "J/Q/K = 10" if rule == "face10" else "J/Q/K = 11/12/13"


def hand_html(table: Table) -> str:
    deal = table.deal
    cards = "".join(
        f'<figure class="sv-card"><img src="{card_uri(c)}" alt="{esc(card_name(c))}" '
        f'data-card="{esc(c.card_id)}"/><figcaption>{esc(c.label)} = {v}</figcaption></figure>'
        for c, v in zip(deal.cards, table.numbers))
    return f'<div class="sv-hand" data-deal="{esc(deal.id)}">{cards}</div>'


def card_name(card) -> str:
    """Alt text a screen reader says: 'king of hearts', '6 of spades'."""
    names = {1: "ace", 11: "jack", 12: "queen", 13: "king"}
    return f"{names.get(card.rank, str(card.rank))} of {SUIT_NAMES.get(card.suit, card.suit)}"


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
    """Live feedback while typing: value so far, numbers used and left. It reads the formula as the
    verifier does (no spaces), so it never shows a value the verdict then rejects."""
    if table is None or not formula or not formula.strip():
        return '<div class="sv-subtotal sv-dim">Type a formula with + − × ÷ and parentheses.</div>'
    if len(formula) > MAX_FORMULA_CHARS:
        return (f'<div class="sv-subtotal sv-bad-text">Too long ({len(formula):,} characters): a formula '
                f'uses each of the four cards once, at most {MAX_FORMULA_CHARS} characters.</div>')
    text = normalise_formula(formula)
    if any(c not in ALLOWED_CHARS for c in text if not c.isspace()):
        return '<div class="sv-subtotal sv-bad-text">Only numbers, + − × ÷ and parentheses are allowed.</div>'
    if " " in text.strip() or "\t" in text:
        return ('<div class="sv-subtotal sv-bad-text">Remove the spaces: the paper\'s verifier rejects any '
                'character other than numbers, + − × ÷ and parentheses.</div>')
    text = text.strip()
    tokens = arith.tokenize(text)
    if not arith.is_clean(text, tokens):
        return '<div class="sv-subtotal sv-bad-text">Only numbers, + − × ÷ and parentheses are allowed.</div>'
    value = _value_so_far(tokens)
    used = [int(t) for t in tokens if t.isdigit() and len(t) <= 6]
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
        parts.append(f'<span class="sv-bad-text">not in your hand: {" ".join(map(str, extra))}</span>')
    return f'<div class="sv-subtotal">{" · ".join(parts)}</div>'


def used_cards(table: Table | None, formula: str) -> list[bool]:
    """Which of the four cards the formula already uses: the numbers typed, matched to the cards in
    order (two 5s typed use both 5s)."""
    if table is None:
        return [False] * 4
    typed = [t for t in arith.tokenize(normalise_formula(formula or "")) if t.isascii() and t.isdigit()]
    left: dict = {}
    for t in typed:
        left[int(t)] = left.get(int(t), 0) + 1
    out = []
    for v in table.numbers:
        out.append(left.get(v, 0) > 0)
        if left.get(v, 0) > 0:
            left[v] -= 1
    return out


def add_card(table: Table | None, formula: str, index: int) -> str:
    """The formula with card `index`'s value appended — unless that card is already used, or the
    formula ends with a number or a closing parenthesis (an operator must come first)."""
    formula = formula or ""
    if table is None or used_cards(table, formula)[index]:
        return formula
    end = formula.rstrip()[-1:]
    if end.isdigit() or end == ")":
        return formula
    return formula + str(table.numbers[index])


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
    """The paper's verdict on a person's formula (verbatim: it is what the models read), a plain
    explanation beside it, and our exact second opinion. Returns (html, solved)."""
    f = normalise_formula(formula)
    if not f:
        return '<div class="sv-verdict sv-dim">Enter a formula first.</div>', False
    if len(f) > MAX_FORMULA_CHARS:
        return (f'<div class="sv-verdict">{badge("bad", "Too long")} The formula has {len(f):,} characters; '
                f'a four-card formula needs about 20 (at most {MAX_FORMULA_CHARS} are checked). '
                'Shorten it and check again.</div>'), False
    deal = table.deal
    reply = formula_reply(deal.labels, table.numbers, f, deal.target)
    v = verify(reply, table.numbers, deal.labels, target=deal.target)
    lines = [f'{outcome_badge(v.outcome.value)} <span class="sv-reward">reward {v.reward:+g}</span>',
             f'<div class="sv-feedback">Verifier (paper, what the models read): <q>{esc(v.verify_info)}</q></div>',
             f'<div class="sv-explain">In plain words: {esc(explain(v, deal.target))}</div>']
    if v.exact_value is not None:
        verdict = "correct" if v.exact_correct else "not a solution"
        lines.append(f'<div class="sv-exact">Exact arithmetic: {esc(v.formula)} = '
                     f'<b>{esc(v.exact_value)}</b> ({verdict})</div>')
    if v.float_rejected:
        lines.append('<div class="sv-exact sv-warn-text">Correct, rejected by float rounding: the paper\'s '
                     'verifier compares IEEE doubles, so this exact solution scores as the paper did.</div>')
    return f'<div class="sv-verdict" data-outcome="{v.outcome.value}">{"".join(lines)}</div>', v.terminated


def explain(v, target: int) -> str:
    """A person-readable reading of a verdict (the paper's feedback text is terse)."""
    outcome = v.outcome.value
    if outcome == "correct":
        return f"your formula makes {target} using each card once."
    if outcome == "step_limit":
        return "the try budget was spent, so this reply was not graded."
    if outcome == "wrong_cards":
        return "the model read the cards on the table wrongly."
    if outcome == "illegal_formula":
        if any(m.startswith("invalid sequence") or "parenthesis" in m for m in v.messages):
            return ("the formula is not well formed: put an operator between two numbers, and open every "
                    "parenthesis before closing it.")
        if any(c not in ALLOWED_CHARS for c in (v.formula or "") if not c.isspace()):
            return "only numbers, + − × ÷ and parentheses are allowed (no letters or other characters)."
        return "remove the spaces: only numbers, + − × ÷ and parentheses are allowed (no spaces)."
    if outcome in ("wrong_numbers", "aggregated_error"):
        return "use each card's value exactly once — no other numbers, none left out, none twice."
    if outcome == "partial":
        return "this is the start of a solution but not finished yet (the paper gives +1 for it)."
    if outcome == "float_rounding":
        return (f"the paper's check gives no message here: every part matches a solution, but computed in "
                f"floating point the value is not exactly {target}.")
    if v.exact_value is None and v.paper_value is None:
        return "the formula divides by zero, so it has no value."
    value = f" it equals {v.exact_value}, not {target}." if v.exact_value is not None else ""
    if "partially correct" in v.verify_info:
        start = v.verify_info.split(" is partially correct")[0]
        return f"it starts like a solution ({start}) but then goes a different way;{value}"
    return f"the formula is legal but does not lead to {target};{value}"


def hint_html(table: Table) -> tuple[str, Table]:
    """Progressive hints, each giving away a little more: 1) how many solutions and a first step,
    2) one solution with its last number hidden, 3) that whole solution."""
    sols = distinct_solutions(table.numbers, table.deal.target)
    if not sols:
        return '<div class="sv-hint">No formula reaches the target under this rule — try flipping the rule.</div>', table
    level = min(table.hint_level + 1, 3)
    sol = sols[0]
    if level == 1:
        first = _first_step(sol)
        text = f"There {'is' if len(sols) == 1 else 'are'} {len(sols)} distinct solution{'s' * (len(sols) != 1)}. " \
               f"Try starting with <code>{esc(first)}</code>."
    elif level == 2:
        text = (f"Almost all of one solution — fill in the last number: <code>{esc(_hide_last_number(sol))}="
                f"{table.deal.target}</code>")
    else:
        text = f"One solution: <code>{esc(sol)}={table.deal.target}</code>"
    return f'<div class="sv-hint" data-level="{level}">{text}</div>', replace(table, hint_level=level)


def _hide_last_number(solution: str) -> str:
    """The solution with its last number replaced by a box."""
    tokens = arith.tokenize(solution)
    last = max(i for i, t in enumerate(tokens) if t.isdigit())
    return "".join("□" if i == last else t for i, t in enumerate(tokens))


def _first_step(solution: str) -> str:
    """The operation a solution computes first (in evaluation order, precedence and parentheses
    respected: `10+5*2+4` starts with `5*2`), as `a op b` (shunting-yard: the first operator
    emitted takes the two numbers before it)."""
    prec = {"+": 1, "-": 1, "*": 2, "/": 2}
    out: list[str] = []
    ops: list[str] = []

    def emit() -> str | None:
        out.append(ops.pop())
        return f"{out[-3]}{out[-1]}{out[-2]}" if len(out) >= 3 else None

    for t in arith.tokenize(solution):
        if t.isdigit():
            out.append(t)
        elif t == "(":
            ops.append(t)
        elif t == ")":
            while ops and ops[-1] != "(":
                if (step := emit()) is not None:
                    return step
            if ops:
                ops.pop()
        elif t in prec:
            while ops and ops[-1] != "(" and prec[ops[-1]] >= prec[t]:
                if (step := emit()) is not None:
                    return step
            ops.append(t)
    while ops:
        if ops[-1] == "(":
            ops.pop()
        elif (step := emit()) is not None:
            return step
    return solution


def all_solutions_html(table: Table) -> str:
    sols = distinct_solutions(table.numbers, table.deal.target)
    if not sols:
        return '<div class="sv-hint">No solution under this rule.</div>'
    # Each item carries its own number (no list markers, which overlap the column before them).
    items = "".join(f'<li><span class="sv-sol-n">{i}.</span> <code>{esc(s)}={table.deal.target}</code></li>'
                    for i, s in enumerate(sols, 1))
    return (f'<div class="sv-hint"><b>{len(sols)}</b> distinct solution{"s" * (len(sols) != 1)} '
            f'(up to commutativity and associativity):<ol class="sv-solutions">{items}</ol></div>')


