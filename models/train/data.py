"""Training data for the tiny checkpoints: expert answers and pairs, tokenizer text, tokenised chats.

GP-L (expert answers from our solver):

- `expert_formula(values)`: the one canonical formula taught for a multiset of values — the
  shortest of `distinct_solutions` (commutativity/associativity folded, larger terms first) that the
  paper's float verifier grades +5. One formula per multiset, whatever the card order, so the
  mapping a tiny model must learn is a function of the hand, not of the dealing order.
- `expert_answer(deal)`: the paper-format reply (`response_eqn(...)` with `=24`) with that formula.
- `gp_feedback_messages()`: the verifier's message of every kind (tokenizer text).
  (The GP-L pipeline's corpora are `models.train.gp_corpus`'s.)

V-IRL-L (expert answers from the rail, `game.virl`):
- `virl_episode_pairs(data, route_idx, seed)`: walk one episode of the reference flow (route,
  random initial heading, drop-rate rail, `start_episode`) with the golden action at every step:
  one single-turn (prompt, answer) pair per rail entry, prompt = `virl_prompt(...)` byte-exact
  with the golden history so far, answer = `response_virl(oracle observation, current sentence,
  gt action)` (the paper's `ResponseVIRL`, "optimal single-turn prompt-response pairs").
- `virl_sft_pairs(n_episodes, seed)`: pairs from `n_episodes` training episodes on
  `bundled:helsinki`, absolute actions (the ID rule); episode seeds never overlap the evaluation's.
- `virl_city_pairs(n, seed, feedback_share=…)`: expert pairs from the synthetic training cities
  (`game.virl.cities`: many towns, every name drawn afresh) under both action spaces (the staged
  pipeline's V-IRL-L base corpus). A `feedback_share` of them are *revision* examples: at a rail
  position a plausible wrong reply (`virl_wrong_reply`) is stepped through the real episode, the
  chat is built by the evaluation's own flow (`models.chat.Conversation`: the wrong reply as an
  assistant turn, then `You failed this trial because <the verifier's Verify Info>`), and the
  answer is the golden reply; the prompt of such a pair is that message list.
  `virl_id_pairs(n, seed)`: Helsinki ID pairs, absolute actions (`virl_sft_pairs`).
- `virl_feedback_texts()`: the verifier's feedback turns (tokenizer text).

- `ChatCodec`: renders chats with the checkpoint's own chat template and tokenises them the way the
  `local` backend does (`add_special_tokens=False`); SFT examples are prompt ids + answer ids + EOT,
  with the loss on the answer and EOT only (a prompt given as a message list is a multi-turn chat).
"""
from __future__ import annotations

import random
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NamedTuple, Sequence

from game.gp.cards import Rule
from game.gp.deal import Deal
from game.gp.solver import distinct_solutions, reference_solutions
from game.gp.verifier import step_limit_verdict, verify
from game.tasks.virl import DEFAULT_SOURCES, TRAINING_SEED_BASE

from ..chat import gp_chat
from ..prompts import feedback_text, response_eqn, response_virl, virl_prompt
from ..tiny import EOT, IMAGE

VIRL_TRAIN_SOURCE = DEFAULT_SOURCES["id"]             # the registry's in-distribution route set
PIXEL_CACHE = 256    # `ChatCodec.pixels` entries (one 224-px tile's tensors: ~0.6 MB each)


@lru_cache(maxsize=None)
def _expert_cached(key: tuple[int, ...], target: int) -> str | None:
    for formula in (*distinct_solutions(key, target), *sorted(reference_solutions(key, target), key=len)):
        if verify(f'"formula": "{formula}"', list(key), target=target).terminated:
            return formula
    return None


def expert_formula(values: Sequence[int], target: int = 24) -> str | None:
    """The canonical expert formula for these values (None when no float-exact solution exists)."""
    return _expert_cached(tuple(sorted(int(v) for v in values)), int(target))


class Example(NamedTuple):
    """One supervised example: the prompt, the expert answer, and — for a revision example — the
    failed tries before it, each (reply, verify_info) as the episode showed them (the reply as an
    assistant turn, then `You failed this trial because <verify_info>`). The loss is on the answer."""

    prompt: str
    answer: str
    history: tuple = ()


def expert_answer(deal: Deal, rule: Rule | str = Rule.FACE10) -> str | None:
    """The paper-format reply (`ResponseEqn`) with the expert formula, or None if there is none."""
    numbers = deal.numbers(rule)
    formula = expert_formula(numbers, deal.target)
    return None if formula is None else response_eqn(deal.labels, numbers, formula, deal.target)


