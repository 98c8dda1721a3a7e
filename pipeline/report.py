"""The evaluation report: `report.md`, a self-contained `report.html`, the PNG figures, the plot CSVs
and summary.json, written by `write_report(out_dir, metrics, predictions, train=..., synthetic=...,
gan_dir=..., params=...)` from the metrics.json dict. The sections come from
`pipeline.report_sections`, their rendering from `pipeline.report_document`, the DVC files from
`pipeline.report_dvc`.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline import atomic
from pipeline.data import ImageTable
from pipeline.report_document import Block, render_html, render_markdown
from pipeline.report_dvc import summary, write_csvs
from pipeline.report_sections import (class_size_blocks, confusion_blocks, image_blocks, loss_blocks, policy_blocks,
                                      provenance_blocks, quality_blocks, recall_blocks, recommendation_blocks,
                                      summary_blocks)

# PNGs and plot CSVs go here, beside report.md (one DVC output; the HTML inlines the PNGs)
FIGURES = "figures"
SUMMARY = "summary.json"  # the compact metrics `dvc metrics show` prints


def write_report(
    out_dir: Path,
    metrics: dict,
    predictions: pd.DataFrame,
    *,
    train: ImageTable,
    synthetic: ImageTable | None,
    gan_dir: Path | None,
    params: dict,
) -> list[Path]:
    """Write report.md, report.html, the PNG figures and the plot CSVs into `out_dir`.

    Args:
        out_dir: the reports folder (metrics.json and predictions.parquet are written by `evaluate`).
        metrics: the metrics.json dict from `pipeline.evaluate.evaluate`.
        predictions: the predictions table from the same call.
        train: the real training split (for the image grid and nearest-neighbour pairs).
        synthetic: the synthetic images, or None.
        gan_dir: the GAN folder holding losses.csv, or None.
        params: the parameters (and any data versions) to print at the end, as a plain dict.

    Returns:
        The paths written.
    """
    out_dir = Path(out_dir)
    recall, shown = recall_blocks(metrics)
    blocks = [Block("h1", "augment: does the synthetic data help?")]
    blocks += summary_blocks(metrics) + policy_blocks(metrics) + recall + class_size_blocks(metrics)
    blocks += confusion_blocks(metrics, shown)
    blocks += quality_blocks(metrics) + loss_blocks(gan_dir) + image_blocks(metrics, train, synthetic)
    blocks += recommendation_blocks(metrics) + provenance_blocks(metrics, params)
    paths = []
    for b in blocks:
        if b.kind == "figure":
            b.file = f"{FIGURES}/{b.file}"
            atomic.write_bytes(out_dir / b.file, b.png)
            paths.append(out_dir / b.file)
    paths += write_csvs(out_dir / FIGURES, metrics, predictions)
    atomic.write_json(out_dir / SUMMARY, summary(metrics))
    paths.append(out_dir / SUMMARY)
    atomic.write_text(out_dir / "report.md", render_markdown(blocks))
    atomic.write_text(out_dir / "report.html", render_html(blocks, "augment report"))
    return paths + [out_dir / "report.md", out_dir / "report.html"]
