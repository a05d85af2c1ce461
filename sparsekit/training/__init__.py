"""Training one model: the trainer, its settings, optimizers, upkeep, the model and checkpoints."""
