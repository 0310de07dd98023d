"""Exports and replays of stored episodes: JSONL (one line per step, the reference evaluator's
fields `sample_id`, `veri_step`, `output`, `reward`, `info`, plus ours), Markdown transcripts,
self-contained bundles (zip: episodes JSON, per-step JSONL, Markdown, instance images and a
standalone `replay.html` that steps through the episodes in any browser, offline), and event
replays that re-emit a stored episode as the runner's typed events (`app.runner`) — no model needed.
"""
from __future__ import annotations

import asyncio
import base64
import html
import io
import json
import zipfile
from dataclasses import fields
from typing import AsyncIterator, Iterable

from game.tasks import TASKS, Instance, InstanceError, open_session

from .runner import EpisodeEvent, Finished, PromptSent, Started, StepDone
from .store import Store


def step_line(episode: dict, step: dict, sample_id: int | None = None) -> dict:
    """One reference-style JSONL record for a stored step."""
    info = {"Verify Info": step["feedback"], "outcome": step["outcome"], "graded": step["graded"],
            "terminated": step["terminated"], "truncated": step["truncated"], "parsed": step["parsed"]}
    if step.get("exact_correct") is not None:
        info["exact_correct"] = step["exact_correct"]
        info["float_rejected"] = step["float_rejected"]
    return {"sample_id": episode.get("eval_index") if sample_id is None else sample_id,
            "veri_step": step["call"] - 1, "output": step["output"], "reward": step["reward"], "info": info,
            "episode_id": episode["id"], "participant": episode["participant"], "task": episode["task"],
            "instance": episode["instance_key"], "split": episode.get("eval_split")}


def episode_jsonl(episodes: Iterable[dict]) -> Iterable[str]:
    for i, ep in enumerate(episodes):
        for step in ep.get("steps") or []:
            yield json.dumps(step_line(ep, step, ep.get("eval_index", i) if ep.get("eval_index") is not None else i),
                             ensure_ascii=False) + "\n"


def _fence(text: str) -> str:
    fence = "```"
    while fence in text:
        fence += "`"
    return f"{fence}\n{text}\n{fence}"


def episode_markdown(ep: dict) -> str:
    lines = [f"# Episode `{ep['id']}`", "",
             f"- task: **{ep['task']}**, instance: `{ep['instance_key']}`",
             f"- participant: **{ep['participant']}** ({ep['participant_kind']})",
             f"- status: {ep['status']}, success: {ep['success']}, steps: {ep['n_steps']}, "
             f"return: {ep['episode_return']:g}"]
    if ep.get("exact_success") is not None:
        lines.append(f"- exact-arithmetic success: {ep['exact_success']}")
    if ep.get("error"):
        lines.append(f"- error: {ep['error']}")
    steps = ep.get("steps") or []
    if steps and steps[0].get("prompt"):
        first = steps[0]["prompt"][0]
        text = "".join(p.get("text", "") for p in first.get("content", []) if isinstance(p, dict))
        lines += ["", "## Prompt", "", _fence(text)]
    for s in steps:
        lines += ["", f"## Call {s['call']} — {s['outcome']} ({s['reward']:+g})", "", _fence(s["output"]), "",
                  f"Verifier: {s['feedback']}"]
        if s.get("exact_correct") is not None:
            lines.append(f"Exact arithmetic: correct={s['exact_correct']}, float_rejected={s['float_rejected']}")
    return "\n".join(lines) + "\n"


def instance_image_png(ep: dict) -> bytes | None:
    """The image a VL model saw at the start (GP table or the first V-IRL grid), as PNG."""
    try:
        session = open_session(Instance.from_dict(ep["instance"]))
        img = session.image()
    except (InstanceError, OSError, ValueError):
        return None
    if img is None:
        return None
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="PNG")
    return buf.getvalue()


_REPLAY_HTML = """<!doctype html><html><head><meta charset="utf-8"><title>Episode replay</title>
<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}pre{background:#f4f4f4;padding:.6em;white-space:pre-wrap}
.ok{color:#070}.bad{color:#a00}button{font-size:1.1em}</style></head><body>
<h1>Episode replay</h1><div><select id="ep"></select> <button id="prev">&larr; prev</button>
<button id="next">next &rarr;</button> <span id="pos"></span></div><div id="view"></div>
<script>const DATA=__DATA__;
const sel=document.getElementById('ep');let e=0,k=0;
DATA.forEach((ep,i)=>{const o=document.createElement('option');o.value=i;o.textContent=ep.participant+' / '+ep.instance_key+' ('+ep.status+')';sel.appendChild(o)});
function esc(t){const d=document.createElement('div');d.textContent=t;return d.innerHTML}
function show(){const ep=DATA[e];const st=ep.steps||[];document.getElementById('pos').textContent='call '+k+' / '+st.length;
let h='<p><b>'+esc(ep.task)+'</b> '+esc(ep.instance_key)+' &mdash; '+esc(ep.participant)+'</p>';
if(ep.image)h+='<img src="'+ep.image+'" style="max-width:30em">';
for(let i=0;i<k&&i<st.length;i++){const s=st[i];h+='<h3 class="'+(s.reward>0?'ok':'bad')+'">Call '+s.call+': '+esc(s.outcome)+' ('+s.reward+')</h3><pre>'+esc(s.output)+'</pre><p>Verifier: '+esc(s.feedback)+'</p>'}
if(k>=st.length)h+='<p><b>'+(ep.success?'solved':'not solved')+'</b></p>';document.getElementById('view').innerHTML=h}
sel.onchange=()=>{e=+sel.value;k=0;show()};document.getElementById('next').onclick=()=>{k=Math.min(k+1,(DATA[e].steps||[]).length);show()};
document.getElementById('prev').onclick=()=>{k=Math.max(k-1,0);show()};show();</script></body></html>"""


