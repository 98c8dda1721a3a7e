"""The results files of `evaluate`: metrics.json and predictions.parquet, written as one atomic
pair and read back by `report` (without the training code, so reading results never loads torch).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from pipeline import atomic
from pipeline.errors import DataError


def write_results(out_dir: str | Path, result: dict) -> list[Path]:
    """Write `metrics.json` and `predictions.parquet` into `out_dir` as one atomic pair (metrics.json
    renamed last, so the pair is never from two runs); return the paths."""
    out_dir = Path(out_dir)
    metrics_path, pred_path = out_dir / "metrics.json", out_dir / "predictions.parquet"
    with atomic.atomic_paths([pred_path, metrics_path]) as (pred_tmp, metrics_tmp):
        result["predictions"].to_parquet(pred_tmp, index=False)
        atomic.write_json(metrics_tmp, result["metrics"])
    return [metrics_path, pred_path]


def read_results(out_dir: str | Path) -> dict:
    """`metrics.json` and `predictions.parquet` from `out_dir`, as `evaluate` returned them."""
    out_dir = Path(out_dir)
    metrics_path, pred_path = out_dir / "metrics.json", out_dir / "predictions.parquet"
    for p in (metrics_path, pred_path):
        if not p.is_file():
            raise DataError(f"{p}: not found; run `augment evaluate` first")
    return {"metrics": json.loads(metrics_path.read_text(encoding="utf-8")), "predictions": pd.read_parquet(pred_path)}
