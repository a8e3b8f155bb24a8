"""Training: recipes, the training loop, checkpoints, evaluation and prediction."""
