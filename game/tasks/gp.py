"""GeneralPoints as registry tasks (`gp-l` text, `gp-vl` table image): config, session, evaluation
streams, the person's-move reply and the outcome taxonomy.

Outcomes (`game.gp.verifier.Outcome`, from the paper's reward classes): `correct` (+5), `partial`
(+1), `wrong_value` (−1), `float_rounding` (0), `wrong_cards` (−1.5, VL recognition),
`wrong_numbers` (−2 each), `illegal_formula` (−3), `aggregated_error` (several penalties),
`step_limit` (−1, budget spent); plus the exact-arithmetic flags `exact_correct` and
`float_rejected` (a right answer the paper's float check rejected).
"""
from __future__ import annotations

import unicodedata
import zlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterator, Sequence

from ..gp.cards import Rule
from ..gp.deal import EVAL_CONFIGS, Deal, Dealer, evaluation_hands
from ..gp.episode import DEFAULT_VERIFY_ITER, Episode
from ..gp.phrasings import MAX_PHRASING_CHARS, REWORDED
from ..gp.verifier import Outcome
from ..prompts import gp_prompt, response_eqn
from .base import (COMMON_STAGE_NOTES, EpisodeSession, FindingsWords, Instance, InstanceError, Split, StepResult, Task,
                   param)


@dataclass(frozen=True)
class GPConfig:
    """One GeneralPoints instance and how it is played."""

    deal_id: str = param(..., "str", "hand id, e.g. HKC5D2C4 (a -30 suffix for target 30)")
    rule: str = param("face10", "str", "face10 (J/Q/K = 10, ID) or face_jqk (11/12/13, rule OOD)")
    verify_iter: int = param(DEFAULT_VERIFY_ITER, "int", "tries per hand (the paper: 5)", 1, 20)
    enable_verification: bool = param(True, "bool", "false: one attempt, no feedback (recognition protocol)")
    lenient: bool = param(False, "bool", "opt-in friendlier formula parser (not the paper's)")
    eg: bool = param(False, "bool", "the `_EG` prompt variant with an output example")
    rule_text: str = param("", "str", "the face-card rule stated in other words (the `reworded` split); "
                           "empty: the paper's sentence")

    def __post_init__(self) -> None:
        if len(self.rule_text) > MAX_PHRASING_CHARS:
            raise InstanceError(f"rule_text has at most {MAX_PHRASING_CHARS} characters")


# How many instances of every evaluation stream are held out of training (by card multiset): the
# findings' 500 per split, which covers the paper's 234.
EVAL_HAND_POOL = 500


@lru_cache(maxsize=1)
def evaluation_multisets() -> frozenset[tuple[str, ...]]:
    """The card multisets (sorted rank labels) of the first `EVAL_HAND_POOL` hands of every GP
    evaluation stream (ID, rule-OOD and the `reworded` control, GP-L and GP-VL). No training stream
    deals one of them (`is_evaluation_hand`), so no split's baseline is partly recall."""
    return frozenset(tuple(sorted(h.labels)) for config in EVAL_CONFIGS
                     for h in evaluation_hands(config, EVAL_HAND_POOL))


def is_evaluation_hand(labels: Sequence[str]) -> bool:
    """Whether a hand with these rank labels (any order) is held out for evaluation."""
    return tuple(sorted(labels)) in evaluation_multisets()


def normalise_formula(formula: str) -> str:
    """A person's formula as the verifier reads it: the symbols the page's buttons insert (× ÷ −)
    and digits of any script (Arabic-Indic ٣, full-width ３ …) as ASCII; everything else as typed."""
    text = (formula or "").replace("×", "*").replace("÷", "/").replace("−", "-")
    if not text.isascii():
        text = "".join(str(unicodedata.decimal(c)) if c.isdecimal() and not c.isascii() else c for c in text)
    return text.strip()


