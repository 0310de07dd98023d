"""The `local` backend: a Hugging Face checkpoint directory loaded once, in-process, with
transformers; generation runs in a worker thread and streams token by token.

Loads `AutoModelForCausalLM` + `AutoTokenizer` for text checkpoints (our tiny Llamas, Llama-3
text models), and `MllamaForConditionalGeneration` + `AutoProcessor` when the checkpoint's
`config.json` says `model_type: "mllama"` (the paper's Llama-3.2-11B-Vision family), with images.
Runs on CUDA when present, else CPU. Text checkpoints batch concurrent requests: one worker
thread per loaded model decodes them together with one KV cache (`batching.Batcher`: dynamic
batching, requests join a running batch at the next token, per-request sampling, stop strings and
cancellation). Vision checkpoints generate one request at a time under the model's lock. Different
models run in parallel threads.

The chat is rendered with the checkpoint's own chat template (`add_generation_prompt=True`) and
tokenised with `add_special_tokens=False`, as the reference evaluator does; replies are decoded with
special tokens skipped.
"""
from __future__ import annotations

import asyncio
import collections
import io
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator

from ..chat import count_images
from ..decoding import DecodingSettings
from .base import Backend, Completion, Health, TextDelta, Timer, describe_error
from .batching import Batcher, BatchRequest, Sampling

# Upper bound on one request's new tokens (a request past it gets a clear error).
MAX_NEW_TOKENS = 8192


def to_pil(image: Any):
    """PIL image from a PIL image, an HxWx3 uint8 array, encoded bytes or a file path."""
    # lazy: PIL only for image inputs; text models and the API server never load it
    from PIL import Image

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, (bytes, bytearray)):
        return Image.open(io.BytesIO(image)).convert("RGB")
    if isinstance(image, (str, Path)):
        return Image.open(image).convert("RGB")
    if hasattr(image, "shape"):
        return Image.fromarray(image).convert("RGB")
    raise TypeError(f"unsupported image type {type(image).__name__}")


def generation_kwargs(settings: DecodingSettings) -> dict[str, Any]:
    """transformers `generate` kwargs for `settings`; unset fields keep the checkpoint defaults."""
    kw: dict[str, Any] = {"max_new_tokens": int(settings.max_tokens)}
    if settings.min_tokens:
        kw["min_new_tokens"] = int(settings.min_tokens)
    if settings.temperature is not None:
        if settings.temperature <= 0:
            kw["do_sample"] = False
        else:
            kw["do_sample"] = True if settings.do_sample is None else settings.do_sample
            kw["temperature"] = float(settings.temperature)
    elif settings.do_sample is not None:
        kw["do_sample"] = settings.do_sample
    if kw.get("do_sample", True):
        if settings.top_p is not None:
            kw["top_p"] = float(settings.top_p)
        if settings.top_k is not None:
            kw["top_k"] = int(settings.top_k)
    return kw


def resolve_sampling(settings: DecodingSettings, defaults) -> Sampling:
    """A request's full decoding: `generation_kwargs(settings)` over the checkpoint's
    `generation_config` (`defaults`), as `generate` would resolve them."""
    kw = generation_kwargs(settings)
    do_sample = bool(kw.get("do_sample", getattr(defaults, "do_sample", False)))
    temperature = kw.get("temperature", getattr(defaults, "temperature", None))
    top_p = kw.get("top_p", getattr(defaults, "top_p", None))
    top_k = kw.get("top_k", getattr(defaults, "top_k", None))
    min_new = kw.get("min_new_tokens", getattr(defaults, "min_new_tokens", None))
    return Sampling(max_new_tokens=kw["max_new_tokens"], do_sample=do_sample,
                    temperature=1.0 if temperature is None else float(temperature),
                    top_p=1.0 if top_p is None else float(top_p), top_k=int(top_k or 0),
                    min_new_tokens=int(min_new or 0), seed=settings.seed)


