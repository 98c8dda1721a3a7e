"""The report's files for DVC: the plot CSVs `dvc plots` draws (`write_csvs`: strategies, per-class
recall, confusions) and the few numbers `dvc metrics show` prints (`summary`, written as
summary.json). Their columns and paths are what dvc.yaml's `plots` and `metrics` name.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import atomic
from pipeline.metrics import SCALAR_METRICS


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name)


def write_csvs(out_dir: Path, metrics: dict, predictions: pd.DataFrame) -> list[Path]:
    """The CSVs `dvc plots` draws: strategies_test.csv and strategies_balanced_test.csv (one row per
    strategy), per_class_recall.csv (long: class, train_count, strategy, recall; classes by training
    frequency, one series per strategy) and confusion_<strategy>.csv (first seed)."""
    files = {}
    for subset, summaries in (("test", metrics["strategies"]), ("balanced_test", (metrics.get("balanced_test") or {}).get("strategies", {}))):
        rows = []
        for name, s in summaries.items():
            row = {"strategy": name}
            for m in SCALAR_METRICS:
                row |= {m: s[m]["mean"], f"{m}_ci_lo": s[m]["ci95"][0], f"{m}_ci_hi": s[m]["ci95"][1]}
            rows.append(row)
        if rows:
            files[f"strategies_{subset}.csv"] = pd.DataFrame(rows)
    order = np.argsort(-np.asarray(metrics["train_counts"]), kind="stable")
    files["per_class_recall.csv"] = pd.DataFrame(
        [{"class": metrics["class_names"][i], "train_count": metrics["train_counts"][i], "strategy": name,
          "recall": s["per_class_recall"]["mean"][i]} for i in order for name, s in metrics["strategies"].items()])
    names = np.array(metrics["class_names"])
    test = predictions[predictions["subset"] == "test"]
    for name, g in test.groupby("strategy", sort=False):
        first = g[g["seed"] == g["seed"].min()]
        files[f"confusion_{_slug(name)}.csv"] = pd.DataFrame({"actual": names[first["y_true"]], "predicted": names[first["y_pred"]]})
    paths = []
    for fname, df in files.items():
        atomic.write_text(out_dir / fname, df.to_csv(index=False))
        paths.append(out_dir / fname)
    return paths


def summary(metrics: dict) -> dict:
    """The few numbers `dvc metrics show` prints (summary.json), as many columns whatever the number
    of strategies: the verdict, the gain's mean and 95% CI (balanced accuracy, points), the
    recommended strategy (`use`) and the GAN strategy the gain is measured for (`gan`), each with its
    mean test balanced accuracy in % (`use_ba`, `gan_ba`). Every strategy's figures are in
    metrics.json and figures/strategies_test.csv (`dvc plots show`)."""
    g = metrics.get("gain") or {}
    d = g.get("balanced_accuracy") or {}
    ci = d.get("ci95") or [None, None]
    points = lambda x: None if x is None else round(100 * x, 2)  # noqa: E731
    use, gan = (metrics.get("recommendation") or {}).get("strategy"), g.get("strategy")

    def ba(name: str | None) -> float | None:
        s = metrics["strategies"].get(name) if name else None
        return points(s["balanced_accuracy"]["mean"]) if s else None

    return {
        "verdict": g.get("verdict") or "none",
        "gain": points(d.get("mean")), "gain_lo": points(ci[0]), "gain_hi": points(ci[1]),
        "use": use, "use_ba": ba(use), "gan": gan, "gan_ba": ba(gan),
    }
