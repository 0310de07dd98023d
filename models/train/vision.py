"""The vision side of the staged pipeline (`models.train.pipeline`): image-text data and the
pieces only a vision checkpoint needs, for tiny `MllamaForConditionalGeneration` checkpoints (the
paper's Llama-3.2-Vision architecture in miniature).

The paper post-trains Llama-3.2-11B-Vision, a text model given a vision encoder and
cross-attention layers and trained on image-text data. The pipeline builds the same thing in
miniature (`VisionConfig`), then mirrors the paper's stages on top of it:

1. **base** (the "pretrained VLM"): a GP-L pipeline's text base (`gp-vl-text`: the GP-L base of the
   pipeline before the rule-phrasing base, kept as the shipped GP-VL's language model; a tiny Llama that
   reads a stated face-card mapping and answers in the paper's format) becomes the language model
   of a tiny Mllama (`models.tiny.build_tiny_mllama(text_from=…)`: its tokenizer, embeddings and
   self-attention layers copied, cross-attention layers inserted, a fresh vision encoder). The
   vision encoder is first pretrained alone (`pretrain_vision`: table layouts of 1–4 cards of all
   four suits, a per-slot rank probe that is then discarded — as Llama-3.2-Vision's image encoder
   was pretrained before its cross-attention layers), then everything is trained on image-text
   data of two kinds, cards of all four suits (`base_examples`):
   - *card reading*: a table image with 1–4 cards in random slots (suits drawn from all four,
     ranks uniform) and a reading prompt (`READ_PROMPT`); the answer lists the cards;
   - *GP-VL with a stated mapping*: the paper's exact GP-VL prompt whose rule line states a face-card
     mapping J/Q/K = (a, b, c), a, b, c in 6..13, never the ID mapping 10/10/10 nor the rule-OOD
     11/12/13; four cards with suits drawn from all four; the expert `ResponseEqn` answer.
   So the base knows red and black cards, but has never seen the GP-VL prompt with J/Q/K = 10
   (hence neither the ID nor the visual-OOD configuration) nor the rule-OOD mapping.
2. **init**: a short SFT on the ID task (the paper's GP-VL prompt, black suits, J/Q/K = 10: the
   registry's training stream, `id_examples`) from the base.
3. **sft**: continued SFT from Init on more ID expert answers.
4. **rl**: GRPO from Init on the ID task only (`models.train.grpo`, the same trainer and rollout
   executor as GP-L: multi-turn, the verifier's feedback, the image in the first user message).
5. **sft-diverse** (after the rebuttal, arXiv 2510.00237): SFT from Init with SFT's budget, black
   suits only: half ID examples, half the GP-VL prompt stating varied mappings (never 11/12/13;
   `diverse_examples`).

Images go through each checkpoint's own image processor (`MllamaImageProcessor`, one 224-px tile).
Training tables are composed from per-slot pieces processed by that image processor
(`TablePixels`: the processor's resize and normalisation are linear, so the processed table is the
processed empty table plus each card's processed difference; measured equal to within 1e-7);
evaluation and play process the real 1200 × 1200 table image, as the `local` backend does.
`ImageTextBatches` are the SFT loop's (`models.train.sft.fit`) batches of image-text examples.

V-IRL-VL (its training entry's preset): the shipped V-IRL-L Init (`virl-l-init`: the pipeline's
V-IRL-L base, then a short ID SFT) is the language model, no visual pretraining; Init and SFT on expert
single-turn pairs of registry training episodes (`virl_examples`, grids drawn at reduced
resolution), RL = GRPO from Init on full-resolution grids, 2 tries per position.

The shipped weights are stored in bfloat16 (`store_bfloat16`) before they are evaluated.

    sftvsrl train vision --task gp-vl --out runs/vision/gp-vl          # ~32 min training (RL 22) + ~4 min eval
    sftvsrl train vision --task virl-vl --out runs/vision/virl-vl      # ~15 min training + ~9 min eval (grids)
    sftvsrl train vision --task gp-vl --quick --out /tmp/v             # seconds, for tests
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from game.gp.cards import Card, Rule
from game.tasks import get_task

from ..prompts import FACE_CARD_MSG, cards_repr, gp_prompt, response_eqn
from .common import cosine_lr, loss_curve
from .data import ChatCodec, expert_answer, expert_formula, vision_inputs

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


def diverse_examples(n: int, seed: int, task: str, face_prob: float = 0.5) -> list[Example]:
    """SFT-diverse's data (after the rebuttal, arXiv 2510.00237), black suits only (the ID task's,
    so the visual-OOD configuration stays unseen): half ID expert examples (`id_examples`), half the
    GP-VL prompt stating a varied face-card mapping (the base's, never 10/10/10 nor 11/12/13), in
    alternation. Half ID, because the base never saw the ID rule line (a uniform draw over 512
    mappings would show it to SFT-diverse a handful of times: measured 4 % ID success)."""
    ids = id_examples(n // 2, seed, task)
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


def id_examples(n: int, seed: int, task: str) -> list[Example]:
    """`n` in-distribution GP-VL expert examples: hands of the registry `task`'s training stream
    (GP-VL: black suits, J/Q/K = 10), the session's own prompt, the canonical expert answer."""
    from itertools import islice

    from game.gp.deal import Deal
    from game.tasks import open_session

    out: list[Example] = []
    for inst in islice(get_task(task).training_stream(seed), 4 * n + 100):
        deal = Deal.from_id(inst.params["deal_id"])
        answer = expert_answer(deal, Rule.FACE10)
        if answer is None:
            continue
        out.append(Example(tuple(deal.cards), open_session(inst).prompt(), answer, "id"))
        if len(out) == n:
            return out
    raise RuntimeError("the training stream ran out of solvable hands")


def virl_examples(n: int, seed: int, task: str, *, pano_width: int = 1024, view: int = 112) -> list[Example]:
    """`n` expert V-IRL-VL examples: the registry `task`'s training episodes (bundled Helsinki routes,
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
    for inst in islice(get_task(task).training_stream(seed), 10 * n + 100):
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


def store_bfloat16(path: "str | Path") -> None:
    """Rewrite a checkpoint's weights in bfloat16 (the paper's checkpoints' dtype; half the bytes in
    the repository). Every loader here reads them back in float32 on a CPU, so what is evaluated
    after this is exactly what is shipped."""
    import torch
    from transformers import MllamaForConditionalGeneration

    model = MllamaForConditionalGeneration.from_pretrained(path, dtype=torch.float32)
    model.to(torch.bfloat16)  # type: ignore[arg-type]  # nn.Module.to(dtype), in place
    model.save_pretrained(path, safe_serialization=True)
