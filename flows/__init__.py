"""Prefect doors into the pipeline: flow `augment` (augment.py) and its deployment (serve.py)."""
