"""What every task of the registry shares: the JSON `Instance`, its typed and validated config,
the graded `StepResult` (with the task's `state` after the call), the evaluation `Split`, and the
`Task` base class the four tasks fill in.

An `Instance` is plain JSON (task + flat parameters) so it can be stored, sent over the API and
replayed; `instance.config` is the task's typed config dataclass built from those parameters.
Unknown parameters, wrong types and out-of-range numbers raise `InstanceError` (a `ValueError`)
when the instance is made; what needs data to check (does the deal id parse, does the route
exist, does the source open) raises it when the session is opened.
"""
from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from enum import Enum
from itertools import islice
from typing import Any, ClassVar, Iterator


class InstanceError(ValueError):
    """A bad instance description (the message is shown to the user as is)."""


# ------------------------------------------------------------------------------- typed configs
def param(default: Any, kind: str, doc: str, lo: int | None = None, hi: int | None = None):
    """A config field: `kind` is `bool`, `int`, `float`, `str`, `int?` (int or None) or `route`
    (index, id or None); `lo`/`hi` bound numbers (inclusive). `default=...` makes the parameter
    required."""
    meta = {"kind": kind, "doc": doc, "lo": lo, "hi": hi}
    return field(metadata=meta) if default is ... else field(default=default, metadata=meta)


def _coerce(task: str, name: str, kind: str, value: Any, lo, hi) -> Any:
    def bad(what: str) -> InstanceError:
        return InstanceError(f"{task}: parameter {name!r} must be {what}, got {value!r}")

    if value is None and kind in ("int?", "route"):
        return None
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise bad("true or false")
    if kind == "str":
        if not isinstance(value, str) or len(value) > 1024:
            raise bad("a string (at most 1024 characters)")
        return value
    if kind == "route" and isinstance(value, str) and not value.strip().lstrip("-").isdigit():
        if not value or len(value) > 256:
            raise bad("a route index or id")
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            raise bad("a number")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise bad(f"between {lo} and {hi}")
        return float(value)
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise bad("a whole number")
    try:
        number = int(value)
    except ValueError:
        raise bad("a whole number") from None
    if (lo is not None and number < lo) or (hi is not None and number > hi):
        raise bad(f"between {lo} and {hi}" if hi is not None else f"at least {lo}")
    return number


def parse_config(cls, task: str, params: Any):
    """The typed config `cls` from a flat parameter dict; raises `InstanceError` on unknown names,
    wrong types and out-of-range values."""
    if not isinstance(params, dict):
        raise InstanceError(f"{task}: parameters must be an object, got {type(params).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise InstanceError(f"{task}: unknown parameter(s) {', '.join(map(repr, unknown))}; "
                            f"use {', '.join(known)}")
    values = {}
    for name, value in params.items():
        meta = known[name].metadata
        values[name] = _coerce(task, name, meta["kind"], value, meta["lo"], meta["hi"])
    missing = [f.name for f in fields(cls) if f.name not in values and f.default is MISSING]
    if missing:
        raise InstanceError(f"{task}: missing parameter(s) {', '.join(missing)}")
    return cls(**values)


# --------------------------------------------------------------------------------- instances
@dataclass(frozen=True)
class Instance:
    """One seeded task instance: `task` plus its flat JSON parameters (see each task's config)."""

    task: str
    params: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", dict(self.params or {}))
        _ = self.config  # validate now: unknown names, types and ranges fail at construction

    @property
    def spec(self) -> "Task":
        return get_task(self.task)

    @property
    def config(self):
        return self.spec.config(self.params)

    @property
    def vision(self) -> bool:
        return self.spec.vision

    @property
    def key(self) -> str:
        """A short printable description used for filtering and pairing."""
        return self.spec.key(self.config)

    def to_dict(self) -> dict:
        return {"task": self.task, "params": dict(self.params)}

    @classmethod
    def from_dict(cls, data: dict) -> "Instance":
        if not isinstance(data, dict) or "task" not in data:
            raise InstanceError("an instance needs a task and params")
        return cls(str(data["task"]), dict(data.get("params") or {}))