# One reply per kind of verifier message (correct, partial, illegal characters, no match, invalid /
# unused / repeated numbers, sequence, parenthesis): the corpus's feedback turns are made by the
# verifier itself, so they never drift from what the model is shown.
_FEEDBACK_REPLIES = [((10, 5, 1, 8), "10+5+1+8"), ((10, 5, 1, 8), "10+8+(5+1"), ((10, 5, 1, 8), "10+5+1+8a"),
                     ((1, 1, 1, 1), "1+1+1+1"), ((10, 5, 1, 8), "10+5+1+8+13-13"), ((10, 5, 1, 8), "1+8"),
                     ((10, 5, 1, 8), "10+5+1+8+1-1"), ((10, 5, 1, 8), "10+5+1+*8"), ((10, 5, 1, 8), "10+5+1+8)")]


def gp_feedback_messages() -> list[str]:
    """The verifier's message of each kind, then the budget-exhausted call's."""
    return [verify(f'"formula": "{formula}"', list(numbers)).verify_info for numbers, formula in _FEEDBACK_REPLIES] \
        + [step_limit_verdict().verify_info]


# ---------------------------------------------------------------------------------------------
# V-IRL-L

def virl_data(source: str = VIRL_TRAIN_SOURCE):
    """The route set (`bundled:NAME` or a release directory): the registry's, opened once per process."""
    from game.tasks import route_data

    return route_data(source)


@dataclass(frozen=True)
class VirlPair:
    route_index: int
    seed: int
    step: int                # 0-based rail index
    prompt: str
    answer: str
    gt_action: str
    observation: str         # the entry's landmark part (what the verifier compares against)


def virl_prompt_of(episode) -> str:
    """The V-IRL-L prompt for the episode's current state (`models.prompts.virl_prompt`)."""
    return virl_prompt(episode.instruction_text, episode.obs_act_seq(), episode.action_space_text)


def virl_expert_answer(entry) -> str:
    """`ResponseVIRL` with the rail entry's oracle observation, sentence and golden action."""
    return response_virl(entry.oracle_observation, entry.instruction, entry.gt_action)


def virl_start(data, route_idx: int | None, seed: int, absolute: bool = True, verify_iter: int = 2):
    """A V-IRL-L episode with the shipped settings (verify_iter 2, drop rate 0.5, relocation on)."""
    from game.virl.episode import start_episode

    return start_episode(data.routes, seed=seed, route_idx=route_idx, absolute_action=absolute,
                         mapping=data.mapping, verify_iter=verify_iter, language_only=True)


def virl_episode_pairs(data, route_idx: int | None, seed: int, absolute: bool = True) -> list[VirlPair]:
    """One expert pair per rail entry of one episode, walked with golden actions (`virl_walk`)."""
    return [VirlPair(ep.rail.route.index, seed, ep.index, prompt, answer, ep.entry.gt_action, ep.entry.observation)
            for ep, prompt, answer in _walk(virl_start(data, route_idx, seed, absolute), 0.0, random.Random(seed))]


def virl_sft_pairs(n_episodes: int, seed: int, absolute: bool = True,
                   source: str = VIRL_TRAIN_SOURCE) -> list[VirlPair]:
    """Expert pairs from `n_episodes` episodes on random routes (route drawn by the episode seed)."""
    data = virl_data(source)
    rng = random.Random(f"virl-sft:{seed}")
    out: list[VirlPair] = []
    for _ in range(n_episodes):
        out += virl_episode_pairs(data, None, TRAINING_SEED_BASE + rng.randrange(10 ** 9), absolute)
    return out


def virl_wrong_reply(episode, rng: random.Random) -> str:
    """A plausible wrong reply (the paper's `ResponseVIRL` format) at the episode's current position,
    the kinds of mistakes a walker makes: the other action space's word for this turn (a compass
    word under relative actions, a relative word under compass ones), another legal action, the
    sentence and action of a neighbouring position (lost track), any action of the other space;
    sometimes with another position's observation. Its action is never the golden one."""
    from game.virl.rail import legal_actions

    entry, rail = episode.entry, episode.rail
    entries = rail.entries
    obs, sentence = entry.oracle_observation, entry.instruction
    x = rng.random()
    if x < 0.3 and entry.absolute_action != entry.relative_action:
        action = entry.relative_action if rail.absolute_action else entry.absolute_action
    elif x < 0.6:
        action = rng.choice(legal_actions(rail.absolute_action))
    elif x < 0.8:
        other = entries[min(len(entries) - 1, max(0, episode.index + rng.choice((-2, -1, 1, 2))))]
        obs, sentence, action = other.oracle_observation, other.instruction, other.gt_action
    else:
        action = rng.choice(legal_actions(not rail.absolute_action))
    if action == entry.gt_action:
        action = rng.choice([a for a in legal_actions(rail.absolute_action) if a != entry.gt_action])
    if rng.random() < 0.15:
        obs = entries[rng.randrange(len(entries))].oracle_observation
    return response_virl(obs, sentence, action)


