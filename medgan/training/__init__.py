"""GAN training: the loop, losses, differentiable augmentation, EMA and checkpoints."""
