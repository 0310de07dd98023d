"""Dynamic batching for the `local` backend: one worker thread per loaded text checkpoint decodes
every concurrent request to that checkpoint together, in one batch with one KV cache.

A request's path: `Batcher.submit` queues it (at most `max_pending` wait; more get a clear error)
and starts the worker thread when none runs. The worker admits waiting requests, up to
`max_batch` rows, prefills their prompts in one left-padded forward pass and then decodes one
token for every row per step. Requests that arrive while a batch runs join it at the next step:
their prompts are prefilled together, and their key/value entries are left-padded to the running
cache's width and stacked onto its batch axis (when the model's cache is a plain per-layer
key/value cache; otherwise they start the next batch). A row leaves as soon as it ends (an
end-of-turn token, its `max_new_tokens`, or its caller cancelled or hit a stop string), and the
cache keeps only the remaining rows. Nothing here depends on timing: grouping decides only which
rows share a forward pass, never a row's tokens (up to floating-point rounding).

Finished rows leave their keys/values in a small prefix cache (bounded in tokens, least recently
used out): a new prompt that starts with a cached row's tokens (the next turn of an episode is its
previous prompt and reply plus feedback; every prompt of a task shares its instructions) computes
only the rest. In the admitting pass, cached keys/values are left-padded to the longest prefix and
each row's remaining tokens follow them; the padding in between is masked and positions are per
row, so a row's attention sees exactly its own tokens.

Sampling is per row (`Sampling`): greedy, or temperature / top-k / top-p in transformers' order,
`min_new_tokens` (end-of-turn suppressed until then), and a `torch.Generator` per seeded request,
so a seeded request gets the same tokens whatever it is batched with.

Rows hand their tokens to their own `streamer` (incremental detokenisation, deltas to the
caller). The worker exits when nothing is waiting or running; `wait_idle` waits for that.
"""
from __future__ import annotations

import array
import threading
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass(frozen=True)
class Sampling:
    """One request's decoding, fully resolved (checkpoint defaults already applied)."""

    max_new_tokens: int
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0                 # 0: no top-k
    min_new_tokens: int = 0
    seed: int | None = None


@dataclass(eq=False)
class BatchRequest:
    """One generation request. `streamer.add(token)` receives each generated token (end-of-turn
    tokens included, the streamer drops them from the text); `finish(error)` is called once at the
    end (`error` None on success). Set `cancel` to drop the row at the next step."""

    ids: list[int]
    sampling: Sampling
    streamer: Any
    finish: Callable[[BaseException | None], None]
    cancel: threading.Event = field(default_factory=threading.Event)
    generated: int = 0             # tokens generated so far (read by the caller after the end)
    generator: Any = None          # the row's torch.Generator when seeded (set by the worker)
    out: list[int] = field(default_factory=list)   # generated token ids (worker thread only)


