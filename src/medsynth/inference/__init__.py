"""Inference: running a trained generator (noise, synthesis, the canvas generation runs on)."""
