"""Every trainer's configuration, in one place, with every hyper-parameter documented where it is
declared (`help` in the field's metadata; `sftvsrl train pipeline --explain` prints them), and the
one preset mechanism.

A config's values for a task are: the dataclass defaults, then the task's preset — declared with
the task, on its training entry (`models.train.tasks.TrainingTask.pipeline`), as (full run,
`--quick` run) changes — then any explicit changes. `StagedConfig.for_task` applies them; nothing
else holds per-task values.

- `PipelineConfig`: the staged pipeline of a text task (a tiny Llama from random weights);
- `VisionConfig`: the staged pipeline of a vision task (a tiny Mllama grafted onto a text model);
- `GRPOConfig`: one GRPO run (`models.train.grpo`): the staged configs nest one as `rl`, the RL
  stage's; `rl_config` gives the same for `sftvsrl train rl` (GRPO from any checkpoint).

`config_for(task)` picks the pipeline config class by the task's modality (the registry's
`vision`). Each field's metadata also says what reads it (`used_by`): the model (`model`), a stage
(`base`, `init`, `sft`, `rl`, `sft-diverse`), every stage (`all`), the evaluation (`eval`) or only
the run (`run`: threads, which seeds to run) — what decides whether a recorded config trained a
checkpoint the same way (`trained_alike`).

    from models.train.config import config_for
    cfg = config_for(task).for_task(task)          # a task's shipped configuration
    cfg.rl.updates                                  # GP-VL: 36
"""
from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from typing import Any, ClassVar, Sequence, cast

from .tasks import DEFAULT_TASK, DEFAULT_VISION_TASK, training_task

STAGES = ("base", "init", "sft", "rl", "sft-diverse")
# what a stage's weights depend on: its own fields and its ancestors' (every stage after Init starts from Init)
LINEAGE = {"base": ("base",), "init": ("base", "init"), "sft": ("base", "init", "sft"),
           "rl": ("base", "init", "rl"), "sft-diverse": ("base", "init", "sft-diverse"),
           "sft-matched": ("base", "init", "sft")}
SUPERVISED = ("base", "init", "sft", "sft-diverse")


def meta(help: str, *, used_by: Sequence[str] = ("all",)) -> dict[str, Any]:
    """A config field's metadata: what it means (`help`) and what reads it (`used_by`, see the module doc)."""
    return {"help": help, "used_by": tuple(used_by)}


def param(default: Any, help: str, *, used_by: Sequence[str] = ("all",)) -> Any:
    """A documented config field with an immutable default (`meta`)."""
    return field(default=default, metadata=meta(help, used_by=used_by))


def docs(cls) -> dict[str, str]:
    """{field: its help text} of a config class."""
    return {f.name: f.metadata.get("help", "") for f in fields(cls)}


class Config:
    """What every config class shares: `with_changes` (a nested config given as a dict of its
    changes), `from_dict` for recorded configs and `trained_alike`. The per-task preset is the
    staged configs' (`StagedConfig.for_task`)."""

    def with_changes(self, **changes):
        """A copy with `changes`; a nested config field (`rl`) may be given as a dict of its changes."""
        nested = {k: changes.pop(k) for k in list(changes) if isinstance(changes[k], dict)
                  and isinstance(getattr(self, k, None), Config)}
        out = replace(cast(Any, self), **changes)
        for k, v in nested.items():
            out = replace(out, **{k: getattr(out, k).with_changes(**v)})
        return out

    @classmethod
    def from_dict(cls, data: dict):
        """The config recorded in a `training.json` / `findings.json`: lists become tuples, nested
        configs are parsed, unknown keys are refused (`_legacy` maps older records' keys)."""
        data = cls._legacy(dict(data))
        kinds = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
        out: dict[str, Any] = {}
        for k, v in data.items():
            if k not in kinds:
                raise TypeError(f"{cls.__name__} has no field {k!r}")
            f = kinds[k]
            default = f.default if f.default_factory is MISSING else f.default_factory()
            if isinstance(default, Config) and isinstance(v, dict):
                v = type(default).from_dict(v)
            elif isinstance(v, list):
                v = tuple(v)
            out[k] = v
        return cls(**out)

    @classmethod
    def _legacy(cls, data: dict) -> dict:
        return data

    def trained_alike(self, other: "Config", stage: str) -> dict[str, tuple]:
        """The fields that decide `stage`'s weights (its own and its ancestors', `LINEAGE`, and the
        model's) on which `other` differs: {field: (self's, other's)}; empty when a checkpoint
        trained with `other` is the one this config trains. Evaluation and run settings are not
        compared."""
        keep = {"all", "model", *LINEAGE[stage]}
        out = {}
        for f in fields(self):  # type: ignore[arg-type]
            if keep & set(f.metadata.get("used_by", ("all",))):
                a, b = getattr(self, f.name), getattr(other, f.name)
                if a != b:
                    out[f.name] = (a, b)
        return out