class Batcher:
    """The batching worker of one loaded text model (see the module docstring)."""

    def __init__(self, model, *, eos_ids: set[int], pad_id: int, name: str, lock: threading.Lock,
                 max_batch: int = 32, max_pending: int = 256, prefix_cache_tokens: int = 8192) -> None:
        if max_batch < 1 or max_pending < 1 or prefix_cache_tokens < 0:
            raise ValueError("max_batch and max_pending must be at least 1, prefix_cache_tokens at least 0")
        self.model, self.eos_ids, self.pad_id, self.name = model, set(eos_ids), pad_id, name
        self.lock = lock               # held while a batch runs (shows "busy")
        self.max_batch, self.max_pending = max_batch, max_pending
        self.prefixes = _PrefixCache(prefix_cache_tokens)
        self._pending: deque[BatchRequest] = deque()
        self._cv = threading.Condition()
        self._running = False
        self._rows: list[BatchRequest] = []   # the running batch's rows (worker thread only)
        # statistics, for tests and benchmarks: the largest batch seen, rows that joined a running
        # batch, decoding steps and tokens generated (tokens / steps = the mean batch size)
        self.max_rows_seen = 0
        self.joined_rows = 0
        self.steps = 0
        self.tokens = 0
        self.prompt_tokens = 0         # prompt tokens admitted
        self.reused_tokens = 0         # of which taken from the prefix cache instead of computed

    # ------------------------------------------------------------------ caller side (any thread)
    def submit(self, request: BatchRequest) -> None:
        """Queue `request`; raises RuntimeError when `max_pending` requests already wait."""
        with self._cv:
            if len(self._pending) >= self.max_pending:
                raise RuntimeError(f"model {self.name!r} is busy: {len(self._pending)} requests are waiting; "
                                   "try again shortly")
            self._pending.append(request)
            self._cv.notify_all()
            if not self._running:
                self._running = True
                threading.Thread(target=self._run, name=f"generate-{self.name}", daemon=True).start()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until the worker has nothing to do and has exited (True), or `timeout` passes."""
        with self._cv:
            return self._cv.wait_for(lambda: not self._running, timeout)

    def wait_pending(self, n: int, timeout: float | None = None) -> bool:
        """Block until at least `n` requests wait for a row (True) or `timeout` passes (False)."""
        with self._cv:
            return self._cv.wait_for(lambda: len(self._pending) >= n, timeout)

    @property
    def busy(self) -> bool:
        return self._running

    # ------------------------------------------------------------------------------ the worker
    def _take(self, n: int) -> list[BatchRequest]:
        """Up to `n` waiting requests; requests cancelled while waiting end here."""
        out: list[BatchRequest] = []
        dropped: list[BatchRequest] = []
        with self._cv:
            while self._pending and len(out) < n:
                req = self._pending.popleft()
                (dropped if req.cancel.is_set() else out).append(req)
        for req in dropped:
            req.finish(None)
        return out

    def _run(self) -> None:
        while True:
            with self._cv:
                if not self._pending:
                    self._running = False
                    self._cv.notify_all()
                    return
            try:
                with self.lock:
                    self._batch()
            except BaseException as exc:  # noqa: BLE001 - a failed batch fails its rows; the worker goes on
                rows, self._rows = self._rows, []
                for req in rows:
                    req.finish(exc)

    def _batch(self) -> None:
        """Decode until no row is left: admit, sample, emit, drop finished rows, step."""
        # lazy: torch is heavy and optional (the `models` extra); only a loaded local model decodes
        import torch

        rows = self._rows = []
        state: _State | None = None
        while True:
            room = self.max_batch - len(rows)
            if room > 0 and (state is None or state.can_join):
                new = self._take(room)
                if new:
                    try:
                        fresh = self._admit(new)
                        if state is not None:
                            state.join(fresh)
                            self.joined_rows += len(new)
                    except BaseException as exc:  # noqa: BLE001 - e.g. out of memory: only these rows fail
                        for req in new:
                            req.finish(exc)
                    else:
                        state = state or fresh
                        rows = self._rows = rows + new
                        self.max_rows_seen = max(self.max_rows_seen, len(rows))
            if not rows:
                return
            assert state is not None  # rows were admitted, so their state exists
            tokens = _sample(state.logits, rows, state.eos).tolist()
            self.steps += 1
            self.tokens += len(rows)
            keep: list[int] = []
            for i, (req, tok) in enumerate(zip(rows, tokens)):
                req.generated += 1
                req.out.append(tok)
                req.streamer.add(tok)
                if tok in self.eos_ids or req.generated >= req.sampling.max_new_tokens or req.cancel.is_set():
                    req.streamer.end()
                    req.finish(None)
                    if state.can_join:
                        self.prefixes.put(req.ids + req.out[:-1], state.row_kv(i))
                else:
                    keep.append(i)
            if len(keep) < len(rows):
                rows = self._rows = [rows[i] for i in keep]
                if not rows:
                    state = None
                    continue  # admit whatever waits, or return
                state.select(keep)
            with torch.inference_mode():
                state.step(self.model, torch.tensor([tokens[i] for i in keep], device=state.mask.device))

    def _admit(self, reqs: list[BatchRequest]) -> "_State":
        """Prefill new rows in one forward pass. A row whose prompt starts with a cached prefix
        computes only the rest: the cached keys/values (left-padded to the longest prefix) form
        the pass's cache, and each row's remaining tokens (left-padded) follow them; padding
        between the two is masked, and positions are per row."""
        # lazy: torch and transformers are heavy and optional (the `models` extra); only a loaded local model decodes
        import torch
        from transformers import DynamicCache

        device = next(self.model.parameters()).device
        hits = []
        for req in reqs:
            if req.sampling.seed is not None and req.sampling.do_sample:
                req.generator = torch.Generator(device=device).manual_seed(int(req.sampling.seed))
            hit = self.prefixes.longest(req.ids)
            hits.append(hit)
            self.prompt_tokens += len(req.ids)
            self.reused_tokens += hit[0] if hit else 0
        known = [hit[0] if hit else 0 for hit in hits]
        width_known = max(known)
        width_new = max(len(r.ids) - n for r, n in zip(reqs, known))
        ids = torch.full((len(reqs), width_new), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(reqs), width_known + width_new), dtype=torch.long)
        for row, (req, n) in enumerate(zip(reqs, known)):
            rest = req.ids[n:]
            ids[row, width_new - len(rest):] = torch.tensor(rest, dtype=torch.long)
            mask[row, width_known - n:width_known] = 1
            mask[row, mask.shape[1] - len(rest):] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, width_known:]
        ids, mask, positions = ids.to(device), mask.to(device), positions.to(device)
        cache = None
        if width_known:
            cache = DynamicCache()
            for layer in range(len(next(hit for hit in hits if hit)[1])):
                keys, values = [], []
                for hit in hits:
                    k, v = hit[1][layer] if hit else _empty_kv(next(h for h in hits if h)[1][layer])
                    keys.append(_left_pad(k, width_known, -2))
                    values.append(_left_pad(v, width_known, -2))
                cache.update(torch.cat(keys).to(device), torch.cat(values).to(device), layer)
        with torch.inference_mode():
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache,
                             use_cache=True, logits_to_keep=1)
        eos = torch.tensor(sorted(self.eos_ids), dtype=torch.long, device=device)
        return _State(out.cache, mask, positions[:, -1] + 1, out.logits[:, -1], eos)


def _left_pad(t, width: int, dim: int):
    """`t` with zeros prepended along `dim` up to `width`."""
    # lazy: torch is heavy and optional (the `models` extra); only a loaded local model decodes
    import torch

    short = width - t.shape[dim]
    if short <= 0:
        return t
    shape = list(t.shape)
    shape[dim] = short
    return torch.cat([t.new_zeros(shape), t], dim=dim)


def _empty_kv(like: tuple) -> tuple:
    """Zero-length keys/values shaped like one row of `like`."""
    k, v = like
    return k[:1, :, :0, :], v[:1, :, :0, :]


class _State:
    """The running batch on the device: KV cache, attention mask, next positions, last logits."""

    def __init__(self, cache, mask, next_pos, logits, eos) -> None:
        self.cache, self.mask, self.next_pos, self.logits, self.eos = cache, mask, next_pos, logits, eos
        self.can_join = _plain_kv(cache)

    def row_kv(self, i: int) -> list[tuple]:
        """Row `i`'s keys and values over its real (unmasked) tokens, per layer (copies)."""
        real = self.mask[i].bool()
        return [(layer.keys[i:i + 1, :, real, :].clone(), layer.values[i:i + 1, :, real, :].clone())
                for layer in self.cache.layers]

    def select(self, keep: list[int]) -> None:
        """Keep only rows `keep`, and drop left columns that are padding in every remaining row."""
        # lazy: torch is heavy and optional (the `models` extra); only a loaded local model decodes
        import torch

        idx = torch.tensor(keep, dtype=torch.long, device=self.mask.device)
        self.cache.batch_select_indices(idx)
        self.mask, self.next_pos, self.logits = self.mask[idx], self.next_pos[idx], self.logits[idx]
        first = int(self.mask.any(0).to(torch.int8).argmax())
        if first > 0 and self.can_join:
            self.mask = self.mask[:, first:]
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys[..., first:, :], layer.values[..., first:, :]

    def join(self, other: "_State") -> None:
        """Stack `other`'s rows under ours, both left-padded to the wider cache."""
        # lazy: torch is heavy and optional (the `models` extra); only a loaded local model decodes
        import torch

        width = max(self.mask.shape[1], other.mask.shape[1])

        def pad(t, dim):
            return _left_pad(t, width, dim)

        # everything is built before anything is assigned: a failure (out of memory) leaves us intact
        kv = [(torch.cat([pad(mine.keys, -2), pad(theirs.keys, -2)], dim=0),
               torch.cat([pad(mine.values, -2), pad(theirs.values, -2)], dim=0))
              for mine, theirs in zip(self.cache.layers, other.cache.layers)]
        mask = torch.cat([pad(self.mask, 1), pad(other.mask, 1)], dim=0)
        next_pos = torch.cat([self.next_pos, other.next_pos])
        logits = torch.cat([self.logits, other.logits])
        for layer, (keys, values) in zip(self.cache.layers, kv):
            layer.keys, layer.values = keys, values
        self.mask, self.next_pos, self.logits = mask, next_pos, logits

    def step(self, model, tokens) -> None:
        """Feed one token per row; the cache grows by one column."""
        # lazy: torch is heavy and optional (the `models` extra); only a loaded local model decodes
        import torch

        self.mask = torch.cat([self.mask, self.mask.new_ones((self.mask.shape[0], 1))], dim=1)
        out = model(input_ids=tokens[:, None], attention_mask=self.mask, position_ids=self.next_pos[:, None],
                    cache=self.cache, use_cache=True)
        self.cache, self.logits = out.cache, out.logits[:, -1]
        self.next_pos = self.next_pos + 1