def _walk(ep, feedback_share: float, rng: random.Random):
    """Walk `ep` with golden actions, yielding (episode before the move, prompt, answer) per rail
    entry; see `virl_walk` for the revision examples."""
    from ..chat import Conversation

    while not ep.done:
        text = virl_prompt_of(ep)
        prompt: str | list[dict[str, Any]] = text
        answer = virl_expert_answer(ep.entry)
        if feedback_share and rng.random() < feedback_share:
            conv = Conversation()
            conv.messages_for(text)
            wrong = virl_wrong_reply(ep, rng)
            record = ep.step(wrong)
            if record.reward == 1.0:  # cannot happen: the wrong reply's action is not the golden one
                raise AssertionError(f"wrong reply graded correct: {wrong}")
            conv.record(wrong, record.verify_info)
            prompt = conv.messages_for(text)
        yield ep, prompt, answer
        record = ep.step(answer)
        if record.reward != 1.0:  # cannot happen: the golden reply is graded correct
            raise AssertionError(f"expert answer graded {record.reward}: {record.verify_info}")


def virl_walk(data, route_idx: int | None, seed: int, absolute: bool, *, feedback_share: float = 0.0,
              rng: random.Random | None = None) -> list[tuple]:
    """One training episode walked with golden actions: a (prompt, answer) pair per rail entry.
    With probability `feedback_share` per entry the pair is a revision example instead: a wrong
    reply (`virl_wrong_reply`) is graded by the episode itself (spending one of the position's
    tries, as in the reference), the chat continues as the evaluation's `Conversation` builds it,
    and the answer is the golden reply; its prompt is then the message list."""
    ep = virl_start(data, route_idx, seed, absolute)
    return [(prompt, answer) for _, prompt, answer in _walk(ep, feedback_share, rng or random.Random(seed))]


def virl_city_pairs(n: int, seed: int, relative_share: float = 0.5, feedback_share: float = 0.0,
                    cities: int | None = None) -> list[tuple]:
    """`n` expert (prompt, answer) pairs from episodes in the synthetic training cities
    (`game.virl.cities`), each episode on a random city and route under the relative action space
    with probability `relative_share`, else the absolute one; `feedback_share` of the pairs are
    revision examples (`virl_walk`: the prompt is then a message list). `cities`: how many of the
    cities to draw from (default: all for a full corpus, 2 below 1,000 pairs, so a test builds two
    cities). Never a Helsinki route or place name."""
    from game.virl.cities import N_CITIES, training_city

    pool = cities or (N_CITIES if n >= 1000 else 2)
    rng = random.Random(f"virl-city-pairs:{seed}")
    out: list[tuple] = []
    while len(out) < n:
        city = training_city(rng.randrange(min(pool, N_CITIES)))
        absolute = rng.random() >= relative_share
        ep_seed = TRAINING_SEED_BASE + rng.randrange(10 ** 9)
        out += virl_walk(city, None, ep_seed, absolute, feedback_share=feedback_share, rng=rng)
    return out[:n]


def virl_id_pairs(n: int, seed: int) -> list[tuple[str, str]]:
    """`n` in-distribution expert pairs: Helsinki ID routes, absolute actions (the paper's SFT data)."""
    episodes = n // 4 + 1
    pairs = virl_sft_pairs(episodes, seed)
    while len(pairs) < n:
        episodes *= 2
        pairs = virl_sft_pairs(episodes, seed)
    return [(p.prompt, p.answer) for p in pairs[:n]]


def virl_feedback_texts() -> list[str]:
    from game.virl.verifier import (VERIFY_AT_INTERSECTION, VERIFY_CORRECT, VERIFY_EXCEEDED,
                                    VERIFY_NOT_AT_INTERSECTION, VERIFY_WRONG_ACTION)

    return [feedback_text(m) for m in (VERIFY_CORRECT, VERIFY_WRONG_ACTION, VERIFY_NOT_AT_INTERSECTION,
                                       VERIFY_AT_INTERSECTION, VERIFY_EXCEEDED)]


