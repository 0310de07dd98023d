"""The staged tiny vision-language pipeline — GP-VL: base → Init → SFT / RL / SFT-diverse; V-IRL-VL:
Init → SFT / RL — at CPU scale, with tiny `MllamaForConditionalGeneration` checkpoints (the paper's
Llama-3.2-Vision architecture).

The paper post-trains Llama-3.2-11B-Vision, a text model given a vision encoder and
cross-attention layers and trained on image-text data. This pipeline builds the same thing in
miniature, then mirrors the paper's stages on top of it:

1. **base** (the "pretrained VLM"): a GP-L pipeline's text base (`gp-vl-text`: the GP-L base of the
   pipeline before the rule-phrasing base, kept as the shipped GP-VL's language model; a tiny Llama that
   reads a stated face-card mapping and answers in the paper's format) becomes the language model
   of a tiny Mllama (`models.tiny.build_tiny_mllama(text_from=…)`: its tokenizer, embeddings and
   self-attention layers copied, cross-attention layers inserted, a fresh vision encoder). The
   vision encoder is first pretrained alone (`pretrain_vision`: table layouts of 1–4 cards of all
   four suits, a per-slot rank probe that is then discarded — as Llama-3.2-Vision's image encoder
   was pretrained before its cross-attention layers), then everything is trained on image-text
   data of two kinds, cards of all four suits:
   - *card reading*: a table image with 1–4 cards in random slots (suits drawn from all four,
     ranks uniform) and a reading prompt (`READ_PROMPT`); the answer lists the cards;
   - *GP-VL with a stated mapping*: the paper's exact GP-VL prompt whose rule line states a face-card
     mapping J/Q/K = (a, b, c), a, b, c in 6..13, never the ID mapping 10/10/10 nor the rule-OOD
     11/12/13; four cards with suits drawn from all four; the expert `ResponseEqn` answer.
   So the base knows red and black cards, but has never seen the GP-VL prompt with J/Q/K = 10
   (hence neither the ID nor the visual-OOD configuration) nor the rule-OOD mapping.
2. **init**: a short SFT on the ID task (the paper's GP-VL prompt, black suits, J/Q/K = 10: the
   registry's `gp-vl` training stream) from the base.
3. **sft**: continued SFT from Init on more ID expert answers.
4. **rl**: GRPO from Init on the ID task only (`models.train.grpo`, the same trainer and rollout
   executor as GP-L: multi-turn, the verifier's feedback, the image in the first user message).
5. **sft-diverse** (after the rebuttal, arXiv 2510.00237): SFT from Init with SFT's budget, black
   suits only: half ID examples, half the GP-VL prompt stating varied mappings (never 11/12/13).

Images go through each checkpoint's own image processor (`MllamaImageProcessor`, one 224-px tile).
Training tables are composed from per-slot pieces processed by that image processor
(`TablePixels`: the processor's resize and normalisation are linear, so the processed table is the
processed empty table plus each card's processed difference; measured equal to within 1e-7);
evaluation and play process the real 1200 × 1200 table image, as the `local` backend does.

V-IRL-VL (`VisionConfig.for_task("virl-vl")`): the shipped V-IRL-L SFT checkpoint is the language
model (no V-IRL-L base exists to start from), no visual pretraining; Init and SFT on expert
single-turn pairs of registry `virl-vl` training episodes (`virl_examples`, grids drawn at reduced
resolution), RL = GRPO from Init on full-resolution grids, 2 tries per position.

Every stage is a Hugging Face checkpoint with `training.json`; `evaluate_vision` scores them all with
the protocol's batched executor on the task's splits (episode success, per-step accuracy and, for
GP-VL, recognition accuracy, binomial SEs) and writes `findings.json`, `episodes.jsonl.gz` (the
staged pipeline's format: the Findings view shows them beside the text tasks) and the model cards;
the shipped weights are stored in bfloat16 (`store_bfloat16`) before they are evaluated.

    sftvsrl train vision --task gp-vl --out runs/vision/gp-vl          # ~32 min training (RL 22) + ~4 min eval
    sftvsrl train vision --task virl-vl --out runs/vision/virl-vl      # ~15 min training + ~9 min eval (grids)
    sftvsrl train vision --task gp-vl --quick --out /tmp/v             # seconds, for tests
"""
from __future__ import annotations

import json
import random
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Sequence

from game.gp.cards import Card, Rule
from game.protocol import binomial_se, splits
from game.tasks import get_task

from ..prompts import FACE_CARD_MSG, cards_repr, gp_prompt, response_eqn
from .common import (Compute, Stopwatch, cosine_lr, environment, load_checkpoint, loss_curve, n_params, read_record,
                     save_checkpoint, setup_torch)
from .data import ChatCodec, expert_answer, expert_formula, vision_inputs
from .sft import fit

STAGES = ("base", "init", "sft", "rl", "sft-diverse")
TASKS = ("gp-vl", "virl-vl")
# V-IRL-VL: no visual base and no SFT-diverse (see `VisionConfig.for_task`)
TASK_STAGES = {"gp-vl": STAGES, "virl-vl": ("init", "sft", "rl")}
BLACK = ("S", "C")
REPO = Path(__file__).resolve().parents[2]
SUITS = ("S", "H", "D", "C")
ID_MAPPING, OOD_MAPPING = (10, 10, 10), (11, 12, 13)
_RANK_LABEL = {1: "A", 11: "J", 12: "Q", 13: "K"}

