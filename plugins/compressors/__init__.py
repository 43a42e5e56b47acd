"""Compressors: the transformations a trial applies to the model."""
