"""The report's sections as document blocks, built from the metrics.json dict: the verdict (one
plain sentence, first), the strategy tables, the mixing policy, per-class recall, confusions, GAN
quality, losses, images, the recommendation and the provenance. Each `*_blocks` function returns
the `Block`s of one section; `pipeline.report.write_report` concatenates them in reading order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from pipeline.card import filter_summary
from pipeline.data import ImageTable
from pipeline.metrics import SCALAR_METRICS
from pipeline.report_document import Block
from pipeline.report_figures import confusion_figure, grid_figure, loss_figure, pairs_figure, recall_figure

METRIC_LABELS = {"accuracy": "accuracy", "balanced_accuracy": "balanced accuracy", "macro_f1": "macro-F1", "g_mean": "G-mean"}


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


def _with_ci_points(d: dict) -> str:
    return f"{_points(d['mean'])} [{_points(d['ci95'][0])}, {_points(d['ci95'][1])}]"


def _q(x, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


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
                "best non-GAN" if name == rec["baseline"] else "best GAN" if name == rec["best_gan"] else
                "within the validation noise" if name in (rec.get("within_noise") or {}) else "")
        rows.append([name, _pct(val[name]), role])
    blocks = [Block("h2", "Recommendation"), Block("p", recommendation_line(metrics)),
              Block("p", f"Rule, on validation only (the test set plays no part): {rec['rule']}.")]
    ev = rec.get("evidence")
    if ev:
        blocks.append(Block("p", f"{rec['best_gan']} minus {rec['baseline']} on validation: {_points(ev['mean'])} "
                                 f"points, bootstrap 5th-95th percentile {_points(ev['p5'])} to {_points(ev['p95'])}; "
                                 f"ahead in {100 * ev['share_positive']:.0f}% of the resampled validation sets."
                                 + (f" At this noise a lead counts from about {_points(ev['needed_lead'])} points; "
                                    "more validation images of the rare classes (data.val_fraction) lower that."
                                    if "needed_lead" in ev else "")))
    tied = rec.get("within_noise") or {}
    if tied:
        blocks.append(Block("p", f"Validation cannot put {', '.join(tied)} below {rec['baseline']} (the 95th bootstrap "
                                 "percentile of each one's lead is not below 0): with this few validation images in the rare "
                                 "classes the choice among them is not settled by the data; prefer the simplest, or add "
                                 "validation images of the rare classes."))
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


# upper ends of the class groups (real training images) in `gain_by_class_size`: on GTSRB-LT and in the
# MNIST scarcity sweep the GAN strategies lost in the classes of at most 10 images
CLASS_SIZE_EDGES = (10, 50, 200)


def gain_by_class_size(metrics: dict, strategy: str, baseline: str,
                       edges: tuple[int, ...] = CLASS_SIZE_EDGES) -> list[dict]:
    """`strategy` minus `baseline` in test recall per class (means over the seeds), summed over the
    classes of each size group (real training images, upper ends `edges`) and divided by the classes
    with test images: the groups' `points` add up to the difference in balanced accuracy. Each group
    also names the class that lost most and the one that gained most. Empty groups are left out."""
    names, counts = metrics["class_names"], metrics["train_counts"]
    a = metrics["strategies"][strategy]["per_class_recall"]["mean"]
    b = metrics["strategies"][baseline]["per_class_recall"]["mean"]
    diff = {i: a[i] - b[i] for i in range(len(names)) if a[i] is not None and b[i] is not None}
    out, low = [], 0
    for high in (*edges, None):
        members = [i for i in diff if counts[i] > low and (high is None or counts[i] <= high)]
        if members:
            worst, best = min(members, key=lambda i: diff[i]), max(members, key=lambda i: diff[i])
            out.append({"group": f"{low + 1}-{high}" if high is not None else f"over {low}", "classes": len(members),
                        "points": sum(diff[i] for i in members) / len(diff),
                        "worst": (names[worst], diff[worst]), "best": (names[best], diff[best])})
        low = high
    return out


def class_size_blocks(metrics: dict) -> list[Block]:
    """Where the validation-best GAN strategy gains or loses against the best non-GAN one, by class size."""
    rec = metrics.get("recommendation") or {}
    gan, base = rec.get("best_gan"), rec.get("baseline")
    if not gan or not base or gan not in metrics["strategies"] or base not in metrics["strategies"]:
        return []
    groups = gain_by_class_size(metrics, gan, base)
    total = sum(g["points"] for g in groups)
    rows = [["real training images", "classes", "points of balanced accuracy", "lost most", "gained most"]]
    for g in groups:
        (lost, lost_by), (gained, gained_by) = g["worst"], g["best"]
        rows.append([g["group"], str(g["classes"]), _points(g["points"]),
                     f"{lost} ({_points(lost_by)})" if lost_by < 0 else "none",
                     f"{gained} ({_points(gained_by)})" if gained_by > 0 else "none"])
    return [
        Block("h2", "Where the GAN's images help, by class size"),
        Block("p", f"{gan} (the best GAN strategy on validation) minus {base} (the best non-GAN one): test recall "
                   f"per class, mean over the seeds, summed by the classes' real training images; the groups add up "
                   f"to the difference in balanced accuracy ({_points(total)} points). Descriptive: the recommendation "
                   "uses validation only. A GAN learns little of a class from a handful of images, and a real-data "
                   "judge trained on those same images accepts samples that only resemble them, so a loss in the "
                   "smallest group points at the GAN's samples of those classes."),
        Block("table", rows=rows),
    ]


def confusion_blocks(metrics: dict, shown: list[str]) -> list[Block]:
    """Row-normalised confusion matrices of the key strategies (none, the baseline, gan)."""
    if not shown:
        return []
    return [
        Block("h2", "Confusion matrices"),
        Block("p", "Mean over seeds, each row divided by the number of test images of that class."),
        Block("figure", "confusion matrices: " + ", ".join(shown), png=confusion_figure(metrics, shown), file="confusion.png"),
    ]


def quality_blocks(metrics: dict) -> list[Block]:
    """GAN-quality table with a reading of each number, and the per-class details."""
    q = metrics.get("gan_quality")
    blocks = [Block("h2", "Quality of the synthetic images")]
    filtered = filter_summary(metrics.get("generation_filter"), metrics.get("generation_filter_rule"))
    if not q:
        why = metrics.get("skipped", {}).get("gan_quality", "no synthetic data")
        return blocks + [Block("p", f"Not measured: {why}.{filtered}")]
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
    per_class = [["class", "intra-FID", "class consistency", "precision", "recall (diversity)", "judge recall on real test"]]
    for n in names:
        per_class.append([n, _q(q["intra_fid_per_class"].get(n)), _q(q["class_consistency_per_class"].get(n)),
                          _q(q.get("precision_per_class", {}).get(n)), _q(q.get("recall_per_class", {}).get(n)),
                          _q(ref["judge_recall_per_class"].get(n))])
    return blocks + [
        Block("p", f"Feature space: {q['feature_space']}. Real test images are weighted to the synthetic class mix; "
                   f"{_scored(q['n'])}, {q['n']['test']} test images.{filtered}"),
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
    if timing and metrics.get("reused_runs"):
        timing += (f" ({metrics['reused_runs']} classifier run(s) had finished in an earlier, stopped evaluation "
                   "of the same inputs and were read back; their seconds are those of that run)")
    return [
        Block("h2", "Data versions and parameters"),
        Block("table", rows=rows),
        Block("p", f"Time: {timing}." if timing else "Time: not recorded."),
        Block("code", yaml.safe_dump(params, sort_keys=False, allow_unicode=True) if params else "(no parameters given)"),
    ]


def _scored(n: dict) -> str:
    """`20000 synthetic` or, where gan_quality scored a per-class sample, `20000 of 124000 synthetic`."""
    generated = n.get("generated", n["synthetic"])  # metrics.json of augment before the cap lacks it
    return f"{n['synthetic']} synthetic" if generated == n["synthetic"] else f"{n['synthetic']} of {generated} synthetic"