# transformers initialises models on the "meta" device through process-global state, so two
# checkpoints loading at once in different threads can corrupt each other ("Cannot copy out of
# meta tensor"). Loads are serialised process-wide; generation stays concurrent.
_LOAD_LOCK = threading.Lock()


class _Loaded:
    """A loaded checkpoint: model, tokenizer or processor, its generation lock (held while it
    generates) and, for text models, its batching worker."""

    def __init__(self, path: Path, device: str | None, dtype: str | None, name: str = "model",
                 max_batch: int = 32, max_pending: int = 256, prefix_cache_tokens: int = 8192) -> None:
        with _LOAD_LOCK:
            self._load(path, device, dtype)
        self.lock = threading.Lock()
        self.batcher: Batcher | None = None
        if not self.vision:
            pad = self.tokenizer.pad_token_id
            pad = pad if pad is not None else min(self.eos_ids, default=0)
            self.batcher = Batcher(self.model, eos_ids=self.eos_ids, pad_id=pad, name=name, lock=self.lock,
                                   max_batch=max_batch, max_pending=max_pending,
                                   prefix_cache_tokens=prefix_cache_tokens)

    def _load(self, path: Path, device: str | None, dtype: str | None) -> None:
        # lazy: torch and transformers are heavy and optional (the `models` extra); only loading a checkpoint needs them
        import torch
        import transformers

        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        self.model_type = config.get("model_type", "")
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if dtype:
            torch_dtype = getattr(torch, dtype)
        else:
            torch_dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        self.vision = self.model_type == "mllama"
        if self.vision:
            self.processor = transformers.AutoProcessor.from_pretrained(path)
            self.tokenizer = self.processor.tokenizer
            self.model: Any = transformers.MllamaForConditionalGeneration.from_pretrained(path, dtype=torch_dtype)
        else:
            self.processor = None
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(path)
            self.model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
        self.model.to(self.device).eval()
        eos = self.model.generation_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self.tokenizer.eos_token_id is not None:
            self.eos_ids.add(self.tokenizer.eos_token_id)

    def encode(self, messages: list, images: list):
        """Model inputs (on device) for a chat; raises ValueError on an unusable request."""
        n_placeholders = count_images(messages)
        if images and not self.vision:
            raise ValueError("this checkpoint is text-only and cannot take images")
        if n_placeholders != len(images):
            raise ValueError(f"the chat has {n_placeholders} image placeholder(s) but {len(images)} image(s) were given")
        if self.vision:
            text = self.processor.apply_chat_template(messages, add_generation_prompt=True)
            pil = [to_pil(im) for im in images] or None
            inputs = self.processor(images=pil, text=text, add_special_tokens=False, return_tensors="pt")
        else:
            text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            inputs = self.tokenizer(text, add_special_tokens=False, return_tensors="pt")
        return inputs.to(self.device)


class _TokenStreamer:
    """Detokenises one reply incrementally (a sliding window, as TGI and vLLM do, so each token
    costs O(1) decoding) and hands text deltas to `post`. Fed token by token (`add`, the batching
    worker) or by transformers' `generate` (`put`, whose first call is the prompt)."""

    def __init__(self, tokenizer, eos_ids: set[int], post, timer: Timer) -> None:
        self.tokenizer, self.eos_ids, self.post, self.timer = tokenizer, eos_ids, post, timer
        self.ids: list[int] = []
        self.prefix_offset = 0
        self.read_offset = 0
        self.prompt_seen = False
        self.hit_eos = False

    @property
    def tokens(self) -> int:
        """Generated tokens, the end-of-turn token included."""
        return len(self.ids) + (1 if self.hit_eos else 0)

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def put(self, value) -> None:
        if not self.prompt_seen:  # generate() first hands over the prompt
            self.prompt_seen = True
            return
        for tok in value.reshape(-1).tolist():
            self._take(tok)
        self._emit(final=False)

    def add(self, tok: int) -> None:
        self._take(tok)
        self._emit(final=False)

    def _take(self, tok: int) -> None:
        if tok in self.eos_ids:
            self.hit_eos = True
        elif not self.hit_eos:
            self.ids.append(tok)

    def _emit(self, final: bool) -> None:
        prefix = self._decode(self.ids[self.prefix_offset:self.read_offset])
        text = self._decode(self.ids[self.prefix_offset:])
        if len(text) > len(prefix) and (final or not text.endswith("\ufffd")):
            # an incomplete UTF-8 sequence waits for the next token (unless this is the end)
            self.timer.mark_token()
            self.post(("delta", text[len(prefix):]))
            self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)

    def end(self) -> None:
        self._emit(final=True)