# ---------------------------------------------------------------------------------------------
# GRPO


@dataclass(frozen=True)
class GRPOConfig(Config):
    """One GRPO run (`models.train.grpo`; its module doc explains the algorithm). A task's values
    are its staged config's `rl` (defaults, then the task's `pipeline` preset; `StagedConfig.grpo`)."""

    task: str = param(DEFAULT_TASK, "the registry task whose training stream is played")
    seed: int = param(0, "torch/data seed: the training stream is seed + the task's `rl_seed_offset`")
    updates: int = param(40, "at most this many updates (early stopping may end sooner)")
    hands_per_update: int = param(16, "instances per update: GP hands, V-IRL (route, seed) episodes")
    group_size: int = param(8, "episodes per instance (the GRPO group)")
    verify_iter: int = param(5, "the paper's try budget (GP 5 tries per hand, V-IRL 2 per position)")
    temperature: float = param(1.0, "rollout sampling temperature; log-probs use the same logits / temperature")
    top_p: float = param(1.0, "rollout nucleus sampling")
    max_new_tokens: int = param(64, "reply token limit in rollouts (replies are ~30 tokens; a longer one is cut "
                                    "and graded as is)")
    lr: float = param(5e-5, "Adam learning rate")
    betas: tuple[float, float] = param((0.9, 0.98), "Adam betas")
    epochs: int = param(2, "passes over one update's calls")
    minibatch_turns: int = param(32, "calls per gradient step")
    clip: float = param(0.2, "PPO ratio clip ε")
    max_grad_norm: float = param(1.0, "gradient-norm clipping")
    adv_eps: float = param(1e-4, "ε in the advantage (G − mean) / (std + ε)")
    gamma: float = param(1.0, "discount of later calls' rewards in a call's reward-to-go")
    credit: str = param("call", "'call': each call's own reward-to-go; 'episode': the episode's return for every call")
    uniform: str = param("success", "groups with no signal: 'success' (all won or all lost), 'return' (all equal "
                                    "returns), 'none'")
    kl_coef: float = param(0.05, "weight of the per-token KL(π ‖ Init) penalty in the loss (0: none)")
    unfinished_reward: float | None = param(-3.0, "learning reward of a reply that never ended (None: as graded)")
    val_hands: int = param(128, "held-aside training hands for early stopping (0: no early stop)")
    val_unseen: bool = param(False, "validation hands are problems RL never practises: rollouts skip every "
                                    "instance whose `recall_key` (GP: card multiset; V-IRL: route) a validation "
                                    "hand has, so the early stop measures generalisation, not recall")
    val_every: int = param(4, "updates between validation checks")
    val_min_delta: float = param(0.02, "a check must beat the best by this much to count as progress")
    patience: int = param(3, "checks without progress before stopping")
    threads: int = param(2, "torch CPU threads", used_by=("run",))


# ---------------------------------------------------------------------------------------------
# The staged pipeline


