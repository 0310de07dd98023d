"""Does a V-IRL-L checkpoint copy the instruction? Greedy first replies on expert positions from
(a) fresh synthetic-town episodes under absolute and relative actions (the base's own data) and
(b) Helsinki ID episodes; prints, per set, how many first positions of an episode (the compass
turn of instruction 1) and how many later positions get the golden action, and a few first
positions' copied instruction next to the golden one.

    python scripts/virl_copy_probe.py runs/pipeline/virl-l/init
"""
from __future__ import annotations

import re
import sys

from models.train.common import load_checkpoint, setup_torch
from models.train.data import ChatCodec, virl_city_pairs, virl_id_pairs
from models.train.evaluate import generate_batch

N = 160


def _field(name: str, text: str) -> str | None:
    found = re.search(rf'"{name}": "([^"]*)"', text)
    return found.group(1) if found else None


def main(path: str) -> None:
    setup_torch(0, 1)
    model, tok = load_checkpoint(path)
    codec = ChatCodec(tok)
    model.eval()
    sets = (("towns, absolute", virl_city_pairs(4 * N, 999, relative_share=0.0)),
            ("towns, relative", virl_city_pairs(4 * N, 998, relative_share=1.0)),
            ("helsinki ID", virl_id_pairs(N, 997)))
    for name, pairs in sets:
        pairs = [p for p in pairs if isinstance(p[0], str)][:N]      # single-turn positions only
        replies = []
        for i in range(0, len(pairs), 32):
            replies += [g.text for g in generate_batch(model, codec, [codec.prompt_ids(p) for p, _ in pairs[i:i + 32]],
                                                       max_new_tokens=96, temperature=0)]
        first = ["O_2:" not in p for p, _ in pairs]
        right = [_field("action", r) == _field("action", g) for r, (_, g) in zip(replies, pairs)]
        print(f"{name}: first positions {sum(r for r, f in zip(right, first) if f)}/{sum(first)} right, "
              f"later {sum(r for r, f in zip(right, first) if not f)}/{sum(not f for f in first)}")
        for r, (_, g), f in list(zip(replies, pairs, first))[:40]:
            if f:
                print(f"   golden {_field('current instruction', g)!r} -> wrote {_field('current instruction', r)!r}")


if __name__ == "__main__":
    main(sys.argv[1])
