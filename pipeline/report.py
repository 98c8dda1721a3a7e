"""The evaluation report: `report.md`, a self-contained `report.html` (PNG figures inlined as base64,
no external reference), matplotlib PNGs and the CSVs `dvc plots` draws.

`write_report(out_dir, metrics, predictions, train=..., synthetic=..., gan_dir=..., params=...)`
renders the metrics.json dict; the verdict comes first, in one plain sentence.
"""

from __future__ import annotations

import base64
import html
import io as _io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from matplotlib.figure import Figure

from pipeline import atomic
from pipeline.card import md_cell
from pipeline.data import ImageTable
from pipeline.metrics import SCALAR_METRICS

# PNGs and plot CSVs go here, beside report.md (one DVC output; the HTML inlines the PNGs)
FIGURES = "figures"
SUMMARY = "summary.json"  # the compact metrics `dvc metrics show` prints

METRIC_LABELS = {"accuracy": "accuracy", "balanced_accuracy": "balanced accuracy", "macro_f1": "macro-F1", "g_mean": "G-mean"}


# ---- the document model: a list of blocks rendered twice (Markdown and HTML) --------------------

@dataclass
class Block:
    """One piece of the report: kind in {h1, h2, p, table, figure, code}."""

    kind: str
    text: str = ""
    rows: list[list[str]] | None = None  # table: header first
    png: bytes | None = None  # figure
    file: str = ""  # figure: its PNG file name beside the report


def render_markdown(blocks: list[Block]) -> str:
    """Markdown with figures referenced as PNG files beside report.md."""
    out = []
    for b in blocks:
        if b.kind in ("h1", "h2"):
            out.append(("# " if b.kind == "h1" else "## ") + b.text)
        elif b.kind == "p":
            out.append(b.text)
        elif b.kind == "table":
            head, *body = b.rows
            lines = ["| " + " | ".join(map(md_cell, head)) + " |", "|" + "---|" * len(head)]
            lines += ["| " + " | ".join(map(md_cell, r)) + " |" for r in body]
            out.append("\n".join(lines))
        elif b.kind == "figure":
            out.append(f"![{b.text}]({b.file})")
        elif b.kind == "code":
            out.append("```\n" + b.text.rstrip() + "\n```")
    return "\n\n".join(out) + "\n"


