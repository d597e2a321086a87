"""Training: the fit loop, augmentation, losses, optimizers and schedules, checkpoints."""