# Fields both staged-pipeline config classes declare: (default, help, used_by), declared once here
# and placed in each class with `shared(name)` (a class may change only the default), so each
# class keeps its own field order and no help text exists twice.
SHARED_PARAMS: dict[str, tuple[Any, str, Sequence[str]]] = {
    "init_lr": (2e-4, "Init: AdamW peak learning rate", ("init",)),
    "init_warmup_steps": (1, "Init: linear warm-up steps", ("init",)),
    "sft_batch": (32, "Init, SFT and SFT-diverse: examples per step", ("init", "sft", "sft-diverse")),
    "sft_lr": (5e-4, "SFT and SFT-diverse: AdamW peak learning rate", ("sft", "sft-diverse")),
    "min_lr_ratio": (0.1, "every supervised stage: the cosine decay's final learning rate / peak", SUPERVISED),
    "weight_decay": (0.01, "every supervised stage: AdamW weight decay (matrices only)", SUPERVISED),
    "grad_clip": (1.0, "every supervised stage: gradient-norm clipping", SUPERVISED),
    "threads": (1, "torch threads per process (1: robust next to other busy processes)", ("run",)),
    "eval_max_new_tokens": (96, "reply token limit when scoring (replies are ~30 GP-L / ~20 V-IRL-L tokens)",
                            ("eval",)),
}
_RL_META = meta("RL: GRPO from Init (`GRPOConfig`; task, seed and threads are the pipeline's)", used_by=("rl",))


def shared(name: str, default: Any = MISSING) -> Any:
    """The field `name` of `SHARED_PARAMS` (its default, or `default`) for a staged config class."""
    value, help, used_by = SHARED_PARAMS[name]
    return param(value if default is MISSING else default, help, used_by=used_by)


class StagedConfig(Config):
    """What the staged pipeline's two config classes share: the one preset mechanism (`for_task`:
    the task's `pipeline` preset), the task's splits and headline, and each stage's plan
    (`sft_plan`, `grpo`)."""

    seeded: ClassVar[bool] = False        # SFT and RL per training seed (`seeds`), under seed-<k>/
    record_key: ClassVar[str]             # the RL record's key for this config (`training.json`)
    __dataclass_fields__: ClassVar[dict[str, Any]]
    # the fields both config classes declare (documented there)
    task: str
    seed: int
    warmup_steps: int
    min_lr_ratio: float
    weight_decay: float
    grad_clip: float
    rl: GRPOConfig
    eval_n: int
    threads: int

    def __post_init__(self) -> None:
        if self.rl.task != self.task:   # the nested GRPO config names the pipeline's task
            object.__setattr__(self, "rl", replace(self.rl, task=self.task))

    @classmethod
    def quick(cls, seed: int = 0) -> "StagedConfig":
        """The seconds-long variant for tests and smoke checks (before the task's `--quick` preset)."""
        raise NotImplementedError

    @classmethod
    def for_task(cls, task: str = DEFAULT_TASK, *, quick: bool = False, seed: int = 0, **changes):
        """The configuration `task` uses (full, or `--quick`): the defaults, the task's preset (its
        training entry's `pipeline`: (full, quick) changes), then the non-None `changes`. A
        `ValueError` names the tasks this config serves otherwise."""
        full, fast = cls._entry(task).pipeline
        base = cls.quick(seed) if quick else cls(seed=seed)  # type: ignore[call-arg]
        cfg = base.with_changes(task=task, **(fast if quick else full))
        return cfg.with_changes(**{k: v for k, v in changes.items() if v is not None})

    @classmethod
    def _entry(cls, task: str):
        entry = training_task(task, "staged pipeline", vision=True)
        if config_for(task) is not cls:
            raise ValueError(f"{task} is configured by {config_for(task).__name__}, not {cls.__name__}")
        return entry

    @property
    def splits(self) -> tuple[str, ...]:
        """The protocol's splits of the task (e.g. GP-L: id, rule-ood, reworded)."""
        from game.protocol import splits

        return splits(self.task)

    @property
    def headline(self) -> str:
        """The task's headline metric (`success_rate` or `per_step_accuracy`)."""
        from game.tasks import get_task

        return get_task(self.task).headline

    def grpo(self, seed: int) -> GRPOConfig:
        """The GRPO config of training seed `seed` (task, seed and threads are the pipeline's)."""
        return replace(self.rl, task=self.task, seed=seed, threads=self.threads)

    def rl_snapshots(self) -> int:
        """RL updates between snapshots (0: none)."""
        return 0

    def sft_plan(self, stage: str) -> dict[str, Any]:
        """A supervised stage's plan: its corpus (`TrainingTask.stage_pairs`), data seed, steps,
        batch size, learning rate, warm-up and snapshot steps."""
        raise NotImplementedError


