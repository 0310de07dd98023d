"""The training side of the task registry: what the tiny trainers need per task, in one table.

`game.tasks` owns what a task *is* (configs, splits, sessions, grading); this module owns what
training a tiny checkpoint on it needs, and training code branches on these properties, never on
a task name (only the entries here name tasks):

- the preset `pipeline`: (full run, `--quick` run) changes to the staged pipeline's config
  defaults (`PipelineConfig`, or `VisionConfig` for a vision task; applied by
  `models.train.config.StagedConfig.for_task`), its RL stage's GRPO settings (`rl`) included;
- the staged pipeline (`models.train.pipeline`): `stages` (the stages the task trains),
  `stage_pairs(corpus, n, seed, cfg)` (the `base`, `init`, `id` and `diverse` corpora: text pairs,
  or `vision.Example`s), `pipeline_tokenizer_text(cfg)` (a text task's tokenizer corpus) and
  `tokenizer_split` (its pre-tokenizer rule, `models.tiny.train_tokenizer(compact=…)`),
  `pretrains_vision`, and the model-card prose `label`, `stage_text` and `card_model`;
- `rollouts(cfg)`: the seeded stream of in-distribution training instances GRPO plays: the
  registry's `training_stream` (`game.tasks`, the one definition the trainer adapters use too),
  opened as registry sessions like every evaluation episode.

    from models.train.tasks import training_task
    t = training_task(name)                # ValueError naming the trainable tasks otherwise
    t.pipeline[0]["rl"]["verify_iter"]     # V-IRL-L: 2, the paper's tries per position

The text tasks (`TRAINING`: gp-l, virl-l) and the vision tasks (`VISION_TRAINING`: gp-vl,
virl-vl; `training_task(…, vision=True)`) all train through the staged pipeline.
"""
from __future__ import annotations

from itertools import islice
from typing import Any, Callable, ClassVar

from game.tasks import GPLanguage, GPVision, Instance, VirlLanguage, VirlVision, get_task

# Seed base of GP's GRPO training stream (evaluation streams: GP seed 42, V-IRL episode seeds < 10,000).
RL_SEED_OFFSET = 2000         # GRPO hands (GP-L, GP-VL): config seed + 2000


class TrainingTask:
    """One trainable task. Subclasses fill in the class attributes and the methods."""

    name: ClassVar[str]
    tokenizer_split: ClassVar["bool | str"] = True   # a text task's pre-tokenizer rule (`train_tokenizer(compact=…)`)
    label: ClassVar[str]            # short name in model cards, e.g. "GP-L"
    rl_seed_offset: ClassVar[int] = 0   # GRPO's training stream seed: config seed + this

    @property
    def spec(self):
        return get_task(self.name)

    def rollouts(self, cfg) -> Callable[[int], list[Instance]]:
        """A seeded `take(n)` of in-distribution training instances for GRPO config `cfg`: the next
        `n` of the registry's training stream (seed `cfg.seed + rl_seed_offset`)."""
        stream = self.spec.training_stream(cfg.seed + self.rl_seed_offset, verify_iter=cfg.verify_iter)
        return lambda n: list(islice(stream, n))

    # ---- the staged pipeline (`models.train.pipeline`) -------------------------------------
    # its config's changes for this task (`PipelineConfig` or `VisionConfig`), as (full, `--quick`)
    pipeline: ClassVar[tuple[dict[str, Any], dict[str, Any]]] = ({}, {})
    stages: ClassVar[tuple[str, ...]] = ("base", "init", "sft", "rl", "sft-diverse")   # the stages it trains
    pretrains_vision: ClassVar[bool] = False   # a vision task: pretrain the fresh encoder alone first
    stage_text: ClassVar[dict[str, tuple[str, str, str]]] = {}   # stage -> (role, saw, never saw)
    # the model card's first sentence after "A ~N M-parameter " (format fields: the config, task, label)
    card_model: ClassVar[str] = (
        "Llama (`models.tiny.build_tiny_llama`) trained on a CPU by the staged pipeline (`sftvsrl train pipeline "
        "--task {task}`, `models/train/pipeline.py`). It reads the paper's exact {label} prompt and answers in the "
        "paper's format.")

    @property
    def vision(self) -> bool:
        """Whether the task shows an image (the registry's): a vision checkpoint and config."""
        return bool(self.spec.vision)

    def stage_pairs(self, corpus: str, n: int, seed: int, cfg) -> list[tuple[str, str]]:
        """`n` (prompt, expert answer) pairs of a pipeline corpus: `base` (the stand-in for
        pretraining), `id` (the frozen ID prompt: Init and SFT) or `diverse` (SFT-diverse)."""
        raise ValueError(f"the staged pipeline does not support {self.name}")

    def pipeline_tokenizer_text(self, cfg) -> list[str]:
        raise ValueError(f"the staged pipeline does not support {self.name}")