READ_PROMPT = "\nRead the cards in the image, from left to right. Answer in json.\n"


def read_answer(labels: Sequence[str]) -> str:
    """The card-reading answer: the `cards` line of `ResponseEqn` alone."""
    return "\n{\n" f"  \"cards\": {cards_repr(labels)},\n" "}"


def label(rank: int) -> str:
    return _RANK_LABEL.get(rank, str(rank))


def vl_mapped_prompt(mapping: Sequence[int], target: int = 24) -> str:
    """The paper-exact GP-VL prompt with the face-card clause for `mapping` in both its places."""
    from .rules_text import mapping_message

    return gp_prompt(None, Rule.FACE10, target, vision=True).replace(FACE_CARD_MSG[Rule.FACE10],
                                                                    mapping_message(mapping))


def base_mappings() -> list[tuple[int, int, int]]:
    """The mappings the base's GP-VL examples state: (a, b, c) in 6..13, minus 10/10/10 and 11/12/13 (510)."""
    from .rules_text import base_mappings as text_mappings

    return [m for m in text_mappings() if m != ID_MAPPING]


# ---------------------------------------------------------------------------------------------
# Examples: (slots, prompt, answer); slots = 4 cards or None (empty slot) in table order


@dataclass(frozen=True)
class Example:
    slots: tuple | None     # GP: 4 × (Card | None), left to right (the table is composed from them)
    prompt: str
    answer: str
    kind: str               # read / mapped / id / virl
    image: Any = None       # V-IRL: the street-view grid (PIL)


def base_examples(n: int, seed: int, read_share: float, face_prob: float = 0.5) -> list[Example]:
    """The base's image-text data (see the module doc): reading and mapped GP-VL, all four suits."""
    return mapped_examples(n, f"vl-base:{seed}", base_mappings(), SUITS, read_share, face_prob)


