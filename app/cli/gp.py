"""`sftvsrl gp …`: deal, solve, check and score GeneralPoints hands from the command line."""
from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import TextIO

from game.gp.cards import Rule
from game.gp.deal import EVAL_CONFIGS, Deal, DealConfig, Dealer, evaluation_hands
from game.gp.solver import distinct_solutions, reference_solutions
from game.gp.verifier import verify

from .errors import CliError

RULE_HELP = "face-card rule: face10 (J/Q/K = 10, default) or 11-13 (J/Q/K = 11/12/13)"


def register(sub) -> None:
    p = sub.add_parser("gp", help="GeneralPoints (24 points): deal, solve, check, score",
                       description="GeneralPoints, the 24-point card game of the paper.")
    p.set_defaults(func=lambda args: p.print_help())
    gsub = p.add_subparsers(dest="gp_command", metavar="COMMAND")

    d = gsub.add_parser("deal", help="deal seeded hands (paper generator or a real deck)")
    d.add_argument("--seed", type=int, default=0, help="seed of the deal stream (default 0)")
    d.add_argument("-n", "--count", type=int, default=1, help="number of hands (default 1)")
    d.add_argument("--ood", action="store_true",
                   help="rule-OOD deal: at least one J/Q/K, valued 11/12/13 (unless --rule says otherwise)")
    d.add_argument("--rule", help=RULE_HELP)
    d.add_argument("--suits", default="mixed", choices=["mixed", "black", "red"])
    d.add_argument("--mode", default="paper", choices=["paper", "deck"],
                   help="paper: the reference generator (with replacement); deck: a real deck")
    d.add_argument("--target", type=int, default=24)
    d.add_argument("--config", choices=sorted(EVAL_CONFIGS),
                   help="one of the paper's evaluation hand lists (seed 42 unless --seed is given)")
    d.add_argument("--image", metavar="PNG", help="also write the table image of the first hand")
    d.add_argument("--json", action="store_true", help="one JSON object per hand")
    d.set_defaults(func=cmd_deal)

    s = gsub.add_parser("solve", help="list the distinct solutions of a hand")
    s.add_argument("cards", nargs="+", metavar="CARD", help="four cards (A 2..10 J Q K) or one deal id")
    s.add_argument("--rule", default="face10", help=RULE_HELP)
    s.add_argument("--target", type=int, default=None, help="target number (default 24, or the deal id's)")
    s.add_argument("--reference", action="store_true",
                   help="print the reference solver's raw solution strings instead")
    s.set_defaults(func=cmd_solve)

    c = gsub.add_parser("check", help="grade a formula or a raw model reply with the paper's verifier")
    c.add_argument("--cards", nargs=4, metavar="CARD", help="the hand, e.g. --cards K 5 10 A")
    c.add_argument("--deal", metavar="ID", help="the hand as a deal id, e.g. HKC5D2C4")
    c.add_argument("reply", help="a formula (wrapped in the paper's reply format) or, with --raw, a raw reply")
    c.add_argument("--raw", action="store_true", help="grade REPLY exactly as a model's raw output")
    c.add_argument("--rule", default="face10", help=RULE_HELP)
    c.add_argument("--target", type=int, default=None)
    c.add_argument("--vl", action="store_true", help="vision variant: also check the recognised cards")
    c.add_argument("--lenient", action="store_true", help="opt-in friendlier parsing (not the paper's)")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_check)

    sc = gsub.add_parser("score", help="grade a JSONL file of model replies offline")
    sc.add_argument("input", metavar="IN.jsonl",
                    help="lines with cards, rule, target, language_only, model_output")
    sc.add_argument("-o", "--output", metavar="OUT.jsonl", help="write here (default: stdout)")
    sc.add_argument("--lenient", action="store_true")
    sc.set_defaults(func=cmd_score)


# --------------------------------------------------------------------------- helpers
def _rule(text: str | None, default: Rule = Rule.FACE10) -> Rule:
    if text is None:
        return default
    try:
        return Rule.parse(text)
    except ValueError as exc:
        raise CliError(str(exc)) from None


