"""Tiny Llama-architecture checkpoints built by our own code (no model hub): a byte-level BPE
tokenizer trained with `tokenizers` on a GP/V-IRL prompt-and-answer corpus, a randomly initialised
`LlamaForCausalLM`, and a Llama-3-style chat template, saved in Hugging Face layout.

Used by the tests (in-process backend, our OpenAI-compatible server, vLLM) and as the starting
point for tiny SFT/RL checkpoints: `build_tiny_llama(out_dir, corpus, hidden=…, layers=…, seed=…)`.

`train_tokenizer(corpus, compact=True)` (used by `models/train/`) pre-splits the text so that every
quoted card label (`'K'`, `'10'`), every digit run (`10`, `24`) and every parenthesis is its own
piece, and lets BPE merge everything else across spaces: the long, constant prompt text collapses
into a few dozen tokens while cards and numbers stay single, consistent tokens. V-IRL uses
`compact=VIRL_SPLIT`, which also isolates capitalised words (names) and direction words.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Iterable, Sequence

from .prompts import (
    ABSOLUTE_DIRECTIONS, RELATIVE_DIRECTIONS, feedback_text, gp_prompt, response_eqn, response_virl, virl_prompt,
)

BOS, EOS, EOT = "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"
START_HEADER, END_HEADER, IMAGE, PAD = "<|start_header_id|>", "<|end_header_id|>", "<|image|>", "<|finetune_right_pad_id|>"
SPECIAL_TOKENS = [BOS, EOS, START_HEADER, END_HEADER, EOT, IMAGE, PAD]

# A Llama-3.2-Vision-style chat template: content lists with {"type": "image"} / {"type": "text"}
# parts; `<|image|>` placed where the image part is; the dated system block only when no image is
# present (as the Llama-3.2-Vision-Instruct template does). `date_string` defaults to a fixed
# date so a rendered chat does not change from day to day.
CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- if not date_string is defined %}{%- set date_string = '26 Jul 2024' %}{%- endif %}"
    "{%- set ns = namespace(has_image=false) %}"
    "{%- for message in messages %}{%- if message['content'] is not string %}"
    "{%- for part in message['content'] %}{%- if part['type'] == 'image' %}{%- set ns.has_image = true %}"
    "{%- endif %}{%- endfor %}{%- endif %}{%- endfor %}"
    "{%- if messages[0]['role'] == 'system' %}"
    "{%- if messages[0]['content'] is string %}{%- set system_message = messages[0]['content'] %}"
    "{%- else %}{%- set system_message = messages[0]['content'][0]['text'] %}{%- endif %}"
    "{%- set messages = messages[1:] %}"
    "{%- else %}{%- set system_message = '' %}{%- endif %}"
    "{%- if not ns.has_image %}"
    "{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' }}"
    "{{- 'Cutting Knowledge Date: December 2023\\n' }}"
    "{{- 'Today Date: ' + date_string + '\\n\\n' }}"
    "{{- system_message }}{{- '<|eot_id|>' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
    "{%- if message['content'] is string %}{{- message['content'] }}"
    "{%- else %}{%- for part in message['content'] %}"
    "{%- if part['type'] == 'image' %}{{- '<|image|>' }}"
    "{%- elif part['type'] == 'text' %}{{- part['text'] }}{%- endif %}"
    "{%- endfor %}{%- endif %}"
    "{{- '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)

_LABELS = ["A", "2", "3", "4", "5", "6", "7", "8", "9", "10", "J", "Q", "K"]
_WORDS = ["Prince St", "Aritzia", "Shake Shack", "Corner Books", "Gym Central", "MoMA Design Store",
          "Cafe Nero", "City Bank", "Main Library", "Park Hotel"]
_RELS = ["front", "left front", "left", "left behind", "behind", "right behind", "right", "right front"]


def default_corpus(n: int = 400, seed: int = 0) -> list[str]:
    """A small text corpus in the shape of the tasks: GP prompts (all variants, both rules),
    `ResponseEqn`-style replies, feedback turns, V-IRL prompts and replies, chat markers."""
    rng = random.Random(seed)
    out: list[str] = []
    for i in range(n):
        cards = [rng.choice(_LABELS) for _ in range(4)]
        rule = rng.choice(["face10", "face_jqk"])
        nums = [{"A": 1, "J": 11, "Q": 12, "K": 13}.get(c, None) or int(c) for c in cards]
        if rule == "face10":
            nums = [min(v, 10) for v in nums]
        ops = [rng.choice("+-*/") for _ in range(3)]
        formula = f"({nums[0]}{ops[0]}{nums[1]}){ops[1]}{nums[2]}{ops[2]}{nums[3]}"
        out.append(gp_prompt(cards, rule, vision=i % 4 == 1, eg=i % 3 == 0))
        out.append(response_eqn(cards, nums, formula))
        out.append(feedback_text(rng.choice([
            "illegal characters.", "you used invalid numbers: [13].", "partial solution.",
            f"{formula[:5]} is partially correct but the full formula does not match any solution.",
            "your formula does not match any solution.", "you recognized wrong cards"])))
        if i % 4 == 0:
            lm = rng.choice(_WORDS)
            absolute = rng.random() < 0.5
            word = rng.choice(ABSOLUTE_DIRECTIONS)
            rel = rng.choice(RELATIVE_DIRECTIONS)
            instruction = (f"1. First, turn {rel} to face {word}.\n2. Move forward until you reach "
                           f"destination where The destination {lm} is on your {rng.choice(_RELS)}.\n")
            seq = "O_1: No landmarks nearby; \nA_1: \n"
            out.append(virl_prompt(instruction, seq, absolute, vision=i % 8 == 0))
            action = f"turn_direction({word if absolute else rel})"
            out.append(response_virl("No landmarks nearby; ", f"First, turn {rel} to face {word}.", action))
    out.append(" ".join(SPECIAL_TOKENS) + " system user assistant Cutting Knowledge Date: December 2023 Today Date: 26 Jul 2024")
    return out


# Compact pre-tokenizer: quoted card labels, digit runs and parentheses are isolated pieces.
COMPACT_SPLIT = r"'(?:10|[2-9AJQK])'|[0-9]+|[()]"
# V-IRL variant: also every capitalised word (landmark and street names, with its leading space)
# every compass / turn word and every action name, so a name or a direction is the same pieces wherever it appears
# (instruction, observation history, answer) while the lower-case template text still merges.
VIRL_SPLIT = COMPACT_SPLIT + r"| ?[A-Z][^\s.,;:\"'()]*|north(?:east|west)?|south(?:east|west)?|east|west|left|right|forward|stop|turn_direction"


def train_tokenizer(corpus: Iterable[str], vocab_size: int = 1024, *, compact: "bool | str" = False):
    """A byte-level BPE `PreTrainedTokenizerFast` with the Llama-3 special tokens and our chat template.

    `compact=True` uses `COMPACT_SPLIT` instead of GPT-2-style word splitting (see module doc);
    a string is used as the isolating split pattern itself (e.g. `VIRL_SPLIT`).
    """
    # lazy: tokenizers and transformers are heavy and optional (the `models` extra); `models.train.data`
    # imports this module for its token constants only
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    if compact:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(compact if isinstance(compact, str) else COMPACT_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(list(corpus), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOT, pad_token=PAD,
                                   additional_special_tokens=[EOS, START_HEADER, END_HEADER, IMAGE],
                                   model_max_length=4096)
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_llama(out_dir: "str | Path", corpus: Sequence[str] | None = None, *, hidden: int = 64,
                     layers: int = 2, heads: int = 2, kv_heads: int = 1, intermediate: int | None = None,
                     vocab_size: int = 1024, max_positions: int = 4096, init_std: float = 0.2, seed: int = 0,
                     tokenizer=None, generation: dict | None = None, tie_embeddings: bool = True) -> Path:
    """Write a randomly initialised tiny `LlamaForCausalLM` + tokenizer + chat template to `out_dir`.

    Deterministic for a given corpus and seed. Generation defaults to greedy decoding and stops on
    `<|eot_id|>` or `<|end_of_text|>` (`generation` overrides `GenerationConfig` fields). A ready
    `tokenizer` (from `train_tokenizer`) skips tokenizer training. `tie_embeddings`: one matrix for
    the input embeddings and the output layer (Llama-3.2's small models tie them). Returns the directory.
    """
    # lazy: torch and transformers are heavy and optional (the `models` extra); `models.train.data`
    # imports this module for its token constants only
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if tokenizer is None:
        tokenizer = train_tokenizer(corpus if corpus is not None else default_corpus(seed=seed), vocab_size)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=intermediate or 2 * hidden,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
        max_position_embeddings=max_positions, bos_token_id=ids[BOS], eos_token_id=[ids[EOT], ids[EOS]],
        pad_token_id=ids[PAD], tie_word_embeddings=tie_embeddings, rope_theta=500000.0, initializer_range=init_std,
    )  # type: ignore[call-arg]  # rope_theta: accepted and folded into rope_parameters (checked, 5.x)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        **{"bos_token_id": ids[BOS], "eos_token_id": [ids[EOT], ids[EOS]], "pad_token_id": ids[PAD],
           "do_sample": False, "max_new_tokens": 256, **(generation or {})})
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def build_tiny_mllama(out_dir: "str | Path", corpus: Sequence[str] | None = None, *, hidden: int = 64,
                      layers: int = 2, image_size: int = 56, patch_size: int = 14, vocab_size: int = 1024,
                      seed: int = 0, tokenizer=None, text_from: "str | Path | None" = None,
                      max_image_tiles: int = 4, vision_hidden: int | None = None, vision_layers: int = 2,
                      vision_global_layers: int = 1, cross_attention_layers: Sequence[int] | None = None,
                      gate: float = 1.0, init_std: float = 0.2, generation: dict | None = None) -> Path:
    """Write a tiny `MllamaForConditionalGeneration` (the architecture of the paper's
    Llama-3.2-11B-Vision checkpoints) + `MllamaProcessor` (its own `MllamaImageProcessor`, tiles of
    `image_size` px, at most `max_image_tiles`) + chat template + generation config to `out_dir`,
    in Hugging Face layout: the `local` backend loads it like the 11B checkpoints.

    Randomly initialised by default (exercises the vision path on CPU; deterministic for a corpus and
    seed). `text_from` builds it the way Llama-3.2-Vision was built from Llama-3.1: the language
    model is a trained text checkpoint (a tiny `LlamaForCausalLM`: its tokenizer, embeddings,
    self-attention layers, final norm and generation config, copied unchanged), with
    cross-attention layers inserted at `cross_attention_layers` (indices in the new stack) and a
    fresh vision encoder. Cross-attention gates start at `gate` (0 makes the new model reproduce the
    text model exactly until trained; the default 1 makes the image matter at once).
    """
    # lazy: torch and transformers are heavy and optional (the `models` extra); `models.train.data`
    # imports this module for its token constants only
    import torch
    from transformers import (AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM, MllamaConfig,
                              MllamaForConditionalGeneration, MllamaProcessor, MllamaTextConfig, MllamaVisionConfig)
    try:
        from transformers import MllamaImageProcessorPil as ImageProcessor
    except ImportError:  # older transformers
        from transformers import MllamaImageProcessor as ImageProcessor  # type: ignore[assignment]  # same interface

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    source = None
    if text_from is not None:
        source = LlamaForCausalLM.from_pretrained(text_from, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(text_from)
        src: LlamaConfig = source.config
        hidden, heads = src.hidden_size, src.num_attention_heads
        kv_heads = src.num_key_value_heads
        assert kv_heads is not None  # LlamaConfig fills it in (num_attention_heads when not given)
        intermediate, layers, init_std = src.intermediate_size, src.num_hidden_layers, src.initializer_range
        max_positions, rope_theta = src.max_position_embeddings, (src.rope_parameters or {}).get("rope_theta", 500000.0)
        eps = src.rms_norm_eps
    else:
        heads, kv_heads, intermediate, max_positions, rope_theta, eps = 2, 1, 2 * hidden, 4096, 500000.0, 1e-5
        if tokenizer is None:
            tokenizer = train_tokenizer(corpus if corpus is not None else default_corpus(seed=seed), vocab_size)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    cross = list(cross_attention_layers) if cross_attention_layers is not None else [1]
    n_text = layers + len(cross)
    if any(not 0 <= i < n_text for i in cross):
        raise ValueError(f"cross_attention_layers {cross} outside the {n_text}-layer stack")
    vh = vision_hidden or hidden
    vision = MllamaVisionConfig(hidden_size=vh, num_hidden_layers=vision_layers, num_global_layers=vision_global_layers,
                                attention_heads=2 if vh <= 64 else 4, intermediate_size=2 * vh,
                                vision_output_dim=vh * (1 + min(2, vision_layers)), image_size=image_size,
                                patch_size=patch_size, max_num_tiles=max_image_tiles,
                                intermediate_layers_indices=list(range(min(2, vision_layers))),
                                supported_aspect_ratios=[[w, h] for w in range(1, max_image_tiles + 1)
                                                         for h in range(1, max_image_tiles + 1)
                                                         if w * h <= max_image_tiles],
                                initializer_range=init_std)
    text = MllamaTextConfig(vocab_size=len(tokenizer) if source is None else source.config.vocab_size,
                            hidden_size=hidden, num_hidden_layers=n_text, num_attention_heads=heads,
                            num_key_value_heads=kv_heads, intermediate_size=intermediate,
                            max_position_embeddings=max_positions, cross_attention_layers=cross,
                            rope_parameters={"rope_theta": rope_theta, "rope_type": "default"}, rms_norm_eps=eps,
                            bos_token_id=ids[BOS], eos_token_id=[ids[EOT], ids[EOS]],
                            pad_token_id=ids[PAD], initializer_range=init_std)
    if source is None:  # the random model keeps its historical vocabulary margin
        text.vocab_size = len(tokenizer) + 8
    config = MllamaConfig(vision_config=vision.to_dict(), text_config=text.to_dict(), image_token_index=ids[IMAGE])
    torch.manual_seed(seed)
    model = MllamaForConditionalGeneration(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(("cross_attn_attn_gate", "cross_attn_mlp_gate")):
                param.fill_(gate)   # zero at init in transformers: the image would not matter at all
        if source is not None:
            _copy_text_weights(source, model, cross)
    if source is not None:
        model.generation_config = GenerationConfig.from_dict(source.generation_config.to_dict())
    else:
        model.generation_config = GenerationConfig(bos_token_id=ids[BOS], eos_token_id=[ids[EOT], ids[EOS]],
                                                   pad_token_id=ids[PAD], do_sample=False, max_new_tokens=256)
    for key, value in (generation or {}).items():
        setattr(model.generation_config, key, value)
    model.save_pretrained(out, safe_serialization=True)
    image_processor = ImageProcessor(size={"height": image_size, "width": image_size}, max_image_tiles=max_image_tiles)
    processor = MllamaProcessor(image_processor=image_processor, tokenizer=tokenizer, chat_template=CHAT_TEMPLATE)
    processor.save_pretrained(out)
    return out


def _copy_text_weights(source, model, cross: Sequence[int]) -> None:
    """Copy a `LlamaForCausalLM`'s weights into an Mllama language model whose stack has the same
    self-attention layers, in order, with cross-attention layers at the indices `cross`."""
    lm = model.model.language_model
    src = source.model
    vocab = src.embed_tokens.weight.shape[0]
    lm.embed_tokens.weight[:vocab].copy_(src.embed_tokens.weight)
    model.lm_head.weight.copy_(source.lm_head.weight)
    self_layers = [layer for i, layer in enumerate(lm.layers) if i not in cross]
    for dst, layer in zip(self_layers, src.layers):
        dst.load_state_dict(layer.state_dict())
    lm.norm.load_state_dict(src.norm.state_dict())
