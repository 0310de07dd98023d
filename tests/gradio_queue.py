"""Driving the UI the way a script (or an attacker) does, without a browser: read the Gradio app's
`/config`, post an event to its queue (`queue/join`, with any data and any page query string) and
read the result from the session's event stream (`queue/data`). A `Visitor` is one Gradio session
(its server-side state persists between its events) with its own browser storage (the game tokens
a page keeps, sent as the BrowserState input).
"""
from __future__ import annotations

import json
import secrets

import httpx


class Visitor:
    def __init__(self, url: str, *, source_ip: str = "127.0.0.1", tokens: list[str] | None = None) -> None:
        self.url = url.rstrip("/")
        self.http = httpx.Client(base_url=self.url, trust_env=False, timeout=300,
                                 transport=httpx.HTTPTransport(local_address=source_ip))
        config = self.http.get("/config").json()
        self.api = config["api_prefix"]
        self.components = {c["id"]: c for c in config["components"]}
        self.dependencies = config["dependencies"]
        self.session = secrets.token_hex(8)
        self.tokens = list(tokens or [])   # what this visitor's browser storage holds

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> "Visitor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---------------------------------------------------------------------- the app's shape
    def elem_id(self, component_id: int) -> str | None:
        return self.components.get(component_id, {}).get("props", {}).get("elem_id")

    def component_type(self, component_id: int) -> str:
        return self.components.get(component_id, {}).get("type", "")

    def dependency(self, trigger: str, event: str = "click", *, output: str | None = None) -> dict:
        """The backend function run by `event` on the component with elem id `trigger` (for page
        loads: `trigger="load"`, and `output` an elem id among its outputs)."""
        for dep in self.dependencies:
            if not dep.get("backend_fn"):
                continue
            if trigger == "load":
                if any(e == "load" for _, e in dep["targets"]) and output in [self.elem_id(o) for o in dep["outputs"]]:
                    return dep
            elif [trigger, event] in [[self.elem_id(i), e] for i, e in dep["targets"]]:
                return dep
        raise LookupError(f"no backend function for {event} on {trigger!r} (output {output!r})")

    # ------------------------------------------------------------------------------ events
    def fire(self, trigger: str, event: str = "click", *, values: dict | None = None, query: str = "",
             output: str | None = None) -> dict:
        """Run the event with the components' current page defaults, `values` (by elem id) put in,
        and this visitor's tokens as the BrowserState; returns {"success", "outputs": {elem id or
        component id: value}, "raw": the completion message}."""
        return self._run(self.dependency(trigger, event, output=output), values or {}, query)

    def fire_chain(self, trigger: str, event: str = "click", *, values: dict | None = None) -> list[dict]:
        """`fire`, then every backend function its `.then(...)` chain runs (as the page does, the
        session's state carried between them); the results in order, the first the trigger's own."""
        dep = self.dependency(trigger, event)
        results = [self._run(dep, values or {}, "")]
        after = dep["id"]
        while True:
            nxt = next((d for d in self.dependencies if d.get("trigger_after") == after), None)
            if nxt is None:
                return results
            if nxt.get("backend_fn"):
                results.append(self._run(nxt, values or {}, ""))
            after = nxt["id"]

    def _run(self, dep: dict, values: dict, query: str) -> dict:
        data = []
        for cid in dep["inputs"]:
            kind, eid = self.component_type(cid), self.elem_id(cid)
            if eid in values:
                data.append(values[eid])
            elif kind == "browserstate":
                data.append(list(self.tokens))
            elif kind == "state":
                data.append(None)   # server-side: the session's own value is used
            else:
                data.append(self.components[cid]["props"].get("value"))
        trigger_id = next((i for i, e in dep["targets"] if i is not None), None)
        body = {"data": data, "fn_index": dep["id"], "trigger_id": trigger_id, "session_hash": self.session,
                "event_data": None}
        joined = self.http.post(f"{self.api}/queue/join" + (f"?{query}" if query else ""), json=body)
        joined.raise_for_status()
        event_id = joined.json()["event_id"]
        current: list | None = None   # a generator's outputs, rebuilt from its first message and diffs
        with self.http.stream("GET", f"{self.api}/queue/data", params={"session_hash": self.session}) as stream:
            for line in stream.iter_lines():
                if not line.startswith("data:"):
                    continue
                msg = json.loads(line[5:])
                if msg.get("event_id") == event_id and msg.get("msg") == "process_generating" and msg.get("success"):
                    chunk = (msg.get("output") or {}).get("data") or []
                    current = chunk if current is None else [apply_diff(old, edits) for old, edits in zip(current, chunk)]
                    self._store(dep, current)   # the page stores browser state as it streams
                if msg.get("event_id") == event_id and msg.get("msg") == "process_completed":
                    outputs = (msg.get("output") or {}).get("data") or []
                    named = {(self.elem_id(cid) or cid): value for cid, value in zip(dep["outputs"], outputs)}
                    self._store(dep, outputs)
                    return {"success": msg.get("success", False), "outputs": named, "raw": msg}
        raise RuntimeError(f"the event stream ended before event {event_id} completed")

    def _store(self, dep: dict, outputs: list) -> None:
        for cid, value in zip(dep["outputs"], outputs):
            if self.component_type(cid) == "browserstate" and isinstance(value, list):
                self.tokens = value   # what the page writes to its local storage


def apply_diff(old, edits):
    """A value after Gradio's streaming edits (`gradio.utils.diff`: replace / append / add / delete
    at a path)."""
    if not (isinstance(edits, list) and all(isinstance(e, list) and len(e) == 3 for e in edits)):
        return edits
    import copy

    value = copy.deepcopy(old)
    for op, path, new in edits:
        if not path:
            value = value + new if op == "append" else new
            continue
        parent = value
        for key in path[:-1]:
            parent = parent[key]
        key = path[-1]
        if op == "replace":
            parent[key] = new
        elif op == "append":
            parent[key] = parent[key] + new
        elif op == "add":
            if isinstance(parent, list):
                parent.insert(key, new)
            else:
                parent[key] = new
        elif op == "delete":
            del parent[key]
    return value


def text_of(value) -> str:
    """An output's text: a plain value, or an update's `value`."""
    if isinstance(value, dict) and value.get("__type__") == "update":
        value = value.get("value")
    return "" if value is None else json.dumps(value) if not isinstance(value, str) else value
