"""Trainer adapters: our exact, seeded environments for the RL trainers people already use.

- `models.adapters.trl`: TRL `GRPOTrainer(environment_factory=...)` environments (tools that
  serialise to the paper's reply and go through our verifier; `get_reward`) and single-turn
  `reward_funcs`;
- `models.adapters.verl`: verl multi-turn `Interaction` classes (loaded by dotted path from an
  interaction YAML) and `compute_score`;
- `models.adapters.dataset`: rows for the paper's instance streams (TRL datasets, verl parquet);
- `models.adapters._engine`: the thin layer over the task registry (`game.tasks`) and the evaluation
  protocol (`game.protocol`) that both adapters share.

Neither trainer is imported at module load: the classes are duck-typed to their interfaces.
"""