def formula_reply(labels: Sequence[str], numbers: Sequence[int], text: str, target: int = 24) -> str:
    """A person's formula as the paper's reply (`ResponseEqn`, the cards read correctly); the
    page's × ÷ − symbols are accepted. Text starting with `{` is a full reply and kept as given."""
    if text.strip().startswith("{"):
        return text
    return response_eqn(labels, numbers, normalise_formula(text), target)


class GPSession(EpisodeSession):
    """A GeneralPoints episode (`game.gp.episode.Episode`) behind the registry's session interface."""

    def __init__(self, task: "GPTask", instance: Instance) -> None:
        cfg = instance.config
        try:
            deal = Deal.from_id(cfg.deal_id)
            rule = Rule.parse(cfg.rule)
        except ValueError as exc:
            raise InstanceError(str(exc)) from None
        super().__init__(task, instance, Episode(deal, rule, language_only=not task.vision,
                                                 verify_iter=cfg.verify_iter,
                                                 enable_verification=cfg.enable_verification, lenient=cfg.lenient))
        self._image: Any = None  # the table's PIL image, drawn on first use

    def prompt(self) -> str:
        ep = self.episode
        return gp_prompt(ep.deal.labels, ep.rule, ep.target, vision=self.vision, eg=self.config.eg,
                         rule_text=self.config.rule_text or None)

    def image(self):
        if not self.vision:
            return None
        if self._image is None:
            # lazy: the table renderer loads PIL; text tasks and `import game.tasks` never need it
            from ..gp.render import table_image

            self._image = table_image(self.episode.deal.cards)
        return self._image

    @property
    def exact_success(self) -> bool:
        return any(s.verdict.exact_correct for s in self.episode.steps if s.graded)

    @property
    def positions(self) -> int:
        return 1

    def step(self, text: str) -> StepResult:
        rec = self.episode.step(text)
        v = rec.verdict
        parsed = {"formula": v.formula, "cards": v.cards, "numbers_used": v.numbers_used,
                  "value": v.paper_value, "exact_value": v.exact_value, "parse_source": v.parse_source}
        result = StepResult(rec.call, rec.reward, rec.verify_info, v.outcome.value, rec.graded, rec.terminated,
                            rec.truncated, parsed, v.exact_correct, v.float_rejected)
        return self._record(result)

    def describe(self) -> dict:
        ep = self.episode
        out = {"deal_id": ep.deal.id, "cards": ep.deal.labels, "card_ids": ep.deal.card_ids,
               "numbers": ep.numbers, "target": ep.target, "rule": ep.rule.value,
               "verify_iter": ep.verify_iter}
        if self.config.rule_text:
            out["rule_text"] = self.config.rule_text
        return out