class _PrefixCache:
    """Keys/values of recently finished rows (prompt + reply), least recently used first out,
    bounded by `budget` tokens in all. A new prompt that starts with a cached row's tokens reuses
    their keys/values: a multi-turn episode's next prompt is its previous prompt and reply plus
    feedback, and every prompt of a task shares its instructions. Worker thread only."""

    MIN_REUSE = 8  # shorter shared prefixes are not worth a separate forward pass

    def __init__(self, budget: int) -> None:
        self.budget, self.used = budget, 0
        self.entries: "OrderedDict[bytes, tuple[list[int], list]]" = OrderedDict()

    def put(self, ids: list[int], kv: list) -> None:
        if not ids or len(ids) > self.budget or not kv or kv[0][0].shape[-2] != len(ids):
            return
        key = _pack(ids)
        if key in self.entries:
            self.entries.move_to_end(key)
            return
        self.entries[key] = (ids, kv)
        self.used += len(ids)
        while self.used > self.budget:
            _, (old, _) = self.entries.popitem(last=False)
            self.used -= len(old)

    def longest(self, ids: list[int]) -> tuple[int, list] | None:
        """The longest cached prefix of `ids` (at most all but the last token: the last one's
        logits must be computed) as (length, keys/values cut to it), or None."""
        target = _pack(ids)
        best, best_key = 0, None
        for key in self.entries:
            n = _common_prefix(key, target) // 4
            if n > best:
                best, best_key = n, key
        best = min(best, len(ids) - 1)
        if best_key is None or best < self.MIN_REUSE:
            return None
        self.entries.move_to_end(best_key)
        kv = self.entries[best_key][1]
        return best, [(k[:, :, :best, :], v[:, :, :best, :]) for k, v in kv]


