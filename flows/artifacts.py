"""What a flow run shows in the Prefect UI: the report and the key figures as artifacts.

`publish(cfg, version)` reads the plan and metrics.json the run wrote and creates the
`augment-report` markdown artifact (verdict, strategy tables, plan, version, fetch command) and
the `augment-figures` table; `report_markdown` and `key_figures` build their text.
"""

from __future__ import annotations

import json
from pathlib import Path

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from pipeline import config
from pipeline.report_document import render_markdown
from pipeline.report_sections import summary_blocks, verdict


def _fmt(stat: dict | None) -> str:
    """`0.812 [0.790, 0.834]` from a metrics.json {mean, ci95} entry."""
    if not stat or stat.get("mean") is None:
        return "n/a"
    lo, hi = stat.get("ci95") or (None, None)
    ci = f" [{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else ""
    return f"{stat['mean']:.3f}{ci}"


def report_markdown(plan: dict[str, int], metrics: dict | None, version: dict) -> str:
    """The run's markdown artifact: the report's verdict and strategy tables, the plan, the version."""
    lines = [f"# augment version `{version['tag']}`", ""]
    if metrics:
        lines.append(render_markdown(summary_blocks(metrics)))
    else:
        lines.append("No downstream evaluation in this pipeline: no verdict.")
    lines += ["", "## Plan: images to add per class", "", "| class | images to add |", "| --- | --- |"]
    lines += [f"| {c} | {n} |" for c, n in plan.items()]
    lines += ["", "## Version", "", f"- git tag `{version['tag']}`, commit `{version['commit'][:12]}`",
              f"- DVC remote: `{version['remote'] or 'not pushed (push=false)'}`", "",
              "Fetch it from another project:", "", "```bash", version["fetch"], "```"]
    return "\n".join(lines) + "\n"


def key_figures(plan: dict[str, int], metrics: dict | None, version: dict) -> list[dict]:
    """Rows {figure, value} for the table artifact."""
    rows = [{"figure": "images added", "value": sum(plan.values())},
            {"figure": "classes topped up", "value": sum(1 for n in plan.values() if n)}]
    if metrics:
        gain = metrics.get("gain") or {}
        rows.append({"figure": "verdict", "value": verdict(metrics)})
        rows.append({"figure": f"balanced accuracy gain over {gain.get('baseline')}",
                     "value": _fmt(gain.get("balanced_accuracy"))})
        for name, m in (metrics.get("strategies") or {}).items():
            rows.append({"figure": f"{name}: balanced accuracy", "value": _fmt(m.get("balanced_accuracy"))})
        for k, v in (metrics.get("gan_quality") or {}).items():
            if isinstance(v, (int, float)):
                rows.append({"figure": f"GAN {k}", "value": round(float(v), 4)})
    rows.append({"figure": "version", "value": version["tag"]})
    return rows


def publish(cfg: config.Config, version: dict) -> None:
    """The report as a markdown artifact and the key figures as a table artifact."""
    plan = json.loads(Path(cfg.paths.plan).read_text(encoding="utf-8"))
    metrics_path = Path(cfg.paths.reports) / "metrics.json"
    metrics = json.loads(metrics_path.read_text(encoding="utf-8")) if metrics_path.is_file() else None
    create_markdown_artifact(report_markdown(plan, metrics, version), key="augment-report",
                             description=f"augment report, version {version['tag']}")
    create_table_artifact(key_figures(plan, metrics, version), key="augment-figures",
                          description=f"key figures, version {version['tag']}")
