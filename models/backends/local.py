"""The `local` backend: a Hugging Face checkpoint directory loaded once, in-process, with
transformers; generation runs in a worker thread and streams token by token.

Loads `AutoModelForCausalLM` + `AutoTokenizer` for text checkpoints (our tiny Llamas, Llama-3
text models), and `MllamaForConditionalGeneration` + `AutoProcessor` when the checkpoint's
`config.json` says `model_type: "mllama"` (the paper's Llama-3.2-11B-Vision family), with images.
Runs on CUDA when present, else CPU. One lock per loaded model: requests to the same model run one
at a time; different models run in parallel threads.

The chat is rendered with the checkpoint's own chat template (`add_generation_prompt=True`) and
tokenised with `add_special_tokens=False`, as the reference evaluator does; replies are decoded with
special tokens skipped.
"""
from __future__ import annotations

import asyncio
import io
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator

from ..chat import count_images
from ..decoding import DecodingSettings
from .base import Backend, Completion, Health, TextDelta, Timer, describe_error


def to_pil(image: Any):
    """PIL image from a PIL image, an HxWx3 uint8 array, encoded bytes or a file path."""
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


# transformers initialises models on the "meta" device through process-global state, so two
# checkpoints loading at once in different threads can corrupt each other ("Cannot copy out of
# meta tensor"). Loads are serialised process-wide; generation stays concurrent.
_LOAD_LOCK = threading.Lock()


class _Loaded:
    """A loaded checkpoint: model, tokenizer or processor, and its generation lock."""

    def __init__(self, path: Path, device: str | None, dtype: str | None) -> None:
        with _LOAD_LOCK:
            self._load(path, device, dtype)
        self.lock = threading.Lock()

    def _load(self, path: Path, device: str | None, dtype: str | None) -> None:
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
            self.model = transformers.MllamaForConditionalGeneration.from_pretrained(path, dtype=torch_dtype)
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
    """A transformers streamer that detokenises incrementally (a sliding window, as TGI and vLLM
    do, so each token costs O(1) decoding) and hands text deltas to an asyncio queue."""

    def __init__(self, tokenizer, eos_ids: set[int], loop: asyncio.AbstractEventLoop, queue: asyncio.Queue,
                 timer: Timer) -> None:
        self.tokenizer, self.eos_ids, self.loop, self.queue, self.timer = tokenizer, eos_ids, loop, queue, timer
        self.ids: list[int] = []
        self.prefix_offset = 0
        self.read_offset = 0
        self.prompt_seen = False
        self.hit_eos = False

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def put(self, value) -> None:
        if not self.prompt_seen:  # generate() first hands over the prompt
            self.prompt_seen = True
            return
        for tok in value.reshape(-1).tolist():
            if tok in self.eos_ids:
                self.hit_eos = True
                continue
            self.ids.append(tok)
        self._emit(final=False)

    def _emit(self, final: bool) -> None:
        prefix = self._decode(self.ids[self.prefix_offset:self.read_offset])
        text = self._decode(self.ids[self.prefix_offset:])
        if len(text) > len(prefix) and (final or not text.endswith("\ufffd")):
            # an incomplete UTF-8 sequence waits for the next token (unless this is the end)
            self.timer.mark_token()
            _post(self.loop, self.queue, ("delta", text[len(prefix):]))
            self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)

    def end(self) -> None:
        self._emit(final=True)


@dataclass(eq=False)  # identity semantics: backends are hashable, compared by object
class LocalBackend(Backend):
    """An in-process Hugging Face checkpoint (`path`), loaded on first use (or `load()`)."""

    path: str = ""
    device: str | None = None
    dtype: str | None = None
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
                self._loaded = _Loaded(path, self.device, self.dtype)
            return self._loaded

    @property
    def loaded(self) -> bool:
        return self._loaded is not None

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Block until no generation holds the model (True) or `timeout` passes (False)."""
        if self._loaded is None:
            return True
        if self._loaded.lock.acquire(timeout=timeout):
            self._loaded.lock.release()
            return True
        return False

    async def _stream(self, messages, images, settings, timer) -> AsyncIterator[TextDelta | Completion]:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        lm = self._loaded or await asyncio.to_thread(self.load)
        # tokenising and image preprocessing run off the event loop, so other streams keep flowing
        inputs = await asyncio.to_thread(lm.encode, messages, images)
        prompt_tokens = int(inputs["input_ids"].shape[-1])
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        cancel = threading.Event()
        streamer = _TokenStreamer(lm.tokenizer, lm.eos_ids, loop, queue, timer)

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
                    self.last_generated_tokens = len(streamer.ids) + (1 if streamer.hit_eos else 0)
                _post(loop, queue, ("done", None))
            except BaseException as exc:  # noqa: BLE001 - reported on the queue
                _post(loop, queue, ("error", exc))

        thread = threading.Thread(target=work, name=f"generate-{self.name}", daemon=True)
        thread.start()
        text = ""
        stopped_on = None
        try:
            while True:
                kind, value = await queue.get()
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
        completion_tokens = len(streamer.ids) + (1 if streamer.hit_eos else 0)
        finish = stopped_on or ("stop" if streamer.hit_eos else "length")
        yield Completion(model=self.name, text=text, finish_reason=finish, prompt_tokens=prompt_tokens,
                         completion_tokens=completion_tokens, time_to_first_token_s=timer.first,
                         elapsed_s=timer.elapsed())

    async def health(self) -> Health:
        path = Path(self.path).expanduser()
        if self._loaded is not None:
            return Health(True, f"loaded on {self._loaded.device} ({self._loaded.model_type})", (self.name,))
        if not (path / "config.json").is_file():
            return Health(False, f"no checkpoint at {path} (config.json missing)")
        try:
            model_type = json.loads((path / "config.json").read_text(encoding="utf-8")).get("model_type", "?")
        except (OSError, ValueError) as exc:
            return Health(False, f"unreadable config.json: {describe_error(exc)}")
        return Health(True, f"checkpoint found ({model_type}), loads on first use", (self.name,))


def _post(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue, item) -> None:
    """Hand `item` to the consumer's loop from the worker thread; a no-op once the loop is gone."""
    try:
        loop.call_soon_threadsafe(queue.put_nowait, item)
    except RuntimeError:  # the consumer's event loop has closed (the user left)
        pass


def _first_stop(text: str, stops) -> int | None:
    hits = [text.find(s) for s in stops if s and s in text]
    return min(hits) if hits else None