def _pack(ids: list[int]) -> bytes:
    return array.array("i", ids).tobytes()


def _common_prefix(a: bytes, b: bytes) -> int:
    """Length in bytes of the common prefix of `a` and `b` (binary search on C-speed compares)."""
    lo, hi = 0, min(len(a), len(b))
    if a[:hi] == b[:hi]:
        return hi
    while lo < hi:  # a[:lo] == b[:lo] and a[:hi] != b[:hi]
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo - lo % 4


def _plain_kv(cache) -> bool:
    """Whether every layer of `cache` is a plain growing key/value cache (rows can be stacked)."""
    try:  # lazy: transformers is heavy and optional (the `models` extra); only a loaded local model decodes
        from transformers.cache_utils import DynamicLayer
    except ImportError:  # pragma: no cover - older transformers
        return False
    layers = getattr(cache, "layers", None) or []
    return bool(layers) and all(type(layer) is DynamicLayer and layer.is_initialized for layer in layers)


def _sample(logits, rows: list[BatchRequest], eos):
    """The next token of every row: greedy rows take the argmax; sampling rows apply temperature,
    top-k and top-p (transformers' order) and draw with their own generator when seeded."""
    # lazy: torch is heavy and optional (the `models` extra); only a loaded local model decodes
    import torch

    logits = logits.float()
    block = [i for i, r in enumerate(rows) if r.generated < r.sampling.min_new_tokens]
    if block:
        logits = logits.clone()
        logits[torch.tensor(block, device=logits.device)[:, None], eos[None, :]] = float("-inf")
    out = logits.argmax(-1)
    sampled = [i for i, r in enumerate(rows) if r.sampling.do_sample and r.sampling.temperature > 0]
    if not sampled:
        return out
    dev = logits.device
    idx = torch.tensor(sampled, device=dev)
    params = [rows[i].sampling for i in sampled]
    x = logits[idx] / torch.tensor([p.temperature for p in params], device=dev)[:, None]
    vocab = x.shape[-1]
    ks = torch.tensor([min(p.top_k, vocab) if p.top_k > 0 else vocab for p in params], device=dev)
    if bool((ks < vocab).any()):
        kth = x.sort(dim=-1, descending=True).values.gather(1, (ks - 1)[:, None])
        x = x.masked_fill(x < kth, float("-inf"))
    probs = torch.softmax(x, dim=-1)
    top_p = torch.tensor([p.top_p for p in params], device=dev)
    if bool((top_p < 1.0).any()):
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        drop = sorted_probs.cumsum(-1) - sorted_probs > top_p[:, None]  # keep the smallest set reaching top_p
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs.masked_fill(drop, 0.0))
    picks = torch.empty(len(sampled), dtype=torch.long, device=dev)
    unseeded = []
    for j, i in enumerate(sampled):
        gen = getattr(rows[i], "generator", None)
        if gen is None:
            unseeded.append(j)
        else:
            picks[j] = torch.multinomial(probs[j], 1, generator=gen)[0]
    if unseeded:
        u = torch.tensor(unseeded, device=dev)
        picks[u] = torch.multinomial(probs[u], 1).squeeze(-1)
    out[idx] = picks
    return out