class GPTask(Task):
    family = "gp"
    config_type = GPConfig
    outcome_type = Outcome
    default_seed = 42
    headline = "success_rate"
    exact_arithmetic = True
    words = ("Solved", "Not solved")
    call_words = ("try", "tries")
    reference_classes = {5.0: "CORRECT_SOLUTION", 1.0: "PARTIAL_SOLUTION", -1.0: "NO_SOLUTION",
                         -1.5: "INCORRECT_VISION", -2.0: "INCORRECT_NUMBER", -3.0: "ILLEGAL_FORMULA"}

    def key(self, config: GPConfig) -> str:
        if config.rule_text:    # the same hand under another wording is another instance
            return f"{config.deal_id}/{config.rule}/w{zlib.crc32(config.rule_text.encode()):08x}"
        return f"{config.deal_id}/{config.rule}"

    def recall_key(self, instance: Instance) -> str:
        """The hand's card multiset (rank labels, sorted): what the evaluation holds out, too."""
        return " ".join(sorted(Deal.from_id(str(instance.params["deal_id"])).labels))

    def session(self, instance: Instance) -> GPSession:
        return GPSession(self, instance)

    def instances(self, split: str, n: int | None = None, seed: int | None = None,
                  sources: dict[str, str] | None = None, phrasings: Sequence[str] | None = None,
                  **overrides) -> list[Instance]:
        """The split's hands; a split with phrasings (`reworded`) states the rule of hand i in
        phrasing i mod P — its own held-out set, or `phrasings` (a user's, `read_phrasings`)."""
        s = self.split(split)
        if phrasings is not None and not s.phrasings:
            raise InstanceError(f"phrasings apply to a split that rewords the rule "
                                f"({', '.join(x.name for x in self.splits if x.phrasings) or 'none'}), not {split!r}")
        words = tuple(phrasings) if phrasings is not None else s.phrasings
        if phrasings is not None and not words:
            raise InstanceError("phrasings: give at least one")
        n = s.default_n if n is None else n
        assert n is not None  # every GP split has the paper's episode count
        hands = evaluation_hands(s.stream, n, self.default_seed if seed is None else seed)
        extra = (lambda i: {"rule_text": words[i % len(words)]}) if words else (lambda i: {})
        return [Instance(self.name, {"deal_id": h.id, **s.params, **extra(i), **overrides})
                for i, h in enumerate(hands)]

    def training_stream(self, seed: int, **overrides) -> Iterator[Instance]:
        """Hands from `Dealer(seed)` dealt as the `id` split's (its rule and suits: GP-VL black),
        skipping every held-out evaluation hand (`is_evaluation_hand`)."""
        split = self.split("id")
        params = {**split.params, **overrides}
        dealer = Dealer(seed, EVAL_CONFIGS[split.stream])
        while True:
            deal = dealer.next()
            if not is_evaluation_hand(deal.labels):
                yield Instance(self.name, {"deal_id": deal.id, **params})

    def stream_matches(self, split: Split, choice: dict) -> bool:
        """A split's hands are of its stream's suits (`choice["suits"]`, else the hand's colours)."""
        want = EVAL_CONFIGS[split.stream].suits
        if want == "mixed":
            return True
        suits = choice.get("suits")
        if suits is None:
            try:
                cards = Deal.from_id(str(choice.get("deal_id", ""))).cards
            except ValueError:
                return False
            reds = {c.is_red for c in cards}
            suits = "mixed" if len(reds) > 1 else ("red" if reds == {True} else "black")
        return suits == want

    def person_reply(self, session: GPSession, text: str) -> str:
        ep = session.episode
        return formula_reply(ep.deal.labels, ep.numbers, text, ep.target)

    def step_fields(self, parsed: dict) -> list[tuple[str, Any]]:
        out = [("formula", parsed.get("formula")), ("cards", parsed.get("cards"))]
        if parsed.get("exact_value") is not None:
            out.append(("exact value", parsed.get("exact_value")))
        return out


def _split(name: str, config: str, description: str, phrasings: tuple[str, ...] = ()) -> Split:
    return Split(name, description, config, 234, {"rule": EVAL_CONFIGS[config].rule.value}, phrasings)


