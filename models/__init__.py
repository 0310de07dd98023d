"""Model layer: paper-exact prompts, chat assembly, output parsing and model backends.

Imports `game`, never `app`. Modules:
- `prompts`: GP / V-IRL prompt templates (+ `_EG`), feedback turn, SFT reply renderers;
- `chat`: sequential-revision message lists (`next_chat`, `gp_chat`, `Conversation`);
- `decoding`: `DecodingSettings` and the paper's defaults per task and mode;
- `backends`: the async streaming interface, `openai` (HTTP/SSE) and `local` (transformers);
- `compare`: several backends side by side on one chat;
- `config`: `models.toml` + environment overrides;
- `serve_openai`: our OpenAI-compatible server for local checkpoints;
- `vllm`: vLLM server command lines and supervision for the SFT/RL pair;
- `procs`: server subprocess helpers; `tiny`: tiny Llama / Mllama checkpoints built from scratch.
"""
