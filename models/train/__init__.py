"""Training code for the tiny in-repo checkpoints (CPU, seconds to minutes) of the text tasks
(GP-L, V-IRL-L), each module owning one piece:

- `tasks.py`: the training side of the task registry — per-task config defaults, tokenizer
  corpora, expert pairs, the GRPO training stream (`game.tasks`' `training_stream`), model cards;
- `data.py`: expert answers, tokenizer corpora and tokenised chats (`ChatCodec`);
- `sft.py`: supervised fine-tuning on expert answers; `grpo.py`: on-policy GRPO over multi-turn
  episodes played as registry sessions, with the verifier's reward;
- `evaluate.py`: the batched in-process executor of the evaluation protocol (`game.protocol`);
  `card.py`: the evaluation table and model card written beside every checkpoint;
- `pipeline.py`: the staged GP-L pipeline (base → Init → SFT / RL) for the tiny-model science;
- `common.py`: seeding, threads, checkpoint I/O, the learning-rate schedule, `training.json`.

Tasks, prompts, grading and splits come from `game.tasks` / `game.protocol` (below this
package); chats from `models.chat`; the tiny Llama from `models.tiny`.
"""
