"""Training: data in memory, the OASIS step, checkpoints and the loop."""