def _target(value: int | None, default: int = 24) -> int:
    if value is None:
        return default
    if value <= 0:
        raise CliError(f"target must be a positive integer, got {value}")
    return value


def _hand(cards: list[str] | None, deal_id: str | None, target: int | None) -> Deal:
    try:
        if deal_id:
            hand = Deal.from_id(deal_id)
            return Deal(hand.cards, _target(target, hand.target))
        if cards and len(cards) == 1:
            hand = Deal.from_id(cards[0])
            return Deal(hand.cards, _target(target, hand.target))
        if not cards:
            raise CliError("give the hand with --cards A B C D or --deal ID")
        return Deal.from_labels(cards, _target(target))
    except ValueError as exc:
        raise CliError(str(exc)) from None


def _describe(hand: Deal, rule: Rule) -> dict:
    sols = hand.solutions(rule)
    return {"id": hand.id, "card_ids": hand.card_ids, "cards": hand.labels,
            "numbers": hand.numbers(rule), "rule": rule.value, "target": hand.target,
            "solvable": bool(sols), "reference_solutions": len(sols)}


def wrap_formula(formula: str, hand: Deal, rule: Rule) -> str:
    """A bare formula in the paper's reply layout (`ResponseEqn`), so the reference parser reads it."""
    return ("\n{\n"
            f'  "cards": {hand.labels!r},\n'
            f'  "number": {hand.numbers(rule)!r},\n'
            f'  "formula": "{formula}",\n'
            "}")


def _looks_raw(text: str) -> bool:
    return "formula" in text or "{" in text


# --------------------------------------------------------------------------- commands
def cmd_deal(args) -> int:
    if args.count < 1:
        raise CliError(f"--count must be at least 1, got {args.count}")
    if args.config:
        seed = args.seed if args.seed else 42
        hands = evaluation_hands(args.config, n=args.count, seed=seed)
        rule = EVAL_CONFIGS[args.config].rule
    else:
        rule = _rule(args.rule, Rule.FACE_JQK if args.ood else Rule.FACE10)
        try:
            config = DealConfig(rule, args.ood, args.suits, args.mode, _target(args.target))
            hands = Dealer(args.seed, config).take(args.count)  # unreachable targets refused at once
        except ValueError as exc:
            raise CliError(str(exc)) from None
    for hand in hands:
        info = _describe(hand, rule)
        if args.json:
            print(json.dumps(info))
        else:
            print(f"{hand.id:<14} {' '.join(hand.labels):<14} numbers {info['numbers']}  "
                  f"rule {rule.value}  target {hand.target}  ({info['reference_solutions']} solver strings)")
    if args.image:
        # lazy: the renderer loads PIL; only --image draws
        from game.gp.render import table_image

        try:
            table_image(hands[0].cards).save(args.image)
        except OSError as exc:
            raise CliError(f"cannot write image {args.image}: {exc}") from None
        print(f"wrote {args.image}", file=sys.stderr)
    return 0


def cmd_solve(args) -> int:
    hand = _hand(args.cards, None, args.target)
    rule = _rule(args.rule)
    numbers = hand.numbers(rule)
    if args.reference:
        sols = reference_solutions(numbers, hand.target)
    else:
        sols = distinct_solutions(numbers, hand.target)
    head = f"{' '.join(hand.labels)} -> numbers {numbers} (rule {rule.value}), target {hand.target}"
    if not sols:
        print(f"{head}: no solution")
        return 1
    kind = "reference solution strings" if args.reference else "distinct solutions"
    if len(sols) == 1:
        kind = kind.replace("solutions", "solution").replace("strings", "string")
    print(f"{head}: {len(sols)} {kind}")
    for sol in sols:
        print(f"  {sol}={hand.target}" if not args.reference else f"  {sol}")
    return 0