class ChatCodec:
    """Chat rendering and tokenisation exactly as the `local` backend does it, plus SFT encoding.

    Given a vision checkpoint's processor (`MllamaProcessor`) instead of a tokenizer, it also turns
    images into the model's pixel inputs with the checkpoint's own image processor (`pixels`), as
    the `local` backend's processor call does (`vision` is then True)."""

    def __init__(self, tokenizer) -> None:
        self.image_processor: Any = getattr(tokenizer, "image_processor", None)
        self.vision = self.image_processor is not None
        if self.vision:
            tokenizer = tokenizer.tokenizer
        self.image_id = tokenizer.convert_tokens_to_ids(IMAGE)
        self._pixels: "OrderedDict[int, tuple]" = OrderedDict()
        self.tok = tokenizer
        self.eot_id = tokenizer.convert_tokens_to_ids(EOT)
        self.pad_id = tokenizer.pad_token_id
        marker = "\x00PROMPT\x00"
        self._single = self.render(gp_chat(marker))  # the template inserts content verbatim

    def render(self, messages: list) -> str:
        return self.tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def encode_text(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def prompt_ids(self, prompt: str, image: bool = False) -> list[int]:
        """Token ids of the one-turn chat holding `prompt` (fast path for the SFT data); `image`:
        the image placeholder first, as GP-VL and V-IRL-VL chats start."""
        if image:
            if not hasattr(self, "_single_image"):
                self._single_image = self.render(gp_chat("\x00PROMPT\x00", image=True))
            return self.encode_text(self._single_image.replace("\x00PROMPT\x00", prompt))
        return self.encode_text(self._single.replace("\x00PROMPT\x00", prompt))

    def chat_ids(self, messages: list) -> list[int]:
        return self.encode_text(self.render(messages))

    def sft_example(self, prompt, answer: str, image: bool = False,
                    history: Sequence[tuple[str, str]] = (), prompt_loss: bool = False) -> tuple[list[int], list[int]]:
        """(input ids, labels): labels are -100 on the prompt (and on any failed tries with their
        feedback, `history`: the revision chat `gp_chat` builds), the answer ids then EOT. `prompt`
        is the one-turn prompt text, or a whole chat (a message list, `models.chat`) to answer.
        `prompt_loss`: every token is a label (language-model pretraining: the base stage's option)."""
        if isinstance(prompt, list):
            p = self.chat_ids(prompt)
        else:
            p = self.chat_ids(gp_chat(prompt, history, image=image)) if history else self.prompt_ids(prompt, image)
        a = self.encode_text(answer) + [self.eot_id]
        return p + a, (p if prompt_loss else [-100] * len(p)) + a

    def pixels(self, image) -> dict:
        """The image processor's tensors for one image (`pixel_values` [1, 1, tiles, 3, H, W],
        `aspect_ratio_ids` [1, 1], `aspect_ratio_mask` [1, 1, tiles]), cached while the image lives
        (a GP table is shown at every try of its episode, a street-view grid to a whole GRPO group;
        at most `PIXEL_CACHE` entries). The cache holds the image *weakly*: it once kept the last
        1,024 images alive, and 1,024 full-resolution V-IRL grids (~17 MB each) took a vision GRPO
        run to 23 GB and the OOM killer."""
        key = id(image)
        hit = self._pixels.get(key)
        if hit is not None and hit[0]() is image:
            self._pixels.move_to_end(key)
            return hit[1]
        from ..backends.local import to_pil

        out = self.image_processor(images=[[to_pil(image)]], return_tensors="pt")
        value = {k: out[k] for k in ("pixel_values", "aspect_ratio_ids", "aspect_ratio_mask")}
        cache = self._pixels

        def forget(ref, key=key) -> None:   # the image is gone: so is its entry (not a newer one's)
            entry = cache.get(key)
            if entry is not None and entry[0] is ref:
                del cache[key]

        self._pixels[key] = (weakref.ref(image, forget), value)
        while len(self._pixels) > PIXEL_CACHE:
            self._pixels.popitem(last=False)
        return value

    def image_position(self, ids: Sequence[int]) -> int:
        """Index of the (first) image token in a tokenised chat."""
        return list(ids).index(self.image_id)


def vision_inputs(pixels: Sequence[dict], image_starts: Sequence[int], width: int) -> dict:
    """Batched Mllama inputs for rows of `width` tokens, one image per row: the stacked pixel
    tensors and the cross-attention mask [B, width, 1, tiles], which lets every token from the
    row's image token (`image_starts`, in padded coordinates) on attend to the image's tiles and no
    token before it, as `MllamaProcessor` builds it for one image per chat."""
    import torch

    out = {k: torch.cat([p[k] for p in pixels]) for k in ("pixel_values", "aspect_ratio_ids", "aspect_ratio_mask")}
    tiles = out["aspect_ratio_mask"][:, 0]                                  # [B, T]
    rows = (torch.arange(width).unsqueeze(0) >= torch.tensor(list(image_starts)).unsqueeze(1)).long()  # [B, W]
    out["cross_attention_mask"] = (rows[:, :, None] * tiles[:, None, :]).unsqueeze(2)  # [B, W, 1, T]
    return out