@dataclass
class StepResult:
    """One graded call as the task reports it (what `session.step(text)` returns).

    `state` is where the task's world stands after the call, as plain JSON the task defines, so a
    reader (the UI's map, a replay) never has to re-grade the reply to learn it. V-IRL fills it
    (`game.tasks.virl.VirlSession.place`: the walker's rail index, position, heading and the walk so
    far); GP leaves it empty. Steps stored before it existed read back as `{}`."""

    call: int
    reward: float
    feedback: str
    outcome: str
    graded: bool
    terminated: bool
    truncated: bool
    parsed: dict
    exact_correct: bool | None = None
    float_rejected: bool | None = None
    state: dict = field(default_factory=dict)


@dataclass
class StepRecord(StepResult):
    """The step record, declared once: the graded call plus the reply text graded (`output`), the
    backend's `timing` and the exact chat sent (`prompt`). The runner's `step` event
    (`app.runner.StepDone`, without the prompt), the API's `Step` schema (`app.schemas`) and the
    store's `steps` columns (`app.store`) all use these names; a test keeps them in step."""

    output: str = ""
    timing: dict = field(default_factory=dict)
    prompt: list | None = None

    @classmethod
    def of(cls, result: StepResult, output: str, *, timing: dict | None = None,
           prompt: list | None = None) -> "StepRecord":
        """The record of `result`, the call that graded `output`."""
        return cls(**{f.name: getattr(result, f.name) for f in fields(StepResult)}, output=output,
                   timing=timing if timing is not None else {}, prompt=prompt)

    def to_dict(self) -> dict:
        """The record as the store and the `step` event take it: `dataclasses.asdict`, sharing no
        mutable part with the session or the chat, without `asdict`'s generic deep copy (measured:
        half of a findings import's time went to it). `tests/test_tasks_protocol.py` checks the
        equality with `asdict` on every task."""
        return {f.name: plain_copy(getattr(self, f.name)) for f in fields(self)}


def plain_copy(value):
    """A copy of JSON-like data (dicts, lists, tuples, scalars; a dataclass becomes its `asdict`)."""
    if isinstance(value, dict):
        return {k: plain_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain_copy(v) for v in value]
    if isinstance(value, tuple):
        return tuple(plain_copy(v) for v in value)
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    return value


@dataclass(frozen=True)
class Split:
    """One evaluation split of a task: which instances its episodes play.

    `params` are shared by every instance of the split (GP: the rule; V-IRL: the action space);
    `stream` names the seeded instance stream (GP: a `game.gp.deal.EVAL_CONFIGS` key; V-IRL: the
    route source key, `id` or `ood`). `default_n` is the paper's episode count; None means one
    episode per route of the source. `phrasings`: the rule stated in these words, one per instance
    in turn (GP's `reworded` control, `game.gp.phrasings`)."""

    name: str
    description: str
    stream: str
    default_n: int | None
    params: dict = field(default_factory=dict)
    phrasings: tuple[str, ...] = ()


# ---------------------------------------------------------------------------------- sessions
@dataclass(frozen=True)
class FindingsWords:
    """What the Findings view and its generated sentences say about a task's training pipeline (the
    numbers, bars, table, curves and links are computed the same way for every task): declared
    with the task (`Task.findings`), the one place these words live."""

    short: str                       # the selector's label
    split_labels: dict[str, str]     # split → heading
    ood: str                         # the rule-OOD split, in words ("the flipped rule")
    instances: str                   # what a paired comparison pairs ("hands")
    stage_notes: dict[str, str]      # stage → what it is (the table's row titles)
    intro: str                       # the speaker's first sentence(s)
    base_line: str                   # the base's result: {id} {ood}
    split_line: str                  # "In distribution / on the flipped rule: " (+ per-stage values)
    diverse_line: str                # the rebuttal's sentence: {diff} {se}
    produce: str = "pipeline"        # which trainer writes its findings: `sftvsrl train <produce>`
    more_ood: dict[str, str] = field(default_factory=dict)  # other OOD splits the verdict covers → words
    control: str | None = None       # the wording-control split (GP-L `reworded`: the ID rule in held-out words)


