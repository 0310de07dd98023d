"""Pydantic models for every REST request and response body (the OpenAPI contract at `/docs`).

Field limits here are the API's input validation: lengths, ranges and enumerations, so bad input
is a 422 with the field named, before any handler runs.
"""
from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from game.tasks import TASKS, StepRecord, get_task

from .evaluation import MAX_CONCURRENCY, MAX_EPISODES_PER_SPLIT


def _registered(name: str) -> str:
    get_task(name)   # an unknown task is a ValueError naming the known ones (a 422 on the `task` field)
    return name


# A task of the registry as it is when the request comes (not a list copied at import, so a task
# registered later is accepted); the OpenAPI schema lists the registered names as its enum.
Task = Annotated[str, AfterValidator(_registered),
                 Field(max_length=64, json_schema_extra=lambda schema: schema.update(enum=list(TASKS)))]
Name = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")


class Message(BaseModel):
    detail: str


class Health(BaseModel):
    ok: bool
    version: str
    schema_version: int
    models: list[str]
    models_error: str | None = None
    live_groups: int


class ModelInfo(BaseModel):
    name: str
    label: str | None
    backend: str
    where: str
    tasks: list[str]
    decoding: dict[str, Any]
    healthy: bool | None = None
    health_detail: str | None = None


class DealInfo(BaseModel):
    deal_id: str
    cards: list[str]
    card_ids: list[str]
    numbers: list[int]
    target: int
    rule: str
    solvable: bool
    n_solutions: int


class VerifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    deal_id: str = Field(min_length=8, max_length=24, examples=["HKC5D2C4"])
    rule: str = Field("face10", max_length=16)
    formula: str | None = Field(None, max_length=512, description="a bare formula, e.g. (10-4)*(5-1)")
    reply: str | None = Field(None, max_length=16384, description="a raw model reply (JSON text)")
    vision: bool = Field(False, description="grade as GP-VL (card recognition checked first)")
    lenient: bool = False


class VerifyResponse(BaseModel):
    deal_id: str
    rule: str
    numbers: list[int]
    reward: float
    feedback: str
    outcome: str
    terminated: bool
    formula: Any = None
    cards: list = []
    exact_value: str | None = None
    exact_correct: bool = False
    float_rejected: bool = False
    verdict: dict[str, Any]


class SolveResponse(BaseModel):
    deal_id: str
    rule: str
    numbers: list[int]
    target: int
    solutions: list[str]
    reference_count: int


class RouteSummary(BaseModel):
    index: int
    route_id: str
    dest_name: str
    n_turns: int


class RouteList(BaseModel):
    source: str
    total: int
    routes: list[RouteSummary]


class RouteDetail(BaseModel):
    source: str
    route_id: str
    route_index: int
    instruction: str
    action_space: str
    rail_length: int
    verify_iter: int
    prompt: str


class Participant(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str | None = Field(None, max_length=64, description="a configured model name")
    human: bool = Field(False, description="a person playing through POST /api/episodes/{id}/submit")
    name: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$",
                             description="display name of a human player (default: human)")


class DecodingOverride(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_tokens: int | None = Field(None, ge=1, le=4096)
    temperature: float | None = Field(None, ge=0, le=5)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = Field(None, ge=0, le=2**31 - 1)


class EpisodeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    task: Task
    instance: dict[str, Any] = Field(
        description="GP: deal_id, rule, verify_iter, eg; V-IRL: source, route, seed, heading, absolute_action",
        examples=[{"deal_id": "HKC5D2C4", "rule": "face10"}])
    participants: list[Participant] = Field(min_length=1, max_length=8)
    decoding: DecodingOverride | None = None


class EpisodeRef(BaseModel):
    episode_id: str
    participant: str
    kind: str


class GroupStarted(BaseModel):
    group_id: str
    task: str
    instance_key: str
    episodes: list[EpisodeRef]
    events_url: str
    token: str = Field(description="the game's capability: X-Game-Token header (or ?token= for SSE) "
                                   "to play, cancel or read it")


class SubmitRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1, max_length=4096, description="a formula / JSON reply (GP) or a reply (V-IRL)")


Step = StepRecord   # one stored step: the registry's step record, declared once (`game.tasks.StepRecord`)


class Episode(BaseModel):
    id: str
    group_id: str
    task: str
    instance_key: str
    instance: dict[str, Any]
    participant: str
    participant_kind: str
    settings: dict[str, Any]
    status: str
    success: bool | None
    exact_success: bool | None
    n_steps: int
    episode_return: float
    outcome: str | None
    error: str | None
    created_at: float
    finished_at: float | None
    eval_run_id: str | None = None
    eval_split: str | None = None
    eval_index: int | None = None
    steps: list[Step] | None = None


class EpisodeList(BaseModel):
    episodes: list[Episode]
    limit: int
    offset: int


class EvalRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    task: Task
    models: list[str] = Field(min_length=1, max_length=8)
    episodes: int | None = Field(None, ge=1, le=MAX_EPISODES_PER_SPLIT,
                                 description="per split (default: the paper's count)")
    splits: list[str] | None = Field(None, max_length=4)
    concurrency: int = Field(4, ge=1, le=MAX_CONCURRENCY)
    max_tokens: int | None = Field(None, ge=1, le=4096)
    resume: bool = False


class EvalRun(BaseModel):
    id: str
    task: str
    config: dict[str, Any]
    status: str
    total: int
    done: int
    summary: dict[str, Any] | None = None
    error: str | None = None
    created_at: float
    updated_at: float