class GPLTraining(TrainingTask):
    """GP-L: hands from seeded `Dealer`s under J/Q/K = 10, expert formulas from our solver."""

    name, label = GPLanguage.name, "GP-L"
    rl_seed_offset = RL_SEED_OFFSET
    # The staged pipeline's GP-L model: ~3 M parameters; a 4,096-token vocabulary holds ordinary
    # English words (the rule in many phrasings), the long base run teaches reading and arithmetic.
    pipeline = (dict(hidden=192, layers=6, heads=6, kv_heads=2, intermediate=512, vocab_size=4096,
                     base_steps=6000, base_batch=32, base_lr=1.5e-3, base_warmup_steps=100, base_snapshot=1500,
                     sft_snapshots=8, rl_snapshot_every=4, eval_n=300, curve_n=80, rl=dict(updates=16)),
                dict())

    stage_text = {
        "base": ("the stand-in for a pretrained model",
                 "SFT from random weights on {base_examples:,} GP-L examples (`models.train.gp_corpus`): hands of "
                 "four ranks whose rule line states a face-card mapping J/Q/K = (a, b, c) with values in 1..13 "
                 "(J/Q/K = 10 in a quarter of them, often in the paper's own sentence) in many phrasings "
                 "(`models.train.rules_text`: verbs, name and number forms, word orders, ordinary-English noise "
                 "from WordNet); {base_revision:.0%} of the examples revise 1–4 failed tries, each followed by the "
                 "verifier's exact feedback; expert answers in the paper's `ResponseEqn` format.",
                 "the rule-OOD mapping J/Q/K = 11/12/13; any phrasing of the held-out `reworded` split; any "
                 "evaluation hand (by card multiset)."),
        "init": ("the paper's Init",
                 "the base, then {init_examples:,} in-distribution expert answers (frozen ID prompt, J/Q/K = 10; "
                 "{init_revision:.0%} of them revisions after failed tries with the verifier's feedback), "
                 "{init_steps} steps at lr {init_lr:g}: the ID phrasing and answer format RL starts from.",
                 "the rule-OOD mapping; any `reworded` phrasing; any evaluation hand."),
        "sft": ("the paper's SFT",
                "Init, then {sft_examples:,} single-turn ID expert answers with the frozen ID prompt ({sft_steps} "
                "steps at lr {sft_lr:g}; training seeds {seeds}).",
                "the rule-OOD mapping; any other mapping or phrasing after the base; any evaluation hand."),
        "sft-matched": ("SFT at RL's in-distribution skill (the matched-ID lens)",
                        "the SFT run of the same training seed, stopped at step {matched_step}: the snapshot whose "
                        "in-distribution success is closest to RL's.",
                        "the rule-OOD mapping; any other mapping or phrasing after the base; any evaluation hand."),
        "rl": ("the paper's RL",
               "Init, then GRPO on ID hands only (`models.train.grpo`): up to {rl_updates} updates x {rl_hands} "
               "hands x {rl_group} episodes, multi-turn with up to {rl_verify_iter} tries and the verifier's "
               "feedback, sampled at T = 1, lr {rl_lr:g}, per-call credit (each call's reward-to-go), no signal "
               "from groups that all won or all lost, KL penalty {rl_kl:g} to Init, early stop at the ID plateau; "
               "reward = the paper's step rewards (training seeds {seeds}).",
               "the rule-OOD mapping; any other mapping or phrasing after the base; no expert answers after Init; "
               "any evaluation hand."),
        "sft-diverse": ("the rebuttal's diverse-prompt SFT (arXiv 2510.00237)",
                        "Init, then {sft_examples:,} single-turn expert answers: half ID (frozen prompt), half "
                        "stating other face-card mappings in varied phrasings, {sft_steps} steps at lr {sft_lr:g}.",
                        "the rule-OOD mapping; any `reworded` phrasing; any evaluation hand."),
    }

    def stage_pairs(self, corpus, n, seed, cfg):
        from .gp_corpus import base_examples, diverse_examples, id_examples

        if corpus == "init":
            return id_examples(n, seed, revision=cfg.init_revision)
        if corpus == "id":
            return id_examples(n, seed)
        if corpus == "base":
            return base_examples(n, seed, face_prob=cfg.base_face_prob, revision=cfg.base_revision)
        if corpus == "diverse":
            return diverse_examples(n, seed, face_prob=cfg.base_face_prob)
        raise ValueError(f"unknown pipeline corpus {corpus!r}")

    def pipeline_tokenizer_text(self, cfg):
        """The base and ID corpora's text (prompts, answers, feedback turns) and ordinary English
        (`rules_text.english`), so common words are whole tokens; never an OOD or `reworded` prompt."""
        from ..prompts import feedback_text
        from .data import gp_feedback_messages
        from .gp_corpus import base_examples, id_examples
        from .rules_text import english

        size = 3000 if cfg.base_steps > 50 else 80
        text: list[str] = []
        for ex in base_examples(size, cfg.seed + 17, revision=0.5) + id_examples(size // 4, cfg.seed + 18, revision=0.5):
            text += [ex.prompt, ex.answer] + [t for reply, info in ex.history for t in (reply, feedback_text(info))]
        eng = english()
        return text + list(eng[::max(1, len(eng) // (size * 3))]) + [feedback_text(m) for m in gp_feedback_messages()] * 20


class VirlLTraining(TrainingTask):
    """V-IRL-L: episodes on the bundled Helsinki routes with absolute actions, golden replies."""

    name, label = VirlLanguage.name, "V-IRL-L"

    @property
    def tokenizer_split(self):  # type: ignore[override]  # read on instances only; computed on first use
        from ..tiny import VIRL_SPLIT

        return VIRL_SPLIT

    # The pipeline's V-IRL-L model is the shipped V-IRL-L size (~1.0 M parameters, 2,048-token
    # vocabulary). Its base walks many synthetic towns whose names are all drawn afresh (copying
    # names out of the instruction is the skill), under both action spaces, a quarter of its pairs
    # revision examples with the verifier's feedback; the tokenizer is trained on that corpus only,
    # so a Helsinki name is split into pieces the base trained on (never a token it never saw). The
    # base learns the whole text (prompt and answer, `base_prompt_loss`): on the answers alone the
    # compass words' tied embeddings collapsed to one vector and no base copied them (docs/findings.md).
    # Later stages start from the base's step-1,200 snapshot: Init from the final base walks 98 % of
    # ID steps (no room for RL to learn), from step 1,200 85 %, from step 600 17 % (docs/findings.md).
    pipeline = (dict(hidden=128, layers=4, heads=4, kv_heads=2, intermediate=384, vocab_size=2048,
                     base_steps=2400, base_batch=24, base_lr=2e-3, base_prompt_loss=True, base_snapshot=1200,
                     init_steps=8, init_lr=2e-4,
                     sft_steps=400, sft_batch=24, sft_lr=5e-4,
                     eval_n=96, curve_n=16,   # ~580 scored steps a split (SE ~1.3 points); 3 seeds: ~20 min on 2 cores
                     rl=dict(updates=30, hands_per_update=8, group_size=6, verify_iter=2, lr=1e-4,
                             max_new_tokens=80)),
                dict(vocab_size=900, base_prompt_loss=True, rl=dict(verify_iter=2, max_new_tokens=40)))
    base_feedback_share: ClassVar[float] = 0.25     # revision examples in the base corpus
    stage_text = {
        "base": ("the stand-in for a pretrained model",
                 "SFT from random weights on {base_examples:,} V-IRL-L expert pairs walked in 96 synthetic "
                 "training towns (`game.virl.cities`: 48 are Helsinki's street graph rotated by 20-340 deg, half "
                 "of them mirrored; 48 are generated street grids; every place and street named afresh per town "
                 "by `game.virl.names`, never a Helsinki name; ~300 routes each, drawn with V-IRL's collection "
                 "rules), half the episodes under the absolute (compass) action space and half under the "
                 "relative (left/right) one, in the paper's exact prompt template with golden actions from the "
                 "rail. A quarter of the pairs are revision examples: a wrong reply graded by the real episode, "
                 "the verifier's `You failed this trial because ...` turn, then the golden reply. The loss is on "
                 "every token of each example (prompt and answer), as in pretraining.",
                 "any Helsinki route (the ID routes, the held-out streets) or Helsinki place name; hence never "
                 "the rule-OOD configuration (relative actions on the Helsinki routes)."),
        "init": ("the paper's Init",
                 "the base, then {init_examples:,} in-distribution expert pairs (Helsinki ID routes, absolute "
                 "actions), {init_steps} steps at lr {init_lr:g}: the ID routes and phrasing RL starts from.",
                 "relative actions on any Helsinki route (rule-OOD); the held-out streets; feedback turns "
                 "after the base."),
        "sft": ("the paper's SFT",
                "Init, then {sft_examples:,} more ID expert pairs (Helsinki ID routes, absolute actions; "
                "{sft_steps} steps at lr {sft_lr:g}).",
                "relative actions after the base; the held-out streets; feedback turns after the base."),
        "rl": ("the paper's RL",
               "Init, then GRPO on ID episodes only (Helsinki ID routes, absolute actions): {rl_updates} updates "
               "x {rl_hands} episodes x {rl_group} rollouts, multi-turn with up to {rl_verify_iter} tries per "
               "position and the verifier's feedback, sampled at T = 1, lr {rl_lr:g}; reward = the paper's "
               "step rewards.",
               "relative actions after the base; the held-out streets; no expert answers after Init."),
        "sft-matched": ("SFT at RL's in-distribution skill (the matched-ID lens)",
                        "the SFT run of the same training seed, stopped at step {matched_step}: the snapshot whose "
                        "in-distribution per-step accuracy is closest to RL's.",
                        "relative actions after the base; the held-out streets; the verifier's feedback."),
        "sft-diverse": ("a diverse-prompt SFT (after arXiv 2510.00237)",
                        "Init, then {sft_examples:,} expert pairs, half ID (Helsinki, absolute actions) and half "
                        "from the synthetic towns under both action spaces, {sft_steps} steps at lr {sft_lr:g}.",
                        "relative actions on any Helsinki route (rule-OOD); the held-out streets; feedback turns "
                        "after the base."),
    }

    def stage_pairs(self, corpus, n, seed, cfg):
        from .data import virl_city_pairs, virl_id_pairs

        if corpus in ("id", "init"):
            return virl_id_pairs(n, seed)
        if corpus == "base":
            return virl_city_pairs(n, seed, feedback_share=self.base_feedback_share)
        if corpus == "diverse":                    # interleaved: ID pairs and other-city pairs
            ids, cities = virl_id_pairs(n - n // 2, seed), virl_city_pairs(n // 2, seed + 1)
            return [p for pair in zip(ids, cities) for p in pair] + ids[len(cities):]
        raise ValueError(f"unknown pipeline corpus {corpus!r}")

    def pipeline_tokenizer_text(self, cfg):
        """The base corpus's own text (synthetic towns, both action spaces, revision chats), never a
        Helsinki prompt: an evaluation name is then split into pieces the base trained on."""
        from ..chat import flatten_text
        from ..tiny import SPECIAL_TOKENS
        from .data import virl_city_pairs, virl_feedback_texts

        full = cfg.base_steps > 50
        text: list[str] = []
        for prompt, answer in virl_city_pairs(6000 if full else 300, cfg.seed + 17,
                                              feedback_share=self.base_feedback_share):
            text += [flatten_text(m) for m in prompt] if isinstance(prompt, list) else [prompt]
            text.append(answer)
        return text + virl_feedback_texts() * 20 + [
            " ".join(SPECIAL_TOKENS) + " system user assistant Cutting Knowledge Date: December 2023 Today Date: "
            "26 Jul 2024"]


class VisionTraining(TrainingTask):
    """A vision task: its checkpoints come from the staged pipeline with a tiny Mllama grafted onto
    a text checkpoint (`VisionConfig`: `text_from`), trained on image-text examples
    (`models.train.vision`); GRPO plays the registry's training stream with the image."""


class GPVLTraining(VisionTraining):
    """GP-VL: the base reads cards of all four suits and GP-VL prompts stating other face-card
    mappings; Init and SFT get black-suit ID hands (the registry's `gp-vl` training stream)."""

    name, label = GPVision.name, "GP-VL"
    rl_seed_offset = RL_SEED_OFFSET
    pretrains_vision = True          # the encoder alone on card layouts first (`vision.pretrain_vision`)
    pipeline = ({}, {})              # `VisionConfig`'s defaults are GP-VL's shipped values
    card_model = (
        "`MllamaForConditionalGeneration` (the paper's Llama-3.2-Vision architecture in miniature; "
        "`models.tiny.build_tiny_mllama`) trained on a CPU by the vision pipeline (`sftvsrl train vision --task "
        "{task}`, `models/train/vision.py`). It sees the 1200 × 1200 table image through its own "
        "`MllamaImageProcessor` (one {image_size}-px tile) and the paper's exact GP-VL prompt; the card labels are "
        "never in its text input.")
    stage_text = {
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

    def stage_pairs(self, corpus, n, seed, cfg):
        from .vision import base_examples, diverse_examples, id_examples

        if corpus in ("id", "init"):
            return id_examples(n, seed, self.name)
        if corpus == "base":
            return base_examples(n, seed, cfg.base_read_share)
        if corpus == "diverse":
            return diverse_examples(n, seed, self.name)
        raise ValueError(f"unknown pipeline corpus {corpus!r}")


class VirlVLTraining(VisionTraining):
    """V-IRL-VL: the shipped V-IRL-L Init (the pipeline's base, then a short ID SFT; it knows both
    action spaces) is the language model, no visual pretraining and no base or SFT-diverse stage; Init and SFT
    on expert single-turn pairs of registry training episodes, RL on the ID task (absolute actions).
    Its street-view grids cost seconds each to draw, so its stages are short and RL plays few,
    small groups (2 tries per position, as the paper)."""

    name, label = VirlVision.name, "V-IRL-VL"
    stages = ("init", "sft", "rl")
    pipeline = (dict(text_from="models/checkpoints/virl-l-init", patch_size=16, vision_hidden=64, init_steps=30,
                     init_lr=5e-4, init_warmup_steps=5, sft_batch=8, sft_steps=120, warmup_steps=10, eval_n=48,
                     rl=dict(verify_iter=2, updates=30, hands_per_update=4, group_size=4, max_new_tokens=64)),
                dict(text_from="models/checkpoints/virl-l-init", init_steps=2, sft_steps=2, eval_n=2,
                     rl=dict(verify_iter=2)))
    card_model = (
        "`MllamaForConditionalGeneration` (`models.tiny.build_tiny_mllama`) trained on a CPU by the vision pipeline "
        "(`sftvsrl train vision --task {task}`, `models/train/vision.py`). It sees the 2x2 street-view grid through "
        "its own `MllamaImageProcessor` (one {image_size}-px tile) and the paper's exact V-IRL-VL prompt, whose "
        "history has no landmark text.")
    stage_text = {
        "init": ("Init",
                 "the shipped V-IRL-L Init (`{text_from}`: the V-IRL-L base, then a short ID SFT) as its language model, cross-attention layers at "
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

    def stage_pairs(self, corpus, n, seed, cfg):
        from .vision import virl_examples

        if corpus in ("id", "init"):
            return virl_examples(n, seed, self.name)
        raise ValueError(f"unknown pipeline corpus {corpus!r}")


TRAINING: dict[str, TrainingTask] = {t.name: t for t in (GPLTraining(), VirlLTraining())}
VISION_TRAINING: dict[str, TrainingTask] = {t.name: t for t in (GPVLTraining(), VirlVLTraining())}
DEFAULT_TASK = next(iter(TRAINING))                  # the default text task (the CLI's too)
DEFAULT_VISION_TASK = next(iter(VISION_TRAINING))    # and vision task


def training_task(task: str, what: str = "tiny trainer", *, vision: bool = False) -> TrainingTask:
    """The training entry of a text task (or, with `vision`, of a vision task too: GRPO's rollouts
    for `models.train.vision`); a `ValueError` naming the trainable tasks otherwise."""
    table = {**TRAINING, **VISION_TRAINING} if vision else TRAINING
    try:
        return table[task]
    except (KeyError, TypeError):
        raise ValueError(f"the {what} supports tasks {', '.join(table)}, not {task!r}") from None