@dataclass(eq=False)  # identity semantics: backends are hashable, compared by object
class LocalBackend(Backend):
    """An in-process Hugging Face checkpoint (`path`), loaded on first use (or `load()`).
    `max_batch` bounds the rows decoded together, `max_pending` the requests waiting for a row,
    `prefix_cache_tokens` the keys/values kept for reuse by prompts that extend a recent one."""

    path: str = ""
    device: str | None = None
    dtype: str | None = None
    max_batch: int = 32
    max_pending: int = 256
    prefix_cache_tokens: int = 8192
    _loaded: _Loaded | None = field(default=None, init=False, repr=False)
    # Tokens generated by the most recent finished generation, including ones the consumer
    # never read (after a cancellation); lets tests and benchmarks see that cancelling stops work.
    last_generated_tokens: int | None = field(default=None, init=False, repr=False)
    _load_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def load(self) -> _Loaded:
        """Load the checkpoint once (thread-safe); later calls return the loaded model."""
        with self._load_lock:
            if self._loaded is None:
                path = Path(self.path).expanduser()
                if not (path / "config.json").is_file():
                    raise FileNotFoundError(f"no Hugging Face checkpoint at {path} (config.json missing)")
                self._loaded = _Loaded(path, self.device, self.dtype, self.name, self.max_batch, self.max_pending,
                                       self.prefix_cache_tokens)
            return self._loaded

    @property
    def loaded(self) -> bool:
        return self._loaded is not None

    @property
    def batcher(self) -> Batcher | None:
        """The batching worker (text checkpoints, once loaded)."""
        return self._loaded.batcher if self._loaded is not None else None

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Block until no generation holds the model (True) or `timeout` passes (False)."""
        if self._loaded is None:
            return True
        if self._loaded.batcher is not None and not self._loaded.batcher.wait_idle(timeout):
            return False
        if self._loaded.lock.acquire(timeout=timeout):
            self._loaded.lock.release()
            return True
        return False

    async def _stream(self, messages, images, settings, timer) -> AsyncIterator[TextDelta | Completion]:
        lm = self._loaded if self._loaded is not None else await asyncio.to_thread(self.load)
        if not 1 <= settings.max_tokens <= MAX_NEW_TOKENS:
            raise ValueError(f"max_tokens must be between 1 and {MAX_NEW_TOKENS}")
        # tokenising and image preprocessing run off the event loop, so other streams keep flowing
        inputs = await asyncio.to_thread(lm.encode, messages, images)
        prompt_tokens = int(inputs["input_ids"].shape[-1])
        loop = asyncio.get_running_loop()
        mailbox = _Mailbox(loop)
        post = mailbox.post
        streamer = _TokenStreamer(lm.tokenizer, lm.eos_ids, post, timer)
        if lm.batcher is not None:
            cancel = self._submit(lm, inputs, settings, streamer, post)
        else:
            cancel = self._start_generate(lm, inputs, settings, streamer, post)
        text = ""
        stopped_on = None
        try:
            while True:
                kind, value = await mailbox.get()
                if kind == "delta":
                    piece = value
                    if settings.stop:
                        cut = _first_stop(text + piece, settings.stop)
                        if cut is not None:
                            piece = (text + piece)[:cut][len(text):]
                            stopped_on = "stop"
                            cancel.set()
                    if piece:
                        text += piece
                        yield TextDelta(piece)
                    if stopped_on:
                        break
                elif kind == "error":
                    raise value
                else:
                    break
        finally:
            cancel.set()  # no-op when finished; stops generation when the consumer left
        finish = stopped_on or ("stop" if streamer.hit_eos else "length")
        yield Completion(model=self.name, text=text, finish_reason=finish, prompt_tokens=prompt_tokens,
                         completion_tokens=streamer.tokens, time_to_first_token_s=timer.first,
                         elapsed_s=timer.elapsed())

    def _submit(self, lm: _Loaded, inputs, settings: DecodingSettings, streamer: _TokenStreamer,
                post) -> threading.Event:
        """Hand a text request to the batching worker; returns its cancel flag."""
        done = threading.Event()

        def finish(error: BaseException | None) -> None:
            if done.is_set():  # once
                return
            done.set()
            self.last_generated_tokens = streamer.tokens
            post(("error", error) if error is not None else ("done", None))

        request = BatchRequest(inputs["input_ids"][0].tolist(), resolve_sampling(settings, lm.model.generation_config),
                               streamer, finish)
        assert lm.batcher is not None  # _submit is for text models, which batch
        lm.batcher.submit(request)
        return request.cancel

    def _start_generate(self, lm: _Loaded, inputs, settings: DecodingSettings, streamer: _TokenStreamer,
                        post) -> threading.Event:
        """One `generate` call in its own thread under the model's lock (vision checkpoints)."""
        # lazy: torch and transformers are heavy and optional (the `models` extra); only a loaded model generates
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        cancel = threading.Event()

        class _Cancel(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return torch.full((input_ids.shape[0],), cancel.is_set(), dtype=torch.bool,
                                  device=input_ids.device)

        kwargs = generation_kwargs(settings)

        def work() -> None:
            try:
                with lm.lock:
                    if cancel.is_set():
                        raise asyncio.CancelledError()
                    if settings.seed is not None:
                        torch.manual_seed(settings.seed)
                    with torch.inference_mode():
                        lm.model.generate(**inputs, **kwargs, streamer=streamer,
                                          stopping_criteria=StoppingCriteriaList([_Cancel()]))
                    self.last_generated_tokens = streamer.tokens
                post(("done", None))
            except BaseException as exc:  # noqa: BLE001 - reported on the queue
                post(("error", exc))

        threading.Thread(target=work, name=f"generate-{self.name}", daemon=True).start()
        return cancel

    async def health(self) -> Health:
        path = Path(self.path).expanduser()  # noqa: ASYNC240 - a home-directory lookup: cheap
        if self._loaded is not None:
            return Health(True, f"loaded on {self._loaded.device} ({self._loaded.model_type})", (self.name,))
        if not (path / "config.json").is_file():
            return Health(False, f"no checkpoint at {path} (config.json missing)")
        try:
            model_type = json.loads((path / "config.json").read_text(encoding="utf-8")).get("model_type", "?")
        except (OSError, ValueError) as exc:
            return Health(False, f"unreadable config.json: {describe_error(exc)}")
        return Health(True, f"checkpoint found ({model_type}), loads on first use", (self.name,))


class _Mailbox:
    """Items from a generating thread to one consumer on an event loop, in order. A post wakes the
    loop only when no wake-up is already pending, so a busy loop takes several deltas per wake-up
    instead of trading the GIL with the generating thread once per token."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.lock = threading.Lock()
        self.items: collections.deque = collections.deque()
        self.scheduled = False
        self.ready = asyncio.Event()

    def post(self, item) -> None:
        """Called from any thread; a no-op once the consumer's loop has closed (the user left)."""
        with self.lock:
            self.items.append(item)
            if self.scheduled:
                return
            self.scheduled = True
        try:
            self.loop.call_soon_threadsafe(self.ready.set)
        except RuntimeError:  # the consumer's event loop has closed
            pass

    async def get(self):
        while True:
            with self.lock:
                if self.items:
                    return self.items.popleft()
                self.scheduled = False
                self.ready.clear()
            await self.ready.wait()


def _first_stop(text: str, stops) -> int | None:
    hits = [text.find(s) for s in stops if s and s in text]
    return min(hits) if hits else None
