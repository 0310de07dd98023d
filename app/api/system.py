"""Health and the model list (where each model runs, as the caller may see it: `services.model_where`)."""
from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Query

from .. import __version__, services
from ..schemas import Health, ModelInfo
from .deps import caller, ctx

router = APIRouter(tags=["system"])


@router.get("/health", response_model=Health)
async def health(c=Depends(ctx), who=Depends(caller)) -> Health:
    return Health(ok=True, version=__version__, schema_version=c.store.version, models=c.pool.names,
                  models_error=services.public_text(c, who, c.pool.error) if c.pool.error else None, live_groups=sum(1 for g in c.live.groups.values() if not g.done))


@router.get("/models", response_model=list[ModelInfo])
async def models(check: bool = Query(False, description="contact each model for a health check"),
                 c=Depends(ctx), who=Depends(caller)) -> list[ModelInfo]:
    out = []
    specs = [c.pool.spec(n) for n in c.pool.names]
    checks = [None] * len(specs)
    if check:
        checks = await asyncio.gather(*(s.health(lambda task, n=s.name: c.pool.backend(n, task), 10)
                                        for s in specs))
    for spec, h in zip(specs, checks):
        out.append(ModelInfo(name=spec.name, label=spec.label, backend=spec.backend,
                             where=services.model_where(c, who, spec.name), tasks=list(spec.tasks),
                             decoding=spec.decoding.to_dict(), healthy=None if h is None else h.ok,
                             health_detail=None if h is None else services.public_text(c, who, h.detail)))
    return out