def snapshot_steps(total: int, n: int) -> list[int]:
    """`n` snapshot steps along `total` steps, geometric (dense early, where SFT changes fastest),
    plus step 0 and the last step."""
    if n <= 0 or total <= 0:
        return [0]
    marks = {0, total}
    for i in range(1, n + 1):
        marks.add(max(1, round(total ** (i / n))))
    return sorted(marks)


def _text_rl() -> GRPOConfig:
    return GRPOConfig(updates=40, hands_per_update=16, group_size=8, verify_iter=5, lr=1e-4, epochs=2,
                      max_new_tokens=64, kl_coef=0.05, threads=1)


@dataclass(frozen=True)
class PipelineConfig(StagedConfig):
    """Every knob of the staged pipeline of a text task (base → Init → SFT / RL / SFT-diverse, a
    tiny Llama from random weights; the task's preset changes some; `sftvsrl train pipeline
    --print-config` prints them all)."""

    seeded: ClassVar[bool] = True
    record_key: ClassVar[str] = "pipeline_config"

    task: str = param(DEFAULT_TASK, "the registry task")
    seed: int = param(0, "seed of base, Init, SFT-diverse and the data streams")
    seeds: tuple[int, ...] = param((0, 1, 2), "training seeds of SFT and RL (the first one ships)", used_by=("run",))
    # model (a Llama; `models.tiny.build_tiny_llama`)
    hidden: int = param(128, "model width", used_by=("model",))
    layers: int = param(4, "transformer layers", used_by=("model",))
    heads: int = param(4, "attention heads", used_by=("model",))
    kv_heads: int = param(2, "key/value heads (grouped-query attention)", used_by=("model",))
    intermediate: int = param(384, "MLP width", used_by=("model",))
    vocab_size: int = param(1024, "BPE vocabulary size (the tokenizer is trained on the base and ID corpora)",
                            used_by=("model",))
    tie_embeddings: bool = param(True, "one matrix for the input embeddings and the output layer. Tied, tokens the "
                                       "base only ever predicts at their marginal (e.g. V-IRL's compass words) "
                                       "collapse to one vector, and the model can no longer tell them apart as "
                                       "inputs (it cannot copy them)", used_by=("model",))
    # base: SFT from random weights on the task's base corpus (the stand-in for pretraining)
    base_steps: int = param(3000, "base: optimizer steps (also sizes the tokenizer corpus)", used_by=("model", "base"))
    base_batch: int = param(32, "base: examples per step", used_by=("base",))
    base_lr: float = param(2e-3, "base: AdamW peak learning rate", used_by=("base",))
    base_warmup_steps: int = param(20, "base: linear warm-up steps", used_by=("base",))
    base_face_prob: float = param(0.6, "share of base (and SFT-diverse) hands forced to hold a face card (GP)",
                                  used_by=("base", "sft-diverse"))
    base_revision: float = param(0.35, "share of base examples that revise failed tries (with the verifier's "
                                       "feedback)", used_by=("base",))
    base_prompt_loss: bool = param(False, "base: train on the prompt tokens too (language-model pretraining), not "
                                          "only the answers", used_by=("base",))
    base_snapshot: int | None = param(
        None, "the base the later stages start from (and the table's base row): its snapshot at this step, or "
              "None for the final one. An Init that already solves every ID hand leaves SFT and RL nothing to "
              "learn; the paper's Init has room on ID, so a task may start from an earlier base", used_by=("init",))
    # init: short SFT on the ID task from the base (the answer format RL starts from)
    init_steps: int = param(8, "Init: optimizer steps (batch `sft_batch`)", used_by=("init",))
    init_lr: float = shared("init_lr")
    init_warmup_steps: int = shared("init_warmup_steps")
    init_revision: float = param(0.3, "share of Init examples that revise failed tries (with feedback)",
                                 used_by=("init",))
    # sft and sft-diverse: continued SFT from init
    sft_steps: int = param(400, "SFT and SFT-diverse: optimizer steps", used_by=("sft", "sft-diverse"))
    sft_batch: int = shared("sft_batch")
    sft_lr: float = shared("sft_lr")
    sft_snapshots: int = param(16, "snapshots along SFT, geometric in steps (dense early: the matched lenses)",
                               used_by=("sft",))
    # shared SFT optimiser settings
    warmup_steps: int = param(20, "SFT and SFT-diverse: linear warm-up steps", used_by=("sft", "sft-diverse"))
    min_lr_ratio: float = shared("min_lr_ratio")
    weight_decay: float = shared("weight_decay")
    grad_clip: float = shared("grad_clip")
    # rl: GRPO from init
    rl: GRPOConfig = field(default_factory=_text_rl, metadata=_RL_META)
    rl_snapshot_every: int = param(4, "RL updates between snapshots (the compute curve)", used_by=("rl",))
    # evaluation
    eval_n: int = param(500, "episodes per split for the final checkpoints", used_by=("eval",))
    curve_n: int = param(234, "episodes per split for each snapshot (the matched lenses)", used_by=("eval",))
    kl_prompts: int = param(128, "ID prompts for KL(Init ‖ model)", used_by=("eval",))
    eval_max_new_tokens: int = shared("eval_max_new_tokens")
    threads: int = shared("threads")

    @classmethod
    def quick(cls, seed: int = 0) -> "PipelineConfig":
        """A seconds-long run for tests: a very small model, a handful of steps per stage, two seeds."""
        return cls(seed=seed, seeds=(seed, seed + 1), hidden=32, layers=1, heads=2, kv_heads=1, intermediate=64,
                   vocab_size=700, base_steps=4, base_batch=8, init_steps=2, sft_steps=6, sft_batch=8,
                   sft_snapshots=3, warmup_steps=1,
                   rl=GRPOConfig(updates=2, hands_per_update=2, group_size=2, verify_iter=2, max_new_tokens=24,
                                 epochs=1, val_hands=4, val_every=1, patience=5),
                   rl_snapshot_every=1, eval_n=6, curve_n=4, kl_prompts=4,
                   eval_max_new_tokens=24)   # an untrained model runs every reply to the limit

    def model_kwargs(self) -> dict[str, Any]:
        return dict(hidden=self.hidden, layers=self.layers, heads=self.heads, kv_heads=self.kv_heads,
                    intermediate=self.intermediate, vocab_size=self.vocab_size, max_positions=2048,
                    init_std=0.02, seed=self.seed, tie_embeddings=self.tie_embeddings)

    def rl_snapshots(self) -> int:
        return max(1, self.rl_snapshot_every)

    def base_snapshot_steps(self) -> list[int]:
        """The base stage's snapshots: its quarters, and `base_snapshot` if that is another step."""
        steps = {round(self.base_steps * i / 4) for i in range(1, 4)}
        if self.base_snapshot is not None:
            if not 0 < self.base_snapshot < self.base_steps:
                raise ValueError(f"base_snapshot must be a step between 1 and {self.base_steps - 1}")
            steps.add(self.base_snapshot)
        return sorted(steps)

    def sft_plan(self, stage: str) -> dict[str, Any]:
        sft = dict(steps=self.sft_steps, batch_size=self.sft_batch, lr=self.sft_lr, warmup_steps=self.warmup_steps)
        return {
            "base": dict(corpus="base", data_seed=self.seed + 100, steps=self.base_steps, batch_size=self.base_batch,
                         lr=self.base_lr, warmup_steps=self.base_warmup_steps, snapshots=self.base_snapshot_steps(),
                         prompt_loss=self.base_prompt_loss),
            "init": dict(corpus="init", data_seed=self.seed + 200, steps=self.init_steps, batch_size=self.sft_batch,
                         lr=self.init_lr, warmup_steps=self.init_warmup_steps, snapshots=[]),
            # every seed sees the same expert answers in its own order (`TextBatches` shuffles by seed)
            "sft": dict(corpus="id", data_seed=self.seed + 300, **sft,
                        snapshots=snapshot_steps(self.sft_steps, self.sft_snapshots)),
            "sft-diverse": dict(corpus="diverse", data_seed=self.seed + 400, **sft,
                                snapshots=snapshot_steps(self.sft_steps, 6)),
        }[stage]

    @classmethod
    def _legacy(cls, data: dict) -> dict:
        """Records of the first staged pipeline (flat `rl_*` fields, `snapshots` along SFT and RL)
        are refused: its GRPO and corpora are gone, so no config of this code trains what they
        describe (the shipped V-IRL-L findings' run, `gp-vl-text`'s base) — read them as JSON."""
        old = sorted(k for k in data if k in _FLAT_RL or k == "snapshots")
        if old:
            raise ValueError(f"a config recorded by an older pipeline (fields {', '.join(old)}): no current "
                             "config trains it")
        return data