class GPLanguage(GPTask):
    name, vision, label = "gp-l", False, "GeneralPoints, text (GP-L)"
    splits = (_split("id", "language_id", "J/Q/K = 10"),
              _split("rule-ood", "language_rule_ood", "J/Q/K = 11/12/13, at least one face card"),
              _split("reworded", "language_id", "J/Q/K = 10 stated in held-out words (the ID hands)", REWORDED))
    findings = FindingsWords(
        short="GP-L",
        split_labels={"id": "in-distribution (J/Q/K = 10)", "rule-ood": "rule-OOD (J/Q/K = 11/12/13)",
                      "reworded": "ID rule in held-out words (J/Q/K = 10)"},
        ood="the flipped rule", instances="hands", control="reworded",
        stage_notes={**COMMON_STAGE_NOTES,
                     "base": "the stand-in for pretraining: reads a stated face-card rule (never the OOD one)",
                     "sft": "continued SFT on ID expert answers, frozen ID prompt",
                     "sft-diverse": "SFT from Init on prompts stating varied rules (the rebuttal, arXiv 2510.00237)"},
        intro="The paper post-trains one pretrained model two ways: SFT imitates expert answers, RL learns from "
              "the game's own verdicts. Both train on the in-distribution rule only (J, Q and K count as 10). "
              "The test is a rule neither has seen: J, Q and K count as 11, 12 and 13.",
        base_line="Our stand-in for a pretrained model, a tiny model trained from scratch on hands under many "
                  "rules stated in many phrasings (never the test rule), scores {id} in distribution and {ood} on the "
                  "flipped rule.",
        split_line="In distribution / on the flipped rule: ",
        diverse_line="The rebuttal: SFT on prompts that state varied rules (SFT-diverse) vs plain SFT on the "
                     "flipped rule: {diff} ± {se}. Whether SFT forgets depends on what it is trained on.")
    paper = ({"metric": "episode success", "split": "rule-ood", "source": "paper §5.1, Fig. 6",
              "values": {"init": 0.115, "sft": 0.034, "rl": 0.150}},)


class GPVision(GPTask):
    name, vision, label = "gp-vl", True, "GeneralPoints, table image (GP-VL)"
    recognition = True
    splits = (_split("id", "vl_id_black", "black suits, J/Q/K = 10"),
              _split("rule-ood", "vl_rule_ood_black", "black suits, J/Q/K = 11/12/13"),
              _split("visual-ood", "vl_visual_ood_red", "red suits, J/Q/K = 10"))
    findings = FindingsWords(
        short="GP-VL",
        split_labels={"id": "in-distribution (black suits, J/Q/K = 10)",
                      "rule-ood": "rule-OOD (black suits, J/Q/K = 11/12/13)",
                      "visual-ood": "visual-OOD (red suits, J/Q/K = 10)"},
        ood="the flipped rule", instances="hands",
        stage_notes={**COMMON_STAGE_NOTES,
                     "base": "the stand-in for a pretrained VLM: GP-L's text base given a vision encoder, trained to "
                             "read cards of all four suits and to play under stated rules (never J/Q/K = 10 or "
                             "11/12/13)",
                     "init": "a short SFT on the ID task from the base (the paper's Init): black suits, J/Q/K = 10",
                     "sft": "continued SFT on ID expert answers (black suits, J/Q/K = 10)",
                     "rl": "GRPO on ID hands from Init (black suits), multi-turn with the verifier's feedback",
                     "sft-diverse": "SFT from Init with prompts stating varied rules, black suits only (after the "
                                    "rebuttal, arXiv 2510.00237)"},
        intro="GP-VL is the same 24-points game, but the model reads the four cards from a picture of the table. "
              "Both post-trainings see only black cards (spades, clubs) with J, Q and K counting as 10. Two tests: "
              "a rule neither has seen (J, Q, K = 11, 12, 13) and a look neither has seen (red hearts and "
              "diamonds). A model that misreads the cards gets nothing, so the score also measures seeing.",
        base_line="Our stand-in for a pretrained vision-language model, a tiny Mllama taught to read cards of all "
                  "four suits and to play under many stated rules (never the ID or the test rule), reads the rule "
                  "line: {id} in distribution, {ood} on the flipped rule.",
        split_line="In distribution / on the flipped rule: ",
        diverse_line="The rebuttal: SFT on prompts that state varied rules (SFT-diverse, black suits) vs plain SFT "
                     "on the flipped rule: {diff} ± {se}.",
        produce="vision",
        more_ood={"visual-ood": "red suits"})
    paper = ({"metric": "episode success", "split": "rule-ood", "source": "paper §5.1, Fig. 6",
              "values": {"init": 0.112, "sft": 0.056, "rl": 0.142}},
             {"metric": "episode success", "split": "visual-ood", "source": "paper §5.2, Fig. 7",
              "values": {"init": 0.236, "sft": 0.137, "rl": 0.412}})

