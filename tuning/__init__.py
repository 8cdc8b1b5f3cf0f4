"""Hyperparameter search on the zoo's training engine.

- ``python -m tuning.search`` (`tuning.search`): KerasTuner's oracle, random search coarse then
  fine, each trial trained by `zoo.training.Trainer`.
- ``python -m tuning.lr_find`` (`tuning.lr_find`): the learning-rate range test.
- `tuning.space`: search spaces as data, the fine stage's ranges and edge warnings.
"""