def bundle(episodes: list[dict], *, title: str = "episodes", extra: dict[str, bytes] | None = None) -> bytes:
    """A zip holding everything needed to replay `episodes` without the app or a model."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("episodes.json", json.dumps(episodes, ensure_ascii=False, indent=1, default=str))
        z.writestr("steps.jsonl", "".join(episode_jsonl(episodes)))
        view = []
        images: dict[str, str] = {}
        for ep in episodes:
            z.writestr(f"markdown/{ep['id']}.md", episode_markdown(ep))
            key = json.dumps(ep["instance"], sort_keys=True)
            if key not in images:
                png = instance_image_png(ep) if ep["task"] in TASKS and TASKS[ep["task"]].vision else None
                images[key] = ("data:image/png;base64," + base64.b64encode(png).decode()) if png else ""
                if png:
                    z.writestr(f"images/{ep['id']}.png", png)
            view.append({k: ep.get(k) for k in ("id", "task", "instance_key", "participant", "status", "success")}
                        | {"image": images[key],
                           "steps": [{k: s[k] for k in ("call", "output", "reward", "feedback", "outcome")}
                                     for s in ep.get("steps") or []]})
        data = json.dumps(view, ensure_ascii=False).replace("</", "<\\/")
        z.writestr("replay.html", _REPLAY_HTML.replace("__DATA__", data))
        z.writestr("README.md", f"# {html.escape(title)}\n\nOpen `replay.html` in a browser to step through "
                                f"{len(episodes)} episode(s); `episodes.json` holds the full records, "
                                "`steps.jsonl` one line per step (reference evaluator fields).\n")
        for name, blob in (extra or {}).items():
            z.writestr(name, blob)
    return buf.getvalue()


async def replay_events(store: Store, episode_id: str, delay_s: float = 0.0) -> AsyncIterator[EpisodeEvent]:
    """A stored episode as the runner's typed events (started with `replay`, prompt, step...,
    finished), no model."""
    ep = store.get_episode(episode_id)
    if ep is None:
        return

    try:
        info = open_session(Instance.from_dict(ep["instance"])).describe()
    except InstanceError:
        info = {}
    yield Started(ep["id"], ep["group_id"], ep["participant"], ep["participant_kind"], ep["task"], ep["instance"],
                  info, replay=True)
    for s in ep["steps"]:
        if delay_s:
            await asyncio.sleep(delay_s)
        prompt = s.pop("prompt", None) or []
        yield PromptSent(ep["id"], s["call"], prompt,
                         sum(1 for m in prompt for p in m.get("content", []) if p.get("type") == "image"))
        yield StepDone(ep["id"], **{f: s[f] for f in _STEP_FIELDS if f in s})
    yield Finished(ep["id"], ep["status"], ep["success"], ep["exact_success"], ep["n_steps"], ep["episode_return"],
                   ep["error"])


_STEP_FIELDS = tuple(f.name for f in fields(StepDone) if f.name != "episode_id")


async def replay_group_events(store: Store, episode_ids: list[str],
                              delay_s: float = 0.0) -> AsyncIterator[EpisodeEvent]:
    """Several stored episodes (a paired group) replayed side by side: every `started`, then call
    by call each episode's `prompt` and `step`, then every `finished`."""
    streams = []
    for eid in episode_ids:
        streams.append([ev async for ev in replay_events(store, eid)])
    for events in streams:
        for ev in events:
            if isinstance(ev, Started):
                yield ev
    calls = max((ev.call for events in streams for ev in events if isinstance(ev, StepDone)), default=0)
    for call in range(1, calls + 1):
        if delay_s:
            await asyncio.sleep(delay_s)
        for events in streams:
            for ev in events:
                if isinstance(ev, (PromptSent, StepDone)) and ev.call == call:
                    yield ev
    for events in streams:
        for ev in events:
            if isinstance(ev, Finished):
                yield ev