def cmd_check(args) -> int:
    hand = _hand(args.cards, args.deal, args.target)
    rule = _rule(args.rule)
    raw = args.raw or _looks_raw(args.reply)
    reply = args.reply if raw else wrap_formula(args.reply, hand, rule)
    v = verify(reply, hand.numbers(rule), hand.labels, target=hand.target,
               language_only=not args.vl, lenient=args.lenient)
    if args.json:
        print(json.dumps({"hand": _describe(hand, rule), "wrapped": not raw, **v.to_dict()}))
        return 0
    print(f"reward:   {v.reward:+g}")
    print(f"feedback: {v.verify_info}")
    print(f"outcome:  {v.outcome.value}{'  (solved: episode ends)' if v.terminated else ''}")
    if v.exact_value is not None:
        exact = "correct" if v.exact_correct else "not a solution"
        print(f"exact:    {v.formula} = {v.exact_value} ({exact})")
    if v.float_rejected:
        print("note:     correct, rejected by float rounding (the paper's verifier compares IEEE doubles)")
    return 0


def _score_line(obj: dict, lenient: bool) -> dict:
    for key in ("cards", "model_output"):
        if key not in obj:
            raise ValueError(f"missing field {key!r}")
    if not isinstance(obj["model_output"], str):
        raise ValueError("model_output must be a string")
    cards = obj["cards"]
    if not isinstance(cards, list):
        raise ValueError("cards must be a list of 4 card labels")
    target = obj.get("target", 24)
    if isinstance(target, bool) or not isinstance(target, int) or target <= 0:
        raise ValueError(f"target must be a positive integer, got {target!r}")
    hand = Deal.from_labels([str(c) for c in cards], target)
    rule = Rule.parse(obj.get("rule", "face10"))
    language_only = obj.get("language_only", True)
    if not isinstance(language_only, bool):
        raise ValueError("language_only must be true or false")
    v = verify(obj["model_output"], hand.numbers(rule), hand.labels, target=target,
               language_only=language_only, lenient=lenient)
    return {**obj, "reward": v.reward, "verify_info": v.verify_info, "terminated": v.terminated,
            "exact_correct": v.exact_correct}


def score_lines(lines, lenient: bool = False):
    """Yield (output_object, error_message_or_None) per input line (blank lines kept aligned)."""
    for number, line in enumerate(lines, 1):
        if not line.strip():
            yield {"error": "empty line"}, f"line {number}: empty line"
            continue
        try:
            obj = json.loads(line)
            if not isinstance(obj, dict):
                raise ValueError("expected a JSON object")
        except ValueError as exc:
            yield {"error": f"malformed JSON: {exc}", "line": number}, f"line {number}: malformed JSON: {exc}"
            continue
        try:
            yield _score_line(obj, lenient), None
        except ValueError as exc:
            yield {**obj, "error": str(exc)}, f"line {number}: {exc}"


def cmd_score(args) -> int:
    src = Path(args.input)
    if not src.is_file():
        raise CliError(f"{src}: no such file")
    if args.output and Path(args.output).resolve() == src.resolve():
        raise CliError(f"refusing to overwrite the input file {src}; choose another -o")
    errors = 0
    try:
        handle = src.open(encoding="utf-8")
    except OSError as exc:
        raise CliError(f"{src}: {exc}") from None
    out_path = Path(args.output) if args.output else None
    tmp = None
    if out_path:
        fd, tmp = tempfile.mkstemp(prefix=".score-", suffix=".jsonl", dir=out_path.parent or ".")
        out: TextIO = os.fdopen(fd, "w", encoding="utf-8")
    else:
        out = sys.stdout
    try:
        with handle:
            for obj, error in score_lines(handle, args.lenient):
                out.write(json.dumps(obj, ensure_ascii=False) + "\n")
                if error:
                    errors += 1
                    print(f"sftvsrl: error: {src}: {error}", file=sys.stderr)
    except UnicodeDecodeError as exc:
        if tmp:
            out.close()
            os.unlink(tmp)
        raise CliError(f"{src}: not UTF-8 text ({exc.reason})") from None
    if tmp:
        assert out_path is not None  # tmp is made next to it
        out.close()
        os.replace(tmp, out_path)
    return 2 if errors else 0