def _vision_rl() -> GRPOConfig:
    return replace(_text_rl(), updates=36, hands_per_update=8, group_size=6, max_new_tokens=48)


# the shipped GP-VL records name its language model by the path it had then (commit 441b60e moved
# the same checkpoint to models/checkpoints/gp-vl-text). (`models/checkpoints/virl-l-sft` is not
# mapped: it named the first V-IRL-L pair's SFT in V-IRL-VL records that no longer ship, and names
# the pipeline's V-IRL-L SFT now.)
TEXT_FROM_MOVED = {"models/checkpoints/gp-l-base": "models/checkpoints/gp-vl-text"}
# older vision records' flat RL fields -> `GRPOConfig` fields
_FLAT_RL = {"rl_updates": "updates", "rl_hands": "hands_per_update", "rl_group": "group_size",
            "rl_verify_iter": "verify_iter", "rl_lr": "lr", "rl_epochs": "epochs", "rl_max_new_tokens": "max_new_tokens"}


@dataclass(frozen=True)
class VisionConfig(StagedConfig):
    """Every knob of the staged pipeline of a vision task (a tiny `MllamaForConditionalGeneration`
    grafted onto a text checkpoint; the defaults are GP-VL's shipped values, a task's preset changes
    some)."""

    record_key: ClassVar[str] = "vision_config"

    task: str = param(DEFAULT_VISION_TASK, "the registry task")
    seed: int = param(0, "torch seed and the data streams' seed")
    text_from: str = param("models/checkpoints/gp-vl-text", "the language model (a checkpoint directory, "
                                                            "relative to the repo root)", used_by=("model",))
    # vision tower and cross-attention (`models.tiny.build_tiny_mllama`)
    image_size: int = param(224, "the image processor's tile size (one tile)", used_by=("model",))
    patch_size: int = param(56, "vision patch size (56: a 4 x 4 grid, a card spans one patch column)",
                            used_by=("model",))
    vision_hidden: int = param(128, "vision encoder width", used_by=("model",))
    vision_layers: int = param(2, "vision encoder layers", used_by=("model",))
    vision_global_layers: int = param(1, "vision encoder global layers", used_by=("model",))
    cross_attention_layers: tuple[int, ...] = param((1, 3), "language-model layers given cross-attention",
                                                    used_by=("model",))
    # the vision encoder alone first, on card layouts (all suits) with a linear probe per slot (when the task pretrains)
    vision_pretrain_steps: int = param(500, "vision pretraining steps (tasks with `pretrains_vision`)",
                                       used_by=("model",))
    vision_pretrain_batch: int = param(32, "vision pretraining layouts per step", used_by=("model",))
    vision_pretrain_lr: float = param(3e-3, "vision pretraining AdamW learning rate", used_by=("model",))
    # base: image-text SFT of the grafted model (GP-VL: reading + stated mappings, all suits)
    base_steps: int = param(500, "base: optimizer steps", used_by=("base",))
    base_batch: int = param(16, "base: examples per step", used_by=("base",))
    base_lr: float = param(1e-3, "base: AdamW peak learning rate", used_by=("base",))
    base_read_share: float = param(0.4, "share of base examples that are card reading", used_by=("base",))
    # init: short SFT on ID from the base (or from the grafted model, for a task without a base)
    init_steps: int = param(16, "Init: optimizer steps (batch `sft_batch`)", used_by=("init",))
    init_lr: float = shared("init_lr")
    init_warmup_steps: int = shared("init_warmup_steps")
    # sft and sft-diverse: continued SFT from init
    sft_steps: int = param(200, "SFT and SFT-diverse: optimizer steps", used_by=("sft", "sft-diverse"))
    sft_batch: int = shared("sft_batch", 16)
    sft_lr: float = shared("sft_lr")
    warmup_steps: int = param(30, "base, SFT and SFT-diverse: linear warm-up steps",
                              used_by=("base", "sft", "sft-diverse"))
    min_lr_ratio: float = shared("min_lr_ratio")
    weight_decay: float = shared("weight_decay")
    grad_clip: float = shared("grad_clip")
    # rl: GRPO from init
    rl: GRPOConfig = field(default_factory=_vision_rl, metadata=_RL_META)
    # evaluation
    eval_n: int = param(100, "episodes per split", used_by=("eval",))
    eval_max_new_tokens: int = shared("eval_max_new_tokens")
    threads: int = shared("threads")

    @classmethod
    def quick(cls, seed: int = 0) -> "VisionConfig":
        """A seconds-long run for tests (the text model is the shipped gp-vl-text)."""
        return cls(seed=seed, image_size=64, patch_size=16, vision_hidden=32, vision_layers=1, vision_pretrain_steps=3,
                   vision_pretrain_batch=4, base_steps=3, base_batch=4, init_steps=2, sft_steps=3, sft_batch=4,
                   warmup_steps=1, eval_n=3, eval_max_new_tokens=24,   # an untrained model runs every reply to the limit
                   rl=replace(_vision_rl(), updates=1, hands_per_update=2, group_size=2, verify_iter=2,
                              max_new_tokens=24, epochs=1, val_hands=4, val_every=1, patience=5))

    def sft_plan(self, stage: str) -> dict[str, Any]:
        sft = dict(steps=self.sft_steps, batch_size=self.sft_batch, lr=self.sft_lr, warmup_steps=self.warmup_steps,
                   snapshots=[])
        return {
            "base": dict(corpus="base", data_seed=self.seed + 100, steps=self.base_steps, batch_size=self.base_batch,
                         lr=self.base_lr, warmup_steps=self.warmup_steps, snapshots=[]),
            "init": dict(corpus="init", data_seed=self.seed + 200, steps=self.init_steps, batch_size=self.sft_batch,
                         lr=self.init_lr, warmup_steps=self.init_warmup_steps, snapshots=[]),
            "sft": dict(corpus="id", data_seed=self.seed + 300, **sft),
            "sft-diverse": dict(corpus="diverse", data_seed=self.seed + 400, **sft),
        }[stage]

    @classmethod
    def _legacy(cls, data: dict) -> dict:
        """Vision records before `rl` was nested: flat `rl_*` fields onto the vision default's
        `GRPOConfig` (what the trainer built from them); the moved language-model path."""
        flat = {_FLAT_RL[k]: data.pop(k) for k in list(data) if k in _FLAT_RL}
        if flat:
            if "rl" in data:
                raise TypeError("a vision config with both `rl` and flat rl_* fields")
            data["rl"] = asdict(replace(_vision_rl(), **flat))
        if data.get("text_from") in TEXT_FROM_MOVED:
            data["text_from"] = TEXT_FROM_MOVED[data["text_from"]]
        return data


def config_for(task: str) -> type[StagedConfig]:
    """The staged pipeline's config class of `task`: `VisionConfig` for a vision task (the
    registry's `vision`), `PipelineConfig` for a text one."""
    return VisionConfig if training_task(task, "staged pipeline", vision=True).spec.vision else PipelineConfig


def pipeline_config(task: str, *, quick: bool = False, seed: int = 0, **changes) -> StagedConfig:
    """The resolved staged-pipeline configuration of `task` (what `--print-config` prints)."""
    return config_for(task).for_task(task, quick=quick, seed=seed, **changes)


def rl_config(task: str, *, quick: bool = False, seed: int = 0, threads: int | None = None,
              **changes) -> GRPOConfig:
    """The GRPO config of `task`'s staged pipeline (its RL stage's for training seed `seed`, with
    the pipeline's threads unless `threads`), then the non-None `changes`: what `sftvsrl train rl`
    runs from any checkpoint (and `--print-config` prints)."""
    cfg = pipeline_config(task, quick=quick, seed=seed, threads=threads).grpo(seed)
    return cfg.with_changes(**{k: v for k, v in changes.items() if v is not None})