# Stage notes shared by every pipeline task (a task's `FindingsWords.stage_notes` may override them).
COMMON_STAGE_NOTES = {
    "init": "a short SFT on the ID task from the base (the paper's Init)",
    "rl": "GRPO on the ID task from Init, multi-turn with the verifier's feedback",
    "sft-matched": "the SFT snapshot whose in-distribution skill is closest to RL's (the matched-ID lens)",
}


class EpisodeSession:
    """What the GP and V-IRL sessions share: an engine `episode` (with `done`, `success` and the
    `remaining` budget), the task, the instance, its config and the graded `results` so far.
    Subclasses add `prompt()`, `image()`, `step(text)`, `exact_success` and `describe()`."""

    def __init__(self, task: "Task", instance: Instance, episode) -> None:
        self.task, self.instance, self.config, self.episode = task, instance, instance.config, episode
        self.results: list[StepResult] = []

    @property
    def vision(self) -> bool:
        return self.task.vision

    @property
    def done(self) -> bool:
        return self.episode.done

    @property
    def success(self) -> bool:
        return self.episode.success

    @property
    def outcome(self) -> str | None:
        """The last call's outcome (None before the first call)."""
        return self.results[-1].outcome if self.results else None

    @property
    def graded_next(self) -> bool:
        """False when the budget is spent: the next call's text is ignored (GP `step_limit`,
        V-IRL `budget_exceeded`)."""
        return self.episode.remaining > 0

    @property
    def positions(self) -> int:
        """How many positions the episode visits, each with its own budget (GP 1; V-IRL the rail)."""
        raise NotImplementedError

    @property
    def max_graded(self) -> int:
        """The most graded calls (model replies) an episode can take: the budget at every position."""
        return self.positions * self.episode.verify_iter

    def verdict(self, text: str):
        """The verdict the engine would give `text` now (`.reward`, `.verify_info`), without
        stepping or spending a try (single-turn scoring)."""
        return self.episode.verdict(text)

    def _record(self, result: StepResult) -> StepResult:
        self.results.append(result)
        return result


