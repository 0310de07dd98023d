"""Build `models/train/corpora/english.txt.gz`: short sentences of ordinary English for the tiny
GP base (`models.train.rules_text`), derived from WordNet 3.0 (Princeton University; its licence,
which permits use and redistribution with its notice, is in `models/train/corpora/WORDNET-LICENSE`).

The staged pipeline's base must know the ordinary words people use to state a rule, so that an
unseen paraphrase is not a string of rare tokens: the compact tokenizer is trained on these
sentences too, and the base reads them as noise around the rule clause. Only the glosses and the
example sentences of each common word's most frequent sense are used (words with a sense-tagged
count in WordNet's index files), kept when short, ASCII, free of digits and of card words.

    apt-get install wordnet-base          # Debian's WordNet 3.0 (build time only)
    python scripts/build_english.py        # writes models/train/corpora/english.txt.gz

The output is deterministic (sorted, gzip without a timestamp) and committed; nothing reads WordNet
at run time.
"""
from __future__ import annotations

import gzip
import re
import sys
from pathlib import Path

WORDNET = Path("/usr/share/wordnet")
OUT = Path(__file__).resolve().parents[1] / "models" / "train" / "corpora" / "english.txt.gz"
BANNED = re.compile(r"\b(jacks?|queens?|kings?|cards?|knaves?|face|ten|tens|eleven|twelve|thirteen)\b", re.I)
MAX_WORDS, MIN_WORDS = 14, 3


def common_offsets(pos: str) -> set[str]:
    """Synset offsets of the most frequent sense of every lemma with a sense-tagged count."""
    out: set[str] = set()
    for line in (WORDNET / f"index.{pos}").read_text(encoding="latin-1").splitlines():
        if line.startswith(" "):
            continue
        f = line.split()
        p_cnt = int(f[3])
        tagsense_cnt = int(f[5 + p_cnt])
        if tagsense_cnt > 0:
            out.add(f[6 + p_cnt])
    return out


def sentences(pos: str, offsets: set[str]) -> list[str]:
    out = []
    for line in (WORDNET / f"data.{pos}").read_text(encoding="latin-1").splitlines():
        if line.startswith(" ") or line[:8] not in offsets or "|" not in line:
            continue
        gloss = line.split("|", 1)[1]
        for part in re.split(r";\s*", gloss):
            part = part.strip().strip('"').strip()
            if not part or not part.isascii() or re.search(r"[0-9_`\[\]{}<>|\\]", part) or BANNED.search(part):
                continue
            words = part.split()
            if MIN_WORDS <= len(words) <= MAX_WORDS:
                out.append(part.rstrip("."))
    return out


def main() -> int:
    if not (WORDNET / "data.noun").is_file():
        print("WordNet not found: apt-get install wordnet-base", file=sys.stderr)
        return 1
    found: set[str] = set()
    for pos in ("noun", "verb", "adj", "adv"):
        found.update(sentences(pos, common_offsets(pos)))
    lines = sorted(found)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with open(OUT, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        gz.write(("\n".join(lines) + "\n").encode("utf-8"))
    print(f"{len(lines)} sentences -> {OUT} ({OUT.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