_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%}
pre{background:#f6f6f6;padding:1em;overflow-x:auto}.verdict{font-size:1.2em;font-weight:600}"""


def render_html(blocks: list[Block], title: str) -> str:
    """One HTML file: inline CSS, figures as data: URIs; nothing is fetched from anywhere."""
    e = html.escape
    out = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{e(title)}</title><style>{_CSS}</style></head><body>"]
    for i, b in enumerate(blocks):
        if b.kind in ("h1", "h2"):
            out.append(f"<{b.kind}>{e(b.text)}</{b.kind}>")
        elif b.kind == "p":
            cls = " class='verdict'" if i == 1 else ""  # the verdict follows the title
            text = re.sub(r"`([^`]+)`", r"<code>\1</code>", e(b.text))
            out.append(f"<p{cls}>{text}</p>")
        elif b.kind == "table":
            head, *body = b.rows
            rows = ["<tr>" + "".join(f"<th>{e(str(c))}</th>" for c in head) + "</tr>"]
            rows += ["<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>" for r in body]
            out.append("<table>" + "".join(rows) + "</table>")
        elif b.kind == "figure":
            data = base64.b64encode(b.png).decode("ascii")
            out.append(f"<figure><img alt='{e(b.text)}' src='data:image/png;base64,{data}'><figcaption>{e(b.text)}</figcaption></figure>")
        elif b.kind == "code":
            out.append(f"<pre>{e(b.text)}</pre>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


# ---- numbers as words ----------------------------------------------------------------------------

def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}"


def _with_ci(m: dict | None) -> str:
    if not m or m.get("mean") is None:
        return "n/a"
    lo, hi = m["ci95"]
    return f"{_pct(m['mean'])} [{_pct(lo)}, {_pct(hi)}]"


def _points(x: float) -> str:
    return f"{100 * x:+.1f}"


def verdict(metrics: dict) -> str:
    """One plain sentence: is there a gain from the GAN's images, against which baseline, how sure."""
    g = metrics.get("gain") or {}
    if not g.get("balanced_accuracy"):
        why = metrics.get("skipped", {}).get("gan") or g.get("reason") or "the GAN strategy was not run"
        return f"No verdict on GAN augmentation: {why}; the tables compare the other strategies only."
    d, base, n = g["balanced_accuracy"], g["baseline"], len(g["balanced_accuracy"]["per_seed"])
    mean, (lo, hi) = d["mean"], d["ci95"]
    ci = f"95% CI {_points(lo)} to {_points(hi)} points, {n} seed{'s' if n > 1 else ''}"
    against = f"against {base}, the best non-GAN strategy by {g['selected_by']}"
    chosen = (metrics.get("mix_policy") or {}).get("chosen") or {}
    if g.get("strategy") == "gan_policy" and chosen.get("synthetic_rows") == 0:
        return (f"No gain: the mixing policy chosen on validation ({chosen['name']}) adds none of the GAN's "
                f"images, so gan_policy trained on the real data alone: {_points(mean)} points of balanced "
                f"accuracy ({ci}) {against}.")
    if g["verdict"] == "gain":
        return f"Gain: adding the GAN's images raises balanced accuracy by {_points(mean)} points ({ci}) {against}."
    if g["verdict"] == "undetermined":
        return (f"No gain can be claimed: {_points(mean)} points of balanced accuracy {against}, "
                "but one seed gives no confidence interval; set evaluate.seeds >= 2.")
    if hi < 0:
        return f"No gain: adding the GAN's images lowers balanced accuracy by {abs(100 * mean):.1f} points ({ci}) {against}."
    return (f"No gain: adding the GAN's images changes balanced accuracy by {_points(mean)} points ({ci}) {against}; "
            "the interval includes 0.")


# ---- figures ---------------------------------------------------------------------------------------

def _png(fig: Figure) -> bytes:
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    return buf.getvalue()


def _show(ax, img: np.ndarray) -> None:
    """uint8 HWC image on an axis without ticks (grayscale for one channel)."""
    if img.shape[-1] == 1:
        ax.imshow(img[..., 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    else:
        ax.imshow(img, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def recall_figure(metrics: dict, strategies: list[str]) -> bytes:
    """Per-class recall (mean over seeds) of `strategies`, classes sorted by training frequency."""
    names, counts = metrics["class_names"], np.array(metrics["train_counts"])
    order = np.argsort(-counts, kind="stable")
    fig = Figure(figsize=(max(6, 0.6 * len(names)), 3.6))
    ax = fig.subplots()
    for s in strategies:
        r = metrics["strategies"][s]["per_class_recall"]["mean"]
        ax.plot(range(len(order)), [np.nan if r[i] is None else r[i] for i in order], marker="o", label=s)
    ax.set_xticks(range(len(order)), [f"{names[i]}\n({counts[i]})" for i in order], fontsize=8)
    ax.set_xlabel("class (training images), most frequent first")
    ax.set_ylabel("test recall")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    return _png(fig)


def confusion_figure(metrics: dict, strategies: list[str]) -> bytes:
    """Row-normalised mean confusion matrices (true class in rows), one panel per strategy."""
    names = metrics["class_names"]
    fig = Figure(figsize=(4.2 * len(strategies), 4))
    axes = np.atleast_1d(fig.subplots(1, len(strategies)))
    for ax, s in zip(axes, strategies):
        cm = np.array(metrics["strategies"][s]["confusion"], dtype=float)
        cm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1e-12)
        ax.imshow(cm, vmin=0, vmax=1, cmap="Blues")
        ax.set_title(s)
        ticks = range(len(names))
        ax.set_xticks(ticks, names, fontsize=7, rotation=90)
        ax.set_yticks(ticks, names, fontsize=7)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
    return _png(fig)


def loss_figure(losses: pd.DataFrame) -> bytes:
    """Discriminator and generator loss against step."""
    fig = Figure(figsize=(7, 3.2))
    ax = fig.subplots()
    for col in ("d_loss", "g_loss"):
        ax.plot(losses["step"], losses[col], label=col, lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    return _png(fig)


def grid_figure(train: ImageTable, synthetic: ImageTable, per_class: int = 6, seed: int = 0) -> bytes:
    """One row per class with synthetic images: `per_class` real training images, then synthetic ones."""
    rng = np.random.default_rng(seed)
    classes = [c for c in range(train.num_classes) if np.any(synthetic.labels == c)]
    cols = 2 * per_class + 1
    fig = Figure(figsize=(0.6 * cols, 0.65 * len(classes) + 0.4))
    axes = np.array(fig.subplots(len(classes), cols, squeeze=False))
    for r, c in enumerate(classes):
        for part, table, offset in (("real", train, 0), ("synthetic", synthetic, per_class + 1)):
            idx = np.flatnonzero(table.labels == c)
            pick = rng.choice(idx, min(per_class, len(idx)), replace=False)
            for j in range(per_class):
                ax = axes[r, offset + j]
                ax.axis("off")
                if j < len(pick):
                    _show(ax, table.images[pick[j]])
            if r == 0:
                axes[0, offset].set_title(part, fontsize=8, loc="left")
        axes[r, per_class].axis("off")
        axes[r, per_class].text(0.5, 0.5, train.class_names[c], ha="center", va="center", fontsize=8)
    return _png(fig)


def pairs_figure(train: ImageTable, synthetic: ImageTable, pairs: list[dict]) -> bytes:
    """Closest synthetic/training pairs: synthetic on top, its nearest training image below."""
    fig = Figure(figsize=(1.1 * len(pairs), 2.6))
    axes = np.array(fig.subplots(2, len(pairs), squeeze=False))
    for j, p in enumerate(pairs):
        _show(axes[0, j], synthetic.images[p["synthetic"]])
        _show(axes[1, j], train.images[p["train"]])
        axes[0, j].set_title(f"{p['distance']:.3f}", fontsize=7)
    axes[0, 0].set_ylabel("synthetic", fontsize=8)
    axes[1, 0].set_ylabel("nearest\ntrain", fontsize=8)
    return _png(fig)


# ---- sections ------------------------------------------------------------------------------------

def _strategy_table(summaries: dict, validation: dict | None = None) -> list[list[str]]:
    head = ["strategy"] + [f"{METRIC_LABELS[m]} % [95% CI]" for m in SCALAR_METRICS]
    if validation is not None:
        head.append("val. balanced accuracy %")
    rows = [head]
    for name, s in summaries.items():
        row = [name] + [_with_ci(s[m]) for m in SCALAR_METRICS]
        if validation is not None:
            row.append(_pct((validation.get(name) or {}).get("balanced_accuracy", {}).get("mean")))
        rows.append(row)
    return rows


def recommendation_line(metrics: dict) -> str:
    """One sentence: the strategy to use, chosen on validation among every strategy run."""
    rec = metrics.get("recommendation") or {}
    if not rec.get("strategy"):
        return f"No recommendation: {rec.get('reason') or 'this metrics.json predates recommendations'}."
    test = (metrics["strategies"].get(rec["strategy"]) or {}).get("balanced_accuracy")
    kind = "a GAN strategy" if rec["uses_synthetic"] else "no GAN images"
    return (f"Recommended: {rec['strategy']} ({kind}; test balanced accuracy {_with_ci(test)}%), because "
            f"{rec['reason']}.")


def recommendation_blocks(metrics: dict) -> list[Block]:
    """The closing section: the strategy to use, the rule, and every strategy's validation score."""
    rec = metrics.get("recommendation")
    if not rec:
        return []
    rows = [["strategy", "val. balanced accuracy %", "role"]]
    val = rec["validation_balanced_accuracy"]
    for name in sorted(val, key=lambda n: -(val[n] if val[n] is not None else -1)):
        role = ("recommended" if name == rec["strategy"] else
                "best non-GAN" if name == rec["baseline"] else "best GAN" if name == rec["best_gan"] else "")
        rows.append([name, _pct(val[name]), role])
    blocks = [Block("h2", "Recommendation"), Block("p", recommendation_line(metrics)),
              Block("p", f"Rule, on validation only (the test set plays no part): {rec['rule']}.")]
    ev = rec.get("evidence")
    if ev:
        blocks.append(Block("p", f"{rec['best_gan']} minus {rec['baseline']} on validation: {_points(ev['mean'])} "
                                 f"points, bootstrap 5th-95th percentile {_points(ev['p5'])} to {_points(ev['p95'])}; "
                                 f"ahead in {100 * ev['share_positive']:.0f}% of the resampled validation sets."))
    return blocks + [Block("table", rows=rows)]


def summary_blocks(metrics: dict) -> list[Block]:
    """Verdict, strategy tables (test and balanced test), notes and skipped strategies."""
    desc = metrics.get("strategy_descriptions", {})
    val = metrics.get("validation", {}).get("strategies")
    blocks = [
        Block("p", verdict(metrics)),
        *([Block("p", recommendation_line(metrics))] if "recommendation" in metrics else []),
        Block("h2", "Strategies on the test set"),
        Block("p", f"{metrics.get('classifier', '?')} classifier, {metrics.get('epochs', '?')} epochs, seeds "
                   f"{metrics.get('seeds')}; {sum(metrics.get('test_counts', []))} test images, touched once per "
                   "trained model; the model of each run is chosen on validation balanced accuracy."),
        Block("table", rows=_strategy_table(metrics["strategies"], val)),
    ]
    bal = metrics.get("balanced_test")
    if bal:
        g = bal.get("gain") or {}
        line = ""
        if g.get("balanced_accuracy"):
            line = f"Gain on this subsample against {g['baseline']}: {_with_ci_points(g['balanced_accuracy'])} points."
        blocks += [
            Block("h2", "Strategies on a class-balanced test subsample"),
            Block("p", f"{bal['rows']} test images, {bal['per_class']} per class, drawn with evaluate.seed. {line}"),
            Block("table", rows=_strategy_table(bal["strategies"])),
        ]
    blocks.append(Block("h2", "How to read this"))
    if desc:
        blocks.append(Block("table", rows=[["strategy", "what it trains on"]] + [[n, d] for n, d in desc.items()]))
    for note in metrics.get("notes", []):
        blocks.append(Block("p", note))
    for name, why in metrics.get("skipped", {}).items():
        blocks.append(Block("p", f"Skipped {name}: {why}."))
    return blocks


def policy_blocks(metrics: dict) -> list[Block]:
    """The mixing policies tried on validation, the chosen one first, and what it kept per class."""
    mp = metrics.get("mix_policy")
    if not mp:
        return []
    chosen = mp["chosen"]
    rows = [["policy", "synthetic images kept", "val. balanced accuracy %", "val. balanced NLL"]]
    nll = lambda r: r.get("val_balanced_nll", float("nan"))  # noqa: E731 (older metrics.json lack it)
    for r in sorted(mp["grid"], key=lambda r: (-r["val_balanced_accuracy"], nll(r))):
        mark = " (chosen)" if r["name"] == chosen["name"] else ""
        mark += "" if r.get("eligible", True) else " (class-weighting probe only: cap_ratio lists no 0)"
        rows.append([r["name"] + mark, str(r["synthetic_rows"]), _pct(r["val_balanced_accuracy"]), _q(nll(r))])
    kept = [["class", "synthetic kept", "mean judge score of generated images"]]
    for n, c in mp["synthetic_per_class"].items():
        kept.append([n, str(c), _q(mp["judge_score_mean_per_class"].get(n))])
    return [
        Block("h2", "Mixing policy (strategy gan_policy)"),
        Block("p", f"Every policy below was trained once per selection seed and scored on the validation split "
                   f"only; the test set played no part; equal balanced accuracies are decided by the lower "
                   f"class-balanced NLL. Chosen: {chosen['name']}. cap = synthetic images per class "
                   f"at most cap x its real images (best judge score first); score = minimum probability of the "
                   f"intended class under a real-data judge ({mp['scores_from']}); w = loss weight of a synthetic "
                   f"image; +cw = inverse-frequency class weighting of the mix."
                   + (" Search staged: class weighting was decided on the real data alone (cap 0, with and "
                      "without it) and the synthetic policies were tried with the winner only."
                      if any(r.get("stage") == 2 for r in mp["grid"]) else "")),
        Block("table", rows=rows),
        Block("table", rows=kept),
    ]


def _with_ci_points(d: dict) -> str:
    return f"{_points(d['mean'])} [{_points(d['ci95'][0])}, {_points(d['ci95'][1])}]"


def recall_blocks(metrics: dict) -> tuple[list[Block], list[str]]:
    """Per-class recall plot and table; returns the strategies shown (also used for confusions)."""
    strategies = list(metrics["strategies"])
    g = metrics.get("gain") or {}
    key = [s for s in dict.fromkeys(["none", g.get("baseline"), "gan"]) if s in metrics["strategies"]]
    names, counts = metrics["class_names"], metrics["train_counts"]
    order = np.argsort(-np.array(counts), kind="stable")
    rows = [["class", "train images", "planned"] + strategies]
    for i in order:
        rows.append([names[i], str(counts[i]), str(metrics.get("plan", {}).get(names[i], 0))]
                    + [_pct(metrics["strategies"][s]["per_class_recall"]["mean"][i]) for s in strategies])
    blocks = [
        Block("h2", "Per-class recall by class frequency"),
        Block("figure", "per-class test recall, classes by training frequency", png=recall_figure(metrics, strategies), file="per_class_recall.png"),
        Block("table", rows=rows),
    ]
    return blocks, key


def confusion_blocks(metrics: dict, shown: list[str]) -> list[Block]:
    """Row-normalised confusion matrices of the key strategies (none, the baseline, gan)."""
    if not shown:
        return []
    return [
        Block("h2", "Confusion matrices"),
        Block("p", "Mean over seeds, each row divided by the number of test images of that class."),
        Block("figure", "confusion matrices: " + ", ".join(shown), png=confusion_figure(metrics, shown), file="confusion.png"),
    ]


def _q(x, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def quality_blocks(metrics: dict) -> list[Block]:
    """GAN-quality table with a reading of each number, and the per-class details."""
    q = metrics.get("gan_quality")
    blocks = [Block("h2", "Quality of the synthetic images")]
    if not q:
        why = metrics.get("skipped", {}).get("gan_quality", "no synthetic data")
        return blocks + [Block("p", f"Not measured: {why}.")]
    mem, ref = q["memorization"], q["reference"]
    rows = [["measure", "value", "reading"],
            ["FID", _q(q["fid"]), f"lower is closer; real train vs test: {_q(ref['fid_train_vs_test'])}"],
            ["KID", f"{_q(q['kid'], 4)} ± {_q(q['kid_std'], 4)}", "lower is closer, unbiased (0 = same distribution)"],
            ["intra-FID (mean over classes)", _q(q["intra_fid"]), "FID within each class"],
            ["precision", _q(q["precision"]), f"synthetic inside the real manifold (k={q['k']})"],
            ["recall", _q(q["recall"]), "real inside the synthetic manifold (diversity)"],
            ["class consistency", _q(q["class_consistency"]), f"real-data classifier agrees with the intended label; its balanced accuracy on real test: {_q(ref['judge_balanced_accuracy_on_test'])}"],
            ["memorisation: median NN ratio", _q(mem["ratio_median"]), "synthetic-to-train over test-to-train nearest distance; well below 1 suggests copies"],
            ["memorisation: below real 5th pct", _q(mem["fraction_below_real_p05"]), "0.05 expected for images as new as real test images"]]
    names = metrics["class_names"]
    per_class = [["class", "intra-FID", "class consistency", "judge recall on real test"]]
    for n in names:
        per_class.append([n, _q(q["intra_fid_per_class"].get(n)), _q(q["class_consistency_per_class"].get(n)),
                          _q(ref["judge_recall_per_class"].get(n))])
    return blocks + [
        Block("p", f"Feature space: {q['feature_space']}. Real test images are weighted to the synthetic class mix; "
                   f"{q['n']['synthetic']} synthetic, {q['n']['test']} test images."),
        Block("table", rows=rows),
        Block("table", rows=per_class),
    ]


def loss_blocks(gan_dir: Path | None) -> list[Block]:
    """GAN loss curves from `<gan_dir>/losses.csv` (step, d_loss, g_loss), or why they are absent."""
    blocks = [Block("h2", "GAN training losses")]
    path = None if gan_dir is None else Path(gan_dir) / "losses.csv"
    if path is None or not path.is_file():
        where = "no GAN folder was given" if path is None else f"{path} not found"
        return blocks + [Block("p", f"No loss curves: {where}.")]
    losses = pd.read_csv(path)
    missing = {"step", "d_loss", "g_loss"} - set(losses.columns)
    if missing or losses.empty:
        return blocks + [Block("p", f"No loss curves: {path} lacks column(s) {sorted(missing)} or rows.")]
    return blocks + [Block("figure", f"losses from {path.name}", png=loss_figure(losses), file="gan_losses.png")]


def image_blocks(metrics: dict, train: ImageTable, synthetic: ImageTable | None) -> list[Block]:
    """Real-vs-synthetic grid per class and the closest synthetic/training pairs."""
    if synthetic is None or len(synthetic) == 0:
        return [Block("h2", "Real and synthetic images"), Block("p", "No synthetic images to show.")]
    blocks = [
        Block("h2", "Real and synthetic images"),
        Block("figure", "per class: real training images (left), synthetic (right)", png=grid_figure(train, synthetic), file="real_vs_synthetic.png"),
    ]
    pairs = ((metrics.get("gan_quality") or {}).get("memorization") or {}).get("closest_pairs") or []
    pairs = [p for p in pairs if p["synthetic"] < len(synthetic) and p["train"] < len(train)]
    if pairs:
        blocks += [
            Block("h2", "Nearest training images of the closest synthetic images"),
            Block("p", "Pixel RMS distance above each pair; a distance near 0 is a copy of a training image."),
            Block("figure", "closest synthetic/training pairs", png=pairs_figure(train, synthetic, pairs), file="nearest_neighbours.png"),
        ]
    return blocks


def provenance_blocks(metrics: dict, params: dict) -> list[Block]:
    """The data fingerprints the numbers came from and the parameters that produced them."""
    rows = [["data", "rows", "sha256 (pixels + labels)"]]
    rows += [[n, str(d["rows"]), d["sha256"][:16]] for n, d in metrics.get("data", {}).items()]
    timing = ", ".join(f"{k} {v:.0f} s" for k, v in metrics.get("timing_s", {}).items())
    return [
        Block("h2", "Data versions and parameters"),
        Block("table", rows=rows),
        Block("p", f"Time: {timing}." if timing else "Time: not recorded."),
        Block("code", yaml.safe_dump(params, sort_keys=False, allow_unicode=True) if params else "(no parameters given)"),
    ]


# ---- files -----------------------------------------------------------------------------------------

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
    blocks += summary_blocks(metrics) + policy_blocks(metrics) + recall + confusion_blocks(metrics, shown)
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
