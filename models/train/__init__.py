"""Training code for the tiny in-repo checkpoints (CPU, seconds to minutes): data, tokenised
chats, SFT (`sft.py`), on-policy RL (`grpo.py`) and the paper-protocol evaluation (`evaluate.py`).

Everything reuses the paper-exact prompts (`models.prompts`), the chat assembly (`models.chat`),
the tiny Llama builder (`models.tiny`) and the GeneralPoints engine (`game.gp`).
"""
