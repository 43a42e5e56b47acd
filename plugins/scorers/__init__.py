"""Scorers: measurements of a compressed model, one or more objectives each."""
