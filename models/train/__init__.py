"""Training code for the tiny in-repo checkpoints (CPU, seconds to minutes) of every task (GP-L,
V-IRL-L, GP-VL, V-IRL-VL), each module owning one piece:

- `tasks.py`: the training side of the task registry — each task's preset (`pipeline`), the stages
  it trains, tokenizer corpora, stage corpora, the GRPO training stream (`game.tasks`'
  `training_stream`), model-card prose; training code branches on these properties, never on a
  task name;
- `config.py`: every trainer's configuration (`PipelineConfig`, `VisionConfig`, `GRPOConfig`),
  each hyper-parameter documented where it is declared, and the one preset mechanism
  (`StagedConfig.for_task`: defaults, then the task's preset, then explicit changes);
- `pipeline.py`: the one staged runner for text and vision (base → Init → SFT / RL / SFT-diverse,
  snapshots, several training seeds), its evaluation (every lens; vision: recognition), the model
  cards and shipping;
- `sft.py`: the one SFT loop (`fit`) and its text batches; `grpo.py`: the one GRPO (on-policy,
  multi-turn episodes played as registry sessions, the verifier's reward; the pipeline's RL stage
  and `sftvsrl train rl` from any checkpoint);
- `vision.py`: image-text data, composed table pixels, the vision encoder's pretraining, bfloat16
  storage; `data.py`: expert answers and pairs, tokenizer text and tokenised chats (`ChatCodec`);
  `gp_corpus.py` / `rules_text.py`: the GP pipeline corpora and rule phrasings;
- `evaluate.py`: the batched in-process executor of the evaluation protocol (`game.protocol`);
- `common.py`: seeding, threads, checkpoint I/O, the learning-rate schedule, compute accounting,
  loss curves, `training.json`.

Tasks, prompts, grading and splits come from `game.tasks` / `game.protocol` (below this
package); chats from `models.chat`; the tiny Llama and Mllama from `models.tiny`.
"""
