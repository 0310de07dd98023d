"""The face-card rule in other words: the `reworded` evaluation split's held-out phrasings.

The paper's prompt states the rule in one sentence (`'J', 'Q', and 'K' count as '10'.`), and its
rule-OOD split changes the rule *and* that sentence together, so it cannot tell a model that
ignores the rule line from one that breaks on an unseen wording. The `reworded` split (GP-L,
`game.tasks.gp`) keeps the in-distribution rule J/Q/K = 10 and the ID hands, and states the rule in
a phrasing that no training stream ever uses: a model that reads the rule scores on it about what
it scores on ID; one that memorised a sentence does not.

This module owns:
- `REWORDED`: the held-out clauses (each states J/Q/K = 10), put in both places where the paper's
  prompt states the rule (`game.prompts.gp_prompt(rule_text=…)`);
- `RESERVED`: the word sequences those clauses are built on. The training grammar
  (`models.train.rules_text`) never produces a clause containing one, and a test checks every
  training stream against `REWORDED` and `RESERVED`;
- `read_phrasings(path)`: a user's own phrasings (one per line) for `sftvsrl eval --phrasings`,
  so researchers can check with wordings kept outside the repository.
"""
from __future__ import annotations

from pathlib import Path

MAX_PHRASING_CHARS = 300       # one clause; the prompt states it twice
MAX_PHRASINGS = 1000

# Each clause states J/Q/K = 10 with a construction the training grammar never uses.
REWORDED: tuple[str, ...] = (
    "the jack, the queen and the king are each scored as ten points.",
    "J, Q and K stand for the number 10.",
    "a J, a Q or a K is equivalent to a 10.",
    "you should read every J, Q and K as a 10.",
    "J, Q, and K carry a value of 10 apiece.",
    "face cards (J, Q, K) amount to 10.",
    "the value of J, Q and K is 10 in this game.",
    "'J', 'Q', and 'K' are interpreted as '10'.",
    "K, Q and J play as 10.",
    "whenever you see J, Q or K, use 10.",
    "Jacks, Queens and Kings have the same value as a 10.",
    "J, Q and K: think of each as 10.",
    "kings, queens and jacks are scored as 10.",
    "each of 'K', 'Q' and 'J' stands for '10'.",
    "the cards J, Q, K are equivalent to ten.",
    "any jack, queen or king amounts to 10 points.",
    "J, Q and K are interpreted as the number ten.",
    "read J as 10, Q as 10 and K as 10.",
    "the value of a jack, a queen or a king is 10.",
    "'K', 'J' and 'Q' carry the value '10'.",
    "whenever a card is J, Q or K, use the number 10 for it.",
    "think of the face cards J, Q and K as tens.",
    "J, Q, K play as 10 apiece.",
    "every king, queen and jack stands for 10.",
)

# The constructions above; no training clause may contain one (case-insensitive).
RESERVED: tuple[str, ...] = (
    "scored as", "stand for", "stands for", "equivalent to", "read every", "read j as", "read j, q",
    "carry a value", "carry the value", "apiece", "amount to", "amounts to", "the value of j",
    "the value of a jack", "interpreted as", "play as", "whenever", "same value as", "think of",
    "as tens",
)


def read_phrasings(path: "str | Path") -> tuple[str, ...]:
    """A user's phrasings, one clause per line (blank lines and `#` comments skipped), bounded:
    at most `MAX_PHRASINGS` lines of `MAX_PHRASING_CHARS` characters each. `ValueError` names the
    problem otherwise."""
    text = Path(path).read_text(encoding="utf-8")
    out: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if len(line) > MAX_PHRASING_CHARS:
            raise ValueError(f"{path}:{number}: a phrasing has at most {MAX_PHRASING_CHARS} characters")
        out.append(line)
        if len(out) > MAX_PHRASINGS:
            raise ValueError(f"{path}: at most {MAX_PHRASINGS} phrasings")
    if not out:
        raise ValueError(f"{path}: no phrasing in the file (one clause per line)")
    return tuple(out)
