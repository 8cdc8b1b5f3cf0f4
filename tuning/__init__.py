"""Hyperparameter search with KerasTuner on the zoo's training engine.

Not built yet: it needs the training engine (`zoo.train`). Nothing here is public API.
"""