# ------------------------------------------------------------------------------------- tasks
class Task:
    """A task of the registry. Subclasses set the class attributes and implement the methods."""

    name: ClassVar[str]
    family: ClassVar[str]              # "gp" or "virl": the engine behind the task
    vision: ClassVar[bool]
    label: ClassVar[str]
    config_type: ClassVar[type[Any]]
    outcome_type: ClassVar[type[Enum]]
    splits: ClassVar[tuple[Split, ...]]
    default_seed: ClassVar[int]        # seed of the evaluation instance streams
    training_seed: ClassVar[int] = 1_000_000   # default seed of the training stream (`training_stream`)
    headline: ClassVar[str]            # the paper's headline metric: success_rate / per_step_accuracy
    recognition: ClassVar[bool] = False   # reports recognition accuracy (GP-VL)
    exact_arithmetic: ClassVar[bool] = False  # has an exact-arithmetic second opinion (GP: exact success)
    words: ClassVar[tuple[str, str]]   # an episode's outcome for people: (success, failure)
    call_words: ClassVar[tuple[str, str]]   # one model call for people: (singular, plural), "try" / "move"
    reference_classes: ClassVar[dict[float, str]]   # the reference logger's class of a step reward
    findings: ClassVar["FindingsWords | None"] = None   # the Findings view's words (tasks with a pipeline)
    # The paper's reported numbers (spec generalpoints.md §6; paper §5.1-5.2): one entry per split it
    # reports, {"metric", "split", "source", "values": {stage: rate}}; `paper_words` tells what has no bar.
    paper: ClassVar[tuple[dict[str, Any], ...]] = ()
    paper_words: ClassVar[str] = ""

    def config(self, params: dict):
        return parse_config(self.config_type, self.name, params)

    @property
    def outcomes(self) -> tuple[str, ...]:
        return tuple(o.value for o in self.outcome_type)

    def split(self, name: str) -> Split:
        for s in self.splits:
            if s.name == name:
                return s
        raise InstanceError(f"unknown split {name!r} for {self.name}; use {', '.join(self.split_names)}")

    @property
    def split_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.splits)

    def split_of(self, choice: dict) -> str:
        """The evaluation split whose instances are played like `choice` (instance parameters, plus
        what a page chooses beside them, e.g. GP's `suits`): the splits whose shared parameters
        match (GP: the rule; V-IRL: the action space), the one whose stream matches too first
        (`stream_matches`), in the registry's order; the first split when none matches."""
        matching = [s for s in self.splits if all(choice.get(k, v) == v for k, v in s.params.items())]
        exact = [s for s in matching if self.stream_matches(s, choice)]
        return (exact or matching or list(self.splits))[0].name

    def stream_matches(self, split: Split, choice: dict) -> bool:
        """Whether `split`'s instance stream deals instances like `choice` (see `split_of`)."""
        return True

    def reference_class(self, reward: float) -> str:
        """The reference logger's class of one step reward (sums not in the table: AGGREGATED_ERROR)."""
        return self.reference_classes.get(float(reward), "AGGREGATED_ERROR")

    def recall_key(self, instance: Instance) -> str:
        """What a model could learn by heart about `instance`, as a key: instances with one key are
        one problem to memorise (GP: the card multiset, whatever the order, suits or rule; V-IRL:
        the route). GRPO's held-aside validation (`val_unseen`) keeps such problems out of its
        rollouts. By default the instance's own key."""
        return instance.key

    # implemented per task ------------------------------------------------------------------
    def key(self, config) -> str:
        raise NotImplementedError

    def session(self, instance: Instance):
        """A fresh session (prompt / image / step / done / success / outcome) for `instance`."""
        raise NotImplementedError

    def instances(self, split: str, n: int | None = None, seed: int | None = None,
                  sources: dict[str, str] | None = None, **overrides) -> list[Instance]:
        """The first `n` instances of a split's seeded stream (deterministic: a shard is a slice)."""
        raise NotImplementedError

    def training_stream(self, seed: int, **overrides) -> Iterator[Instance]:
        """The endless seeded stream of in-distribution training instances (the `id` split's
        settings, other draws than the evaluation streams); `overrides` are instance parameters."""
        raise NotImplementedError

    def training_instances(self, n: int, seed: int | None = None, offset: int = 0, **overrides) -> list[Instance]:
        """Instances `offset .. offset + n - 1` of the training stream (`training_seed` by default)."""
        if n < 0 or offset < 0:
            raise InstanceError("n and offset must be non-negative")
        stream = self.training_stream(self.training_seed if seed is None else seed, **overrides)
        return list(islice(stream, offset, offset + n))

    def person_reply(self, session, text: str) -> str:
        """A person's move (a bare formula / action, or a full JSON reply) as the reply graded."""
        raise NotImplementedError

    def step_fields(self, parsed: dict) -> list[tuple[str, Any]]:
        """The parsed fields of a step worth showing a person, as (label, value) pairs."""
        raise NotImplementedError


def jsonable(value):
    if value is None or isinstance(value, (str, int, float, bool, list, dict)):
        return value
    return str(value)


# --------------------------------------------------------------------------------- the registry
# The one registry dict: `game.tasks` fills it with the four tasks and re-exports it (it lives here
# so that `Instance.spec` can look a task up without importing the package that imports this).
TASKS: dict[str, Task] = {}


def get_task(name: str) -> Task:
    """The task called `name`; `InstanceError` (a `ValueError`) names the known ones otherwise."""
    try:
        return TASKS[name]
    except (KeyError, TypeError):
        raise InstanceError(f"unknown task {name!r}; use one of {', '.join(TASKS)}") from None
