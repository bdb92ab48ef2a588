"""Cohorts, preprocessing, slicing and splitting: everything before the GAN."""
