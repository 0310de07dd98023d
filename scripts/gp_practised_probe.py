"""The practised-vs-new probe of docs/findings.md (GP-L). Does RL improve hands it practised, or hands in general? Init vs an RL checkpoint, paired per
hand, on training-stream hands whose card multiset RL rolled out on ("practised") and on hands
whose multiset it never saw ("new"); neither is an evaluation hand.
Usage: python scripts/gp_practised_probe.py RLDIR UPDATES OUT.json [CKPT]
  RLDIR: an RL stage directory (its training.json names its config and Init); UPDATES: how many
  updates of rollouts the scored checkpoint saw; CKPT: a snapshot of that run (default RLDIR)."""
import json, math, sys
from collections import Counter
from dataclasses import fields
from pathlib import Path
import torch
from models.train.grpo import GRPOConfig
from models.train.tasks import training_task
from models.train.evaluate import run_episodes
from models.train.common import load_checkpoint
from models.train.data import ChatCodec
from game.tasks import open_session

rl, kept, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ckpt = sys.argv[4] if len(sys.argv) > 4 else rl
rec = json.loads(Path(rl, "training.json").read_text())
conf = {k: v for k, v in rec["config"].items() if k in {f.name for f in fields(GRPOConfig)}}
conf = {k: tuple(v) if isinstance(v, list) else v for k, v in conf.items()}
cfg = GRPOConfig(**conf)
entry = training_task("gp-l")
trained = entry.rollouts(cfg)(kept * cfg.hands_per_update)
ms = lambda x: tuple(sorted(open_session(x).describe()["cards"]))
seen = Counter(ms(x) for x in trained)
practised, new = [], []
for x in entry.spec.training_instances(6000, seed=424242, verify_iter=cfg.verify_iter):
    (practised if ms(x) in seen else new).append(x)
N = 300
practised, new = practised[:N], new[:N]
print("trained hands", len(trained), "distinct multisets", len(seen), "probe", len(practised), len(new), flush=True)
res = {}
for name, path in (("init", rec["init"]), ("rl", ckpt)):
    torch.manual_seed(0)
    model, tok = load_checkpoint(path); model.eval(); codec = ChatCodec(tok)
    for label, xs in (("practised", practised), ("new", new)):
        torch.manual_seed(1)
        b = run_episodes(model, codec, [open_session(x) for x in xs], batch_size=64, max_new_tokens=96)
        res[(name, label)] = [bool(s.success) for s in b.sessions]
        print(name, label, sum(res[(name, label)]) / len(xs), flush=True)
summary = {}
for label in ("practised", "new"):
    a, b = res[("rl", label)], res[("init", label)]
    d = [x - y for x, y in zip(a, b)]; m = sum(d) / len(d)
    se = math.sqrt(sum((v - m) ** 2 for v in d) / (len(d) - 1) / len(d))
    summary[label] = {"n": len(d), "rl": sum(a) / len(a), "init": sum(b) / len(b), "diff": m, "se": se}
    print(label, f"RL {100*sum(a)/len(a):.1f} Init {100*sum(b)/len(b):.1f} diff {100*m:+.1f} ± {100*se:.1f}", flush=True)
Path(out).write_text(json.dumps({"rl": ckpt, "kept_update": kept, "trained_hands": len(trained),
                                 "distinct_multisets": len(seen), "summary": summary}, indent=1))
