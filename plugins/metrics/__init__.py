"""Pruning metrics: how important each weight is; the lowest scores are pruned."""