def diverse_examples(n: int, seed: int, face_prob: float = 0.5) -> list[Example]:
    """SFT-diverse's data (after the rebuttal, arXiv 2510.00237), black suits only (the ID task's,
    so the visual-OOD configuration stays unseen): half ID expert examples (`id_examples`), half the
    GP-VL prompt stating a varied face-card mapping (the base's, never 10/10/10 nor 11/12/13), in
    alternation. Half ID, because the base never saw the ID rule line (a uniform draw over 512
    mappings would show it to SFT-diverse a handful of times: measured 4 % ID success)."""
    ids = id_examples(n // 2, seed)
    mapped = mapped_examples(n - n // 2, f"vl-diverse:{seed}", base_mappings(), BLACK, 0.0, face_prob)
    out = [ex for pair in zip(ids, mapped) for ex in pair]
    return out + mapped[len(ids):]


def mapped_examples(n: int, seed: str, mappings: Sequence[tuple[int, int, int]], suits: Sequence[str],
                    read_share: float, face_prob: float) -> list[Example]:
    """`n` examples: a `read_share` of card reading, the rest the GP-VL prompt stating one of
    `mappings` with an expert answer; cards' suits drawn from `suits`."""
    rng = random.Random(seed)
    out: list[Example] = []
    while len(out) < n:
        if read_share and rng.random() < read_share:
            k = 4 if rng.random() < 0.5 else rng.randint(1, 3)
            where = sorted(rng.sample(range(4), k))
            shown: list[Card | None] = [None] * 4
            for i in where:
                shown[i] = Card(rng.randint(1, 13), rng.choice(suits))
            labels = [label(c.rank) for c in shown if c is not None]
            out.append(Example(tuple(shown), READ_PROMPT, read_answer(labels), "read"))
            continue
        mapping = mappings[rng.randrange(len(mappings))]
        ranks = [rng.randint(1, 13) for _ in range(4)]
        if rng.random() < face_prob and max(ranks) <= 10:
            ranks[rng.randrange(4)] = rng.randint(11, 13)
        values = [r if r <= 10 else mapping[r - 11] for r in ranks]
        formula = expert_formula(values)
        if formula is None:
            continue
        labels = [label(r) for r in ranks]
        cards = tuple(Card(r, rng.choice(suits)) for r in ranks)
        out.append(Example(cards, vl_mapped_prompt(mapping), response_eqn(labels, values, formula), "mapped"))
    return out


def id_examples(n: int, seed: int) -> list[Example]:
    """`n` in-distribution GP-VL expert examples: hands of the registry's `gp-vl` training stream
    (black suits, J/Q/K = 10), the session's own prompt, the canonical expert answer."""
    from itertools import islice

    from game.gp.deal import Deal
    from game.tasks import open_session

    out: list[Example] = []
    for inst in islice(get_task("gp-vl").training_stream(seed), 4 * n + 100):
        deal = Deal.from_id(inst.params["deal_id"])
        answer = expert_answer(deal, Rule.FACE10)
        if answer is None:
            continue
        out.append(Example(tuple(deal.cards), open_session(inst).prompt(), answer, "id"))
        if len(out) == n:
            return out
    raise RuntimeError("the training stream ran out of solvable hands")


def virl_examples(n: int, seed: int, *, pano_width: int = 1024, view: int = 112) -> list[Example]:
    """`n` expert V-IRL-VL examples: registry `virl-vl` training episodes (bundled Helsinki routes,
    absolute actions, episode seeds from `TRAINING_SEED_BASE`) walked with the golden reply at every
    rail position — the session's own prompt, `ResponseVIRL` with the oracle observation, the
    current sentence and the golden action, as the V-IRL-L SFT data. The grid is drawn by the same
    renderer at reduced resolution (a `pano_width`-px panorama, `view`-px views: what one 224-px
    tile holds of the full 2405-px grid), since a full-resolution grid takes seconds on a CPU."""
    from itertools import islice

    from game.tasks import open_session
    from game.tasks.virl import VirlSession
    from game.virl.panorama import SyntheticPanoramas
    from game.virl.render import street_view_grid
    from PIL import Image

    from ..prompts import response_virl

    out: list[Example] = []
    renderers: dict[str, Any] = {}
    for inst in islice(get_task("virl-vl").training_stream(seed), 10 * n + 100):
        session = open_session(inst)
        assert isinstance(session, VirlSession)
        data = session.data
        if data.name not in renderers:
            renderers[data.name] = SyntheticPanoramas(data.features, width=pano_width, height=pano_width // 2,
                                                      style=data.panorama_style)
        while not session.done and len(out) < n:
            entry = session.episode.entry
            pano, rotation = renderers[data.name].load(entry.position)
            grid = Image.fromarray(street_view_grid(pano, entry.heading, rotation=rotation, resolution=view,
                                                    size=2 * view))
            answer = response_virl(entry.oracle_observation, entry.instruction, entry.gt_action)
            out.append(Example(None, session.prompt(), answer, "virl", grid))
            if session.step(answer).reward != 1.0:
                raise AssertionError("the golden V-IRL reply was not graded correct")
        if len(out) == n:
            return out
    raise RuntimeError("the V-IRL training stream ran out")


class TablePixels:
    """Processed table images for slot layouts, composed from per-slot pieces processed by the
    checkpoint's own image processor (see the module doc); pieces are cached (52 cards × 4 slots)."""

    def __init__(self, codec: ChatCodec) -> None:
        from game.gp.render import table_image

        self.codec, self.render = codec, table_image
        self.blank = self._process([None] * 4)
        self.pieces: dict[tuple[int, int, str], Any] = {}

    def _process(self, slots):
        from ..backends.local import to_pil

        out = self.codec.image_processor(images=[[to_pil(self.render(slots))]], return_tensors="pt")
        return {k: out[k] for k in ("pixel_values", "aspect_ratio_ids", "aspect_ratio_mask")}

    def __call__(self, slots: Sequence) -> dict:
        pix = self.blank["pixel_values"].clone()
        for i, card in enumerate(slots):
            if card is None:
                continue
            key = (i, card.rank, card.suit)
            if key not in self.pieces:
                one = [None] * 4
                one[i] = card
                self.pieces[key] = self._process(one)["pixel_values"] - self.blank["pixel_values"]
            pix += self.pieces[key]
        return {**self.blank, "pixel_values": pix}


# ---------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class VisionConfig:
    """Every knob of the vision pipeline, with the value the shipped checkpoints used."""

    task: str = "gp-vl"
    seed: int = 0
    text_from: str = "models/checkpoints/gp-vl-text"  # the language model (relative to the repo root)
    # vision tower and cross-attention (`models.tiny.build_tiny_mllama`)
    image_size: int = 224
    patch_size: int = 56              # a 4 x 4 patch grid: a card spans one patch column (the table's pitch)
    vision_hidden: int = 128
    vision_layers: int = 2
    vision_global_layers: int = 1
    cross_attention_layers: tuple[int, ...] = (1, 3)
    # base, first: the vision encoder alone on card layouts (all suits), a linear probe per slot
    vision_pretrain_steps: int = 500
    vision_pretrain_batch: int = 32
    vision_pretrain_lr: float = 3e-3
    # base, then: image-text SFT of the grafted model (reading + mapped GP-VL, all suits)
    base_steps: int = 500
    base_batch: int = 16
    base_lr: float = 1e-3
    base_read_share: float = 0.4
    # init: short SFT on ID from the base
    init_steps: int = 16
    init_lr: float = 2e-4
    init_warmup_steps: int = 1
    # sft: continued SFT from init on ID
    sft_steps: int = 200
    sft_batch: int = 16
    sft_lr: float = 5e-4
    warmup_steps: int = 30
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    # rl: GRPO from init (`models.train.grpo.GRPOConfig`)
    rl_updates: int = 36
    rl_hands: int = 8
    rl_group: int = 6
    rl_verify_iter: int = 5
    rl_lr: float = 1e-4
    rl_epochs: int = 2
    rl_max_new_tokens: int = 48
    # evaluation
    eval_n: int = 100
    threads: int = 1

    @classmethod
    def quick(cls, seed: int = 0) -> "VisionConfig":
        """A seconds-long run for tests (the text model is the shipped gp-vl-text)."""
        return cls(seed=seed, image_size=64, patch_size=16, vision_hidden=32, vision_layers=1, vision_pretrain_steps=3,
                   vision_pretrain_batch=4, base_steps=3,
                   base_batch=4, init_steps=2, sft_steps=3, sft_batch=4, warmup_steps=1, rl_updates=1, rl_hands=2,
                   rl_group=2, rl_verify_iter=2, rl_max_new_tokens=24, rl_epochs=1, eval_n=3)

    @classmethod
    def for_task(cls, task: str, quick: bool = False, seed: int = 0) -> "VisionConfig":
        """The task's configuration. V-IRL-VL grafts the shipped V-IRL-L SFT checkpoint's language
        model (there is no V-IRL-L base checkpoint to start from) and trains Init, SFT and RL on
        the ID task (absolute actions); its street-view grids cost seconds each to draw, so its
        stages are short and RL plays few, small groups (2 tries per position, as the paper)."""
        if task not in TASKS:
            raise ValueError(f"the vision pipeline supports {', '.join(TASKS)}, not {task!r}")
        cfg = cls.quick(seed) if quick else cls(seed=seed)
        if task == "virl-vl":
            cfg = replace(cfg, task=task, text_from="models/checkpoints/virl-l-sft", rl_verify_iter=2,
                          **(dict(init_steps=2, sft_steps=2, eval_n=2) if quick else
                             dict(patch_size=16, vision_hidden=64, init_steps=30, init_lr=5e-4, init_warmup_steps=5,
                                  sft_batch=8, sft_steps=120, warmup_steps=10, rl_updates=30, rl_hands=4, rl_group=4,
                                  rl_max_new_tokens=64, eval_n=48)))
        return cfg


# ---------------------------------------------------------------------------------------------
# Supervised stages


class ImageTextBatches:
    """The image-text batches of `steps * batch_size` examples (`Example`s) for the SFT loop
    (`sft.fit`), in the order `random.Random(seed)` shuffles them, consecutive, each
    `step(model) -> (loss, tokens)`: the chats right-padded, every row's image (a V-IRL grid
    through the checkpoint's image processor, a GP table composed by `TablePixels`) with its
    cross-attention mask (`data.vision_inputs`), cross-entropy on the answers."""

    def __init__(self, codec: ChatCodec, examples: Sequence[Example], steps: int, batch_size: int, seed: int) -> None:
        self.codec = codec
        self.tables = TablePixels(codec) if any(ex.slots is not None for ex in examples) else None
        order = list(examples[:steps * batch_size])
        random.Random(seed).shuffle(order)
        self.chunks = [order[i * batch_size:(i + 1) * batch_size] for i in range(min(steps, len(order) // batch_size))]

    def __len__(self) -> int:
        return len(self.chunks)

    def _pixels(self, ex: Example) -> dict:
        if ex.image is not None:
            return self.codec.pixels(ex.image)
        assert self.tables is not None and ex.slots is not None  # a table example: drawn from its cards
        return self.tables(ex.slots)

    def __iter__(self):
        for chunk in self.chunks:
            yield lambda model, chunk=chunk: self._step(model, chunk)

    def _step(self, model, chunk: Sequence[Example]):
        import torch

        codec = self.codec
        encoded = [codec.sft_example(ex.prompt, ex.answer, image=True) for ex in chunk]
        width = max(len(x) for x, _ in encoded)
        ids = torch.full((len(chunk), width), codec.pad_id, dtype=torch.long)
        labels = torch.full((len(chunk), width), -100, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, (x, y) in enumerate(encoded):
            ids[row, :len(x)], labels[row, :len(y)], mask[row, :len(x)] = torch.tensor(x), torch.tensor(y), 1
        extra = vision_inputs([self._pixels(ex) for ex in chunk], [codec.image_position(x) for x, _ in encoded], width)
        return model(input_ids=ids, attention_mask=mask, labels=labels, **extra).loss, int(mask.sum())


def random_layout(rng: random.Random) -> tuple:
    """1-4 cards in random slots of the table, ranks uniform, suits from all four."""
    slots: list = [None] * 4
    for i in rng.sample(range(4), rng.randint(1, 4)):
        slots[i] = Card(rng.randint(1, 13), rng.choice(SUITS))
    return tuple(slots)


def pretrain_vision(model, codec: ChatCodec, *, steps: int, batch_size: int, lr: float, seed: int,
                    progress: bool) -> dict[str, Any]:
    """Pretrain the vision encoder alone, as Llama-3.2-Vision's image encoder was pretrained before
    the cross-attention layers were trained: table layouts of 1-4 cards (all four suits), and a
    linear probe on the mean of the encoder's output tokens that names the rank in each of the four
    slots (or "empty"); the probe is discarded. Through the cross-attention layers alone a fresh
    encoder learns next to nothing in the same steps (its card signal is diluted over the patches);
    this gives the image-text stage features that already name the cards."""
    import torch
    from tqdm.auto import tqdm

    vm = model.model.vision_model
    head = torch.nn.Linear(vm.config.vision_output_dim, 4 * 14)
    pixels = TablePixels(codec)
    rng = random.Random(f"vision-pretrain:{seed}")
    opt = torch.optim.AdamW(list(vm.parameters()) + list(head.parameters()), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine_lr(s, steps, max(1, steps // 20), 0.1))
    vm.train()
    losses, accs = [], []
    bar = tqdm(range(steps), desc="vision", disable=not progress, dynamic_ncols=True)
    for _ in bar:
        layouts = [random_layout(rng) for _ in range(batch_size)]
        px = vision_inputs([pixels(lay) for lay in layouts], [0] * batch_size, 1)
        out = vm(pixel_values=px["pixel_values"], aspect_ratio_ids=px["aspect_ratio_ids"],
                 aspect_ratio_mask=px["aspect_ratio_mask"]).last_hidden_state
        logits = head(out.mean(dim=(1, 2, 3))).view(batch_size, 4, 14)
        target = torch.tensor([[0 if c is None else c.rank for c in lay] for lay in layouts])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 14), target.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        accs.append(float((logits.argmax(-1) == target).float().mean()))
        bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}", acc=f"{sum(accs[-20:]) / len(accs[-20:]):.2f}")
    bar.close()
    vm.eval()
    return {"steps": steps, "batch_size": batch_size, "lr": lr, "layouts": steps * batch_size,
            "final_loss": sum(losses[-20:]) / max(1, len(losses[-20:])),
            "final_slot_accuracy": sum(accs[-20:]) / max(1, len(accs[-20:])), "loss_curve": loss_curve(losses)}


def build_base_model(cfg: VisionConfig, out: Path) -> Path:
    """The grafted, untrained base: `cfg.text_from`'s language model + a fresh vision tower."""
    from ..tiny import build_tiny_mllama

    text_from = Path(cfg.text_from)
    text_from = text_from if text_from.is_absolute() else REPO / text_from
    return build_tiny_mllama(out, text_from=text_from, image_size=cfg.image_size, patch_size=cfg.patch_size,
                             max_image_tiles=1, vision_hidden=cfg.vision_hidden, vision_layers=cfg.vision_layers,
                             vision_global_layers=cfg.vision_global_layers,
                             cross_attention_layers=list(cfg.cross_attention_layers), gate=1.0, init_std=0.02,
                             seed=cfg.seed)


def run_sft_stage(cfg: VisionConfig, stage: str, start: Path | None, examples: Sequence[Example], out: Path, *,
                  steps: int, batch_size: int, lr: float, progress: bool,
                  warmup_steps: int | None = None) -> dict[str, Any]:
    """Train one supervised stage (from `start`, or from the freshly grafted model) and save it."""
    from collections import Counter

    watch = Stopwatch()
    setup_torch(cfg.seed, cfg.threads)
    if start is None:
        with tempfile.TemporaryDirectory() as tmp:
            model, proc = load_checkpoint(build_base_model(cfg, Path(tmp) / "graft"))
    else:
        model, proc = load_checkpoint(start)
    codec = ChatCodec(proc)
    vision_pretraining = None
    if start is None and cfg.vision_pretrain_steps and cfg.task == "gp-vl":
        vision_pretraining = pretrain_vision(model, codec, steps=cfg.vision_pretrain_steps,
                                             batch_size=cfg.vision_pretrain_batch, lr=cfg.vision_pretrain_lr,
                                             seed=cfg.seed, progress=progress)
    compute = Compute()
    losses = fit(model, ImageTextBatches(codec, examples, steps, batch_size, cfg.seed), steps=steps, lr=lr,
                 warmup_steps=cfg.warmup_steps if warmup_steps is None else warmup_steps,
                 min_lr_ratio=cfg.min_lr_ratio, weight_decay=cfg.weight_decay, grad_clip=cfg.grad_clip,
                 desc=stage, progress=progress, compute=compute)
    params = n_params(model)
    seen = examples[:steps * batch_size]
    record = {"kind": "sft", "stage": stage, "task": cfg.task,
              "start": str(start) if start else f"grafted from {cfg.text_from}",
              "parameters": params, "vision_parameters": n_params(model.model.vision_model),
              "examples": len(seen), "example_kinds": dict(Counter(e.kind for e in seen)),
              "red_suit_examples": sum(any(c is not None and c.suit in "HD" for c in e.slots or ()) for e in seen),
              "steps": len(losses), "final_loss": sum(losses[-20:]) / max(1, len(losses[-20:])),
              "loss_curve": loss_curve(losses), "compute": compute.as_dict(params),
              "vision_pretraining": vision_pretraining,
              "wall_s": round(watch.elapsed(), 1), "config": asdict(cfg), "environment": environment()}
    save_checkpoint(model, proc, out, record)
    return record


def run_rl_stage(cfg: VisionConfig, start: Path, out: Path, *, progress: bool) -> dict[str, Any]:
    """GRPO from Init on GP-VL ID hands (`models.train.grpo.train_grpo`, task gp-vl)."""
    from .grpo import GRPOConfig, train_grpo

    gcfg = GRPOConfig(task=cfg.task, seed=cfg.seed, updates=cfg.rl_updates, hands_per_update=cfg.rl_hands,
                      group_size=cfg.rl_group, verify_iter=cfg.rl_verify_iter, lr=cfg.rl_lr, epochs=cfg.rl_epochs,
                      max_new_tokens=cfg.rl_max_new_tokens, threads=cfg.threads)
    record = train_grpo(gcfg, start, out, progress=progress)
    record.update(stage="rl", vision_config=asdict(cfg))
    (out / "training.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return record


def train_vision(cfg: VisionConfig, out: "str | Path", *, stages: Sequence[str] = STAGES,
                 progress: bool = True) -> dict[str, Any]:
    """Run the requested stages in order under `out/<stage>/`; a stage whose checkpoint already
    exists is kept (resumable). Returns {stage: training record}."""
    if cfg.task not in TASKS:
        raise ValueError(f"the vision pipeline supports {', '.join(TASKS)}, not {cfg.task!r}")
    unknown = [s for s in stages if s not in TASK_STAGES[cfg.task]]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; {cfg.task} stages are {', '.join(TASK_STAGES[cfg.task])}")
    out = Path(out)
    records: dict[str, Any] = {}
    virl = cfg.task == "virl-vl"
    trained: list[Path] = []
    for stage in TASK_STAGES[cfg.task]:
        if stage not in stages:
            continue
        dest = out / stage
        if (dest / "training.json").is_file():
            records[stage] = read_record(dest)
            continue
        if stage == "base":
            ex = base_examples(cfg.base_steps * cfg.base_batch, cfg.seed + 100, cfg.base_read_share)
            records[stage] = run_sft_stage(cfg, stage, None, ex, dest, steps=cfg.base_steps,
                                           batch_size=cfg.base_batch, lr=cfg.base_lr, progress=progress)
        elif stage == "init":
            n = cfg.init_steps * cfg.sft_batch
            ex = virl_examples(n, cfg.seed + 200) if virl else id_examples(n, cfg.seed + 200)
            records[stage] = run_sft_stage(cfg, stage, None if virl else out / "base", ex, dest, steps=cfg.init_steps,
                                           batch_size=cfg.sft_batch, lr=cfg.init_lr, progress=progress,
                                           warmup_steps=cfg.init_warmup_steps)
        elif stage == "sft":
            n = cfg.sft_steps * cfg.sft_batch
            ex = virl_examples(n, cfg.seed + 300) if virl else id_examples(n, cfg.seed + 300)
            records[stage] = run_sft_stage(cfg, stage, out / "init", ex, dest, steps=cfg.sft_steps,
                                           batch_size=cfg.sft_batch, lr=cfg.sft_lr, progress=progress)
        elif stage == "rl":
            records[stage] = run_rl_stage(cfg, out / "init", dest, progress=progress)
        elif stage == "sft-diverse":
            ex = diverse_examples(cfg.sft_steps * cfg.sft_batch, cfg.seed + 400)
            records[stage] = run_sft_stage(cfg, stage, out / "init", ex, dest, steps=cfg.sft_steps,
                                           batch_size=cfg.sft_batch, lr=cfg.sft_lr, progress=progress)
        trained.append(dest)
    for dest in trained:   # after every stage has trained (RL starts from the float32 Init)
        store_bfloat16(dest)
    return records


def store_bfloat16(path: "str | Path") -> None:
    """Rewrite a checkpoint's weights in bfloat16 (the paper's checkpoints' dtype; half the bytes in
    the repository). Every loader here reads them back in float32 on a CPU, so what is evaluated
    after this is exactly what is shipped."""
    import torch
    from transformers import MllamaForConditionalGeneration

    model = MllamaForConditionalGeneration.from_pretrained(path, dtype=torch.float32)
    model.to(torch.bfloat16)  # type: ignore[arg-type]  # nn.Module.to(dtype), in place
    model.save_pretrained(path, safe_serialization=True)


# ---------------------------------------------------------------------------------------------
# Evaluation


def evaluate_vision(root: "str | Path", cfg: VisionConfig, *, stages: Sequence[str] = STAGES,
                    progress: bool = True) -> dict[str, Any]:
    """Every stage on every split of the task (the protocol's batched executor, the checkpoint's
    own decoding), in the staged pipeline's findings format (`models.train.pipeline.split_result`:
    each cell's `value` is the task's headline — GP-VL episode success, V-IRL-VL per-step accuracy —
    with its SE, plus per-step accuracy and, for GP-VL, recognition accuracy with SEs), the paired
    comparisons (`pipeline.COMPARISONS`; GP-VL also of recognition, `paired_recognition`), and
    every evaluated episode; written to `root/findings.json`, `root/episodes.jsonl.gz` (what the
    Findings view links into Inspect) and the stages' model cards."""
    import torch

    from game.protocol import paired_ratio_difference

    from .evaluate import evaluate
    from .pipeline import COMPARISONS, EPISODES_FILE, EVAL_MAX_NEW_TOKENS, paired, split_result, write_episodes

    import game.tasks.virl as virl_task

    torch.set_num_threads(max(1, cfg.threads))
    root = Path(root)
    spec = get_task(cfg.task)
    headline = spec.headline
    loaded = {stage: load_checkpoint(root / stage) for stage in TASK_STAGES[cfg.task]
              if stage in stages and (root / stage / "config.json").is_file()}
    # split by split, every stage on the same episodes: a V-IRL grid (seconds to draw) is drawn once
    # per split when the grid cache holds a split's rail positions (~7 per episode)
    cache_size = virl_task.GRID_CACHE
    if cfg.task == "virl-vl":
        virl_task.GRID_CACHE = max(cache_size, 8 * cfg.eval_n + 16)
    try:
        results = {(split, stage): evaluate(model, proc, cfg.task, split, cfg.eval_n, seed=cfg.seed,
                                            max_new_tokens=EVAL_MAX_NEW_TOKENS, progress=progress, keep_episodes=True)
                   for split in splits(cfg.task) for stage, (model, proc) in loaded.items()}
    finally:
        virl_task.GRID_CACHE = cache_size
    table: dict[str, Any] = {}
    outcomes: dict[str, dict[str, list]] = {}
    recognition: dict[str, dict[str, list]] = {}
    episodes: list[dict] = []
    for stage in loaded:
        row: dict[str, Any] = {}
        outcomes[stage], recognition[stage] = {}, {}
        for split in splits(cfg.task):
            res = results[(split, stage)]
            row[split], outcomes[stage][split] = split_result(res, headline)
            row[split].update(per_step_accuracy=res["per_step_accuracy"], per_step_se=res["per_step_se"],
                              steps=res["steps"], outcomes=res["outcomes"])
            if spec.recognition:
                row[split].update(recognition=res["recognition_accuracy"],
                                  recognition_se=binomial_se(res["recognition_accuracy"], res["steps"]))
                recognition[stage][split] = res["episode_recognition"]
            episodes += [{"stage": stage, "split": split, "index": i, **ep} for i, ep in enumerate(res["episodes"])]
        row["compute"] = read_record(root / stage).get("compute")
        table[stage] = row
    comparisons = {name: {s: paired(outcomes[a][s], outcomes[b][s]) for s in splits(cfg.task)}
                   for name, a, b in COMPARISONS if a in outcomes and b in outcomes}
    findings: dict[str, Any] = {"task": cfg.task, "metric": headline,
                "protocol": {"episodes_per_split": cfg.eval_n, "decoding": "checkpoint default (T=0.6, top-p 0.9)",
                             "splits": {s: spec.split(s).description for s in splits(cfg.task)},
                             "instances": "protocol.instances (GP-VL: seed-42 vl_id_black / vl_rule_ood_black / "
                                          "vl_visual_ood_red hands; V-IRL-VL: episode i = route i mod R, seed i)",
                             "per_step_accuracy": "correct calls / calls (the paper's V-IRL metric), SE over calls"},
                "table": table, "paired": comparisons, "config": asdict(cfg), "environment": environment()}
    if spec.recognition:
        findings["protocol"]["recognition"] = ("1 - calls with wrong cards / calls in the multi-turn evaluation "
                                               "(paper §5.3), SE over calls; paired: pooled per episode")
        findings["paired_recognition"] = {
            name: {s: paired_ratio_difference(recognition[a][s], recognition[b][s]) for s in splits(cfg.task)}
            for name, a, b in COMPARISONS if a in recognition and b in recognition}
    (root / "findings.json").write_text(json.dumps(findings, indent=2) + "\n", encoding="utf-8")
    write_episodes(root / EPISODES_FILE, episodes)
    for stage in table:
        (root / stage / "README.md").write_text(stage_card(stage, findings, read_record(root / stage)),
                                                encoding="utf-8")
    return findings


STAGE_TEXT = {
    "base": ("the stand-in for a pretrained vision-language model",
             "the GP-L pipeline's text base (`{text_from}`) as its language model, cross-attention layers at "
             "{cross_attention_layers} and a fresh {vision_layers}+{vision_global_layers}-layer vision encoder "
             "({image_size}-px tile, {patch_size}-px patches), then {base_examples:,} image-text examples with cards of all four "
             "suits: {read_pct:.0f} % card reading (1-4 cards in random slots of the table, a reading prompt) and "
             "the rest the paper's GP-VL prompt stating a random face-card mapping J/Q/K = (a, b, c), a, b, c in "
             "6..13, never 10/10/10 or 11/12/13, with expert answers.",
             "the GP-VL prompt with J/Q/K = 10 (so neither the ID nor the visual-OOD configuration); the "
             "rule-OOD mapping 11/12/13; the verifier's feedback."),
    "init": ("the paper's Init",
             "the base, then {init_examples:,} ID expert answers (the paper's GP-VL prompt, black suits, "
             "J/Q/K = 10), {init_steps} steps at lr {init_lr:g}.",
             "red suits with J/Q/K = 10; the rule-OOD mapping; the verifier's feedback."),
    "sft": ("the paper's SFT",
            "Init, then {sft_examples:,} more ID expert answers (black suits, J/Q/K = 10), {sft_steps} steps at "
            "lr {sft_lr:g}.",
            "red suits after the base; the rule-OOD mapping; the verifier's feedback."),
    "rl": ("the paper's RL",
           "Init, then GRPO on ID hands only (black suits, J/Q/K = 10): {rl_updates} updates x {rl_hands} hands x "
           "{rl_group} episodes, multi-turn with up to {rl_verify_iter} tries and the verifier's feedback, "
           "sampled at T = 1, lr {rl_lr:g}.",
           "red suits after the base; the rule-OOD mapping; no expert answers after Init."),
    "sft-diverse": ("a diverse-prompt SFT (after the rebuttal, arXiv 2510.00237)",
                    "Init, then {sft_examples:,} expert examples, black suits only: half ID (J/Q/K = 10), "
                    "half the paper's GP-VL prompt stating a varied face-card mapping (the base's, never "
                    "11/12/13), {sft_steps} steps at lr {sft_lr:g}: SFT's budget, with diverse prompts.",
                    "red suits after the base; the rule-OOD mapping; the verifier's feedback."),
}


VIRL_STAGE_TEXT = {
    "init": ("Init",
             "the shipped V-IRL-L SFT checkpoint (`{text_from}`) as its language model, cross-attention layers at "
             "{cross_attention_layers} and a fresh {vision_layers}+{vision_global_layers}-layer vision encoder "
             "({image_size}-px tile), then {init_examples:,} V-IRL-VL expert single-turn pairs (the paper's VL "
             "prompt at every rail position of training episodes on the bundled Helsinki routes, absolute actions, "
             "the 2x2 street-view grid drawn at reduced resolution, `ResponseVIRL` with the golden action), "
             "{init_steps} steps at lr {init_lr:g}.",
             "relative actions (rule OOD) after its text model's pretraining; the held-out routes; the verifier's "
             "feedback."),
    "sft": ("the paper's SFT",
            "Init, then {sft_examples:,} more V-IRL-VL expert pairs (absolute actions), {sft_steps} steps at lr "
            "{sft_lr:g}.",
            "relative actions; the held-out routes; the verifier's feedback."),
    "rl": ("the paper's RL",
           "Init, then GRPO on ID training episodes only (absolute actions): {rl_updates} updates x {rl_hands} "
           "episodes x {rl_group} rollouts, multi-step and multi-turn with {rl_verify_iter} tries per position and "
           "the verifier's feedback, full-resolution grids, sampled at T = 1, lr {rl_lr:g}.",
           "relative actions; the held-out routes; no expert answers after Init."),
}


def stage_card(stage: str, findings: dict[str, Any], record: dict[str, Any]) -> str:
    """The model card (README.md) of one vision stage: what it saw, what it never saw, how it was
    trained, and its row of the table."""
    cfg = findings.get("config") or {}
    facts = dict(cfg, base_examples=cfg.get("base_steps", 0) * cfg.get("base_batch", 0),
                 init_examples=cfg.get("init_steps", 0) * cfg.get("sft_batch", 0),
                 sft_examples=cfg.get("sft_steps", 0) * cfg.get("sft_batch", 0),
                 read_pct=100 * cfg.get("base_read_share", 0),
                 cross_attention_layers=tuple(cfg.get("cross_attention_layers") or ()))  # as trained: (1, 3)
    task = findings["task"]
    if task == "virl-vl":
        return _virl_card(stage, findings, record, facts)
    role, saw, never = STAGE_TEXT[stage]
    row = findings["table"].get(stage, {})
    compute = record.get("compute") or {}

    lines = [
        f"# gp-vl-{stage}: {role}", "",
        f"A ~{record.get('parameters', 0) / 1e6:.1f} M-parameter `MllamaForConditionalGeneration` (the paper's "
        "Llama-3.2-Vision architecture in miniature; `models.tiny.build_tiny_mllama`) trained on a CPU by the vision "
        "pipeline (`sftvsrl train vision --task gp-vl`, `models/train/vision.py`). It sees the 1200 × 1200 table "
        f"image through its own `MllamaImageProcessor` (one {cfg.get('image_size')}-px tile) and the paper's exact GP-VL prompt; the card "
        "labels are never in its text input.", "",
        f"**Saw:** {saw.format(**facts)}", "",
        f"**Never saw:** {never}", "",
        f"**Training:** {record.get('wall_s', '?')} s wall on {_threads(record)}; {compute.get('train_tokens', 0):,} "
        f"trained token positions, {compute.get('infer_tokens', 0):,} forward-only (`training.json`).", "",
        "| split | episode success | recognition accuracy (per call) |", "|---|---|---|",
        *[f"| {s} | {pct(row[s]['success'], row[s]['se'])} (n = {row[s]['n']}) | "
          f"{pct(row[s]['recognition'], row[s]['recognition_se'])} ({row[s]['steps']} calls) |"
          for s in splits(findings["task"]) if s in row],
        "", f"Evaluation: the protocol's batched executor, {findings['protocol']['episodes_per_split']} episodes "
            f"per split, {findings['protocol']['decoding']} (`findings.json`).",
    ]
    return "\n".join(lines) + "\n"


def _threads(record: dict[str, Any]) -> str:
    """How many CPU threads trained the stage, in words (its record's environment)."""
    n = (record.get("environment") or {}).get("threads") or (record.get("config") or {}).get("threads") or 1
    return "one CPU thread" if n == 1 else f"{n} CPU threads"


def pct(x: float, se: float) -> str:
    return f"{100 * x:.1f} ± {100 * se:.1f} %"


def _virl_card(stage: str, findings: dict[str, Any], record: dict[str, Any], facts: dict[str, Any]) -> str:
    role, saw, never = VIRL_STAGE_TEXT[stage]
    row = findings["table"].get(stage, {})
    compute = record.get("compute") or {}
    lines = [
        f"# virl-vl-{stage}: {role}", "",
        f"A ~{record.get('parameters', 0) / 1e6:.1f} M-parameter `MllamaForConditionalGeneration` "
        "(`models.tiny.build_tiny_mllama`) trained on a CPU by the vision pipeline (`sftvsrl train vision --task "
        "virl-vl`, `models/train/vision.py`). It sees the 2x2 street-view grid through its own "
        f"`MllamaImageProcessor` (one {facts.get('image_size')}-px tile) and the paper's exact V-IRL-VL prompt, "
        "whose history has no landmark text.", "",
        f"**Saw:** {saw.format(**facts)}", "",
        f"**Never saw:** {never}", "",
        f"**Training:** {record.get('wall_s', '?')} s wall on {_threads(record)}; {compute.get('train_tokens', 0):,} "
        f"trained token positions, {compute.get('infer_tokens', 0):,} forward-only (`training.json`).", "",
        "| split | per-step accuracy (± SE over calls) | episode success |", "|---|---|---|",
        *[f"| {s} | {pct(row[s]['per_step_accuracy'], row[s]['per_step_se'])} ({row[s]['steps']} calls) | "
          f"{pct(row[s]['success'], row[s].get('success_se', row[s]['se']))} (n = {row[s]['n']}) |"
          for s in splits(findings["task"]) if s in row],
        "", f"Evaluation: the protocol's batched executor, {findings['protocol']['episodes_per_split']} episodes "
            f"per split, {findings['protocol']['decoding']} (`findings.json`).",
    ]
    return "\n".join(lines) + "\n"
