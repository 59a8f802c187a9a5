"""Applying a trained model: batches, image files, exported models. The evaluate stage and
``medpipe predict`` use this package and never the training loop.
"""
