"""Fingerprints of a GAN run: which data and which `train_gan` values shaped the weights.

`config_fingerprint(cfg, pipeline.data.data_fingerprint(train))` names a run; checkpoints, final.pt and the
tracking judge are written for it, resume only into it, and `pipeline.stages.generate.check_generator` compares it.
"""

from __future__ import annotations

import hashlib
import json

from pipeline.config import TrainGanConfig


# config fields that do not change the trained weights (a run may be resumed with other values);
# `recipe` names where the values came from, which are fingerprinted themselves
UNFINGERPRINTED = ("steps", "checkpoint_every", "sample_every", "device", "compile", "cpu_threads", "recipe")


# fields added after runs were trained without them, and the value that trains as before: at that
# value they are left out, so those runs' checkpoints and final.pt stay valid
ADDED_LATER = {"lecam_weight": 0.0, "lecam_decay": 0.99, "ada_target": 0.0, "ada_images": 100_000,
               "transition_start": 0, "transition_steps": 0, "gsr_weight": 0.0,
               "embed_noise": 0.0, "ms_weight": 0.0, "aux_twin": False, "guide_weight": 0.0,
               "guide_epochs": 5, "guide_until": 1.0}


def recorded_config(cfg: TrainGanConfig) -> dict:
    """The config as final.pt records it: every field, less those of `ADDED_LATER` at their
    neutral value (a run that does not use them writes the bytes it wrote before they existed)."""
    return {k: v for k, v in cfg.model_dump(mode="json").items() if not (k in ADDED_LATER and v == ADDED_LATER[k])}


def config_fingerprint(cfg: TrainGanConfig, data_fp: str) -> str:
    """sha256 of the config fields that shape the weights, plus the data fingerprint."""
    fields = {k: v for k, v in recorded_config(cfg).items() if k not in UNFINGERPRINTED}
    return hashlib.sha256(json.dumps([fields, data_fp], sort_keys=True).encode()).hexdigest()

