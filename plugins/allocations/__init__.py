"""Layerwise sparsity allocations: one ratio per decoder block around a target mean."""
