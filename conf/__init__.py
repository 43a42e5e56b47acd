"""Hydra config groups of autoprune, shipped as package data so every install finds them."""
