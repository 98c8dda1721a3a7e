"""Write BENCHMARKS.md (and one plot per dataset) from benchmarks/results/*.json, so the document
always matches the result files. Run after `outcome.py` / `speed.py`: `python benchmarks/render.py`.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from pipeline import atomic  # noqa: E402
from pipeline.classifier_recipe import synthetic_per_epoch  # noqa: E402
from pipeline.recipes import filter_on  # noqa: E402
from pipeline.strategies import STRATEGIES  # noqa: E402

METRICS = ("balanced_accuracy", "accuracy", "macro_f1", "g_mean")


def _pct(m: dict) -> str:
    lo, hi = m["ci95"]
    return f"{100 * m['mean']:.2f} [{100 * lo:.2f}, {100 * hi:.2f}]"


def _auto_precision(m: dict) -> str:
    """What `precision: auto` chose on the machine's CPU (results from before bf16_features was
    recorded: AVX2-only machines, fp32)."""
    return "bf16" if m.get("bf16_faster") and m.get("bf16_features") else "fp32"


def _machine(m: dict) -> str:
    gpu = f", GPU {m['gpu']}" if m.get("gpu") else ", no GPU"
    bf16 = ", ".join(m.get("bf16_features") or [])
    isa = m["cpu_capability"] + (f", {bf16}" if bf16 else "")
    return (f"{m['cpu']} ({isa}; precision auto = {_auto_precision(m)} on CPU), {m['cores']} cores{gpu}, "
            f"torch {m['torch']}, {_code(m)}")


def _code(m: dict) -> str:
    """`augment 0.2.0 (abc1234)`; files from before the version was recorded were all made by 0.1.0."""
    if "augment" not in m:
        return "augment 0.1.0 (recorded before versions were)"
    return f"augment {m['augment']}" + (f" ({m['commit']})" if m.get("commit") else "")


def _plot(name: str, r: dict, results: Path, out_md: Path) -> str:
    """Draw `<results>/<name>.png`; return its path relative to the markdown file."""
    names = list(r["strategies"])
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4))
    means = [r["strategies"][n]["balanced_accuracy"]["mean"] for n in names]
    err = [[m - r["strategies"][n]["balanced_accuracy"]["ci95"][0] for n, m in zip(names, means)],
           [r["strategies"][n]["balanced_accuracy"]["ci95"][1] - m for n, m in zip(names, means)]]
    a.bar(names, means, yerr=err, capsize=3)
    a.set_ylim(max(0.0, min(means) - 0.1), 1.0)
    a.set_title(f"{name}: test balanced accuracy (95% CI)")
    a.tick_params(axis="x", rotation=45)
    order = sorted(range(len(r["train_counts"])), key=lambda i: -r["train_counts"][i])
    for n in names:
        rec = r["strategies"][n]["per_class_recall"]["mean"]
        b.plot(range(len(order)), [rec[i] for i in order], marker=".", label=n)
    b.set_xticks(range(len(order)), [f"{r['class_names'][i]}\n({r['train_counts'][i]})" for i in order], fontsize=6)
    b.set_title("per-class recall, classes by training count")
    b.legend(fontsize=6)
    fig.tight_layout()
    out = results / f"{name}.png"
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return os.path.relpath(out, out_md.parent)


def _workers(r: dict) -> str:
    """Evaluation processes of a run: as recorded, or what `auto` resolved to on its machine."""
    if "workers" in r and r["workers"] != "auto":
        return str(r["workers"])
    if r.get("workers") == "auto":  # since 0.5.1 metrics.json records the setting
        return "auto (free cores at run time)"
    w, threads = r["params"]["evaluate"].get("workers", 1), r["params"]["evaluate"].get("cpu_threads") or 1
    return f"auto = {max(1, r['machine']['cores'] // threads)}" if w == "auto" else str(w)


def _rows_from(r: dict) -> str:
    """What made a result's synthetic rows: its GAN, or (`outcome.py --synthetic real`) real images."""
    if not _from_gan(r):
        return f"**no GAN: the synthetic rows are {r['synthetic_source']}** (a perfect generator)"
    return f"GAN {r['params']['train_gan']['arch']}, {r['params']['train_gan']['steps']} steps"


def outcome_section(name: str, r: dict, results: Path, out_md: Path) -> list[str]:
    g = r.get("gain") or {}
    ev = r["params"].get("evaluate", {})
    lines = [f"## {name}: {r['dataset']}, profile {r['profile']}", "",
             f"- command: `{r['command']}`", f"- machine: {_machine(r['machine'])}",
             f"- date: {r['date']}; wall time {r['wall_s']:.0f} s{' (' + r['wall_note'] + ')' if r.get('wall_note') else ''}"
             f"{' without GAN training (a finished GAN of the same settings was reused)' if r.get('reused_gan') else ''}"
             f" (stages: {r.get('stage_s')}); peak RSS {r['peak_rss_mb']:.0f} MiB"
             # older results: the largest single process; newer: the process and its workers summed
             f"{' (process and evaluation workers together)' if r.get('peak_rss_scope') == 'process tree' else ''}"
             f"{'; ' + r['peak_rss_note'] if r.get('peak_rss_note') else ''}",
             # results from before evaluate.lr_schedule existed trained at a constant rate, before
             # evaluate.workers in one process
             f"- classifier {r['classifier']}, {r['epochs']} epochs (min. steps {ev.get('min_steps', 0)}), "
             f"learning rate {ev.get('lr', '?')} {ev.get('lr_schedule', 'constant')}, "
             f"{_workers(r)} worker process(es) x {ev.get('cpu_threads')} thread(s), "
             # results from before evaluate.precision trained in fp32
             f"training in {r.get('precision', 'fp32')}, "
             f"seeds {r['seeds']}; {_rows_from(r)}", ""]
    if g.get("balanced_accuracy"):
        lines += [f"**Verdict: {g['verdict']}.** `{g['strategy']}` minus `{g['baseline']}` (best non-GAN by {g['selected_by']}): "
                  f"{_pct(g['balanced_accuracy'])} points of balanced accuracy x100.", ""]
    else:
        lines += [f"**Verdict: none** ({g.get('reason')}).", ""]
    rec, sel = r.get("recommendation") or {}, r.get("selection")
    if rec.get("strategy"):
        lines += [f"**Recommended (on validation only): `{rec['strategy']}`**, because {rec['reason']}."
                  + (f" On the test set: selection regret {100 * sel['regret']:.2f} points (best on test: "
                     f"`{sel['best_on_test']}`); " + ("at or above" if sel["not_below_best_non_gan_ci"] else "below")
                     + f" the 95% CI of the best non-GAN strategy on test (`{sel['best_non_gan_on_test']}`)."
                     + (f" Picking the non-GAN strategy of lowest class-balanced validation NLL (`{sel['nll_pick']}`) "
                        f"would have had regret {100 * sel['nll_pick_regret']:.2f} points." if "nll_pick" in sel else "")
                     if sel else ""), ""]
    val = (r.get("validation") or {}).get("strategies", {})
    lines += ["| strategy | " + " | ".join(f"{m} % [95% CI]" for m in METRICS) + " | val. balanced accuracy % |",
              "|---" * (len(METRICS) + 2) + "|"]
    for n, s in r["strategies"].items():
        v = (val.get(n) or {}).get("balanced_accuracy", {}).get("mean")
        lines.append(f"| {n} | " + " | ".join(_pct(s[m]) for m in METRICS) + f" | {'-' if v is None else f'{100 * v:.2f}'} |")
    bal = r.get("balanced_test")
    if bal:
        lines += ["", f"Class-balanced test subsample ({bal['rows']} images):", "",
                  "| strategy | balanced accuracy % [95% CI] |", "|---|---|"]
        lines += [f"| {n} | {_pct(s['balanced_accuracy'])} |" for n, s in bal["strategies"].items()]
    lines += per_class_section(r)
    mp = r.get("mix_policy")
    if mp:
        lines += ["", f"Mixing policies tried on validation (chosen: `{mp['chosen']['name']}`):", "",
                  "| policy | synthetic kept | val. balanced accuracy % | val. balanced NLL |", "|---|---|---|---|"]
        lines += [f"| {p['name']}{'' if p.get('eligible', True) else ' (class-weighting probe)'} | {p['synthetic_rows']} | {100 * p['val_balanced_accuracy']:.2f} | "
                  f"{p.get('val_balanced_nll', float('nan')):.4f} |" for p in mp["grid"]]
    q = r.get("gan_quality")
    if q:
        lines += ["", f"GAN quality: class consistency {q['class_consistency']:.3f}, FID {q['fid']:.2f}, "
                      f"precision {q['precision']:.3f}, recall {q['recall']:.3f} (feature space: {q['feature_space']})."]
    d = r.get("gan_diversity_at_end")
    if d:
        lines += ["", f"Mode-collapse signal at the GAN's last evaluation (step {d['step']}): lowest sample spread "
                      f"over real spread {_lowest_spread(d)}; "
                      + (f"below {d['collapse_ratio']} (the run's collapse warning) in class(es) {', '.join(d['collapsed'])}."
                         if d["collapsed"] else f"no class below {d['collapse_ratio']}.")
                      + (f" ({r['gan_diversity_at_end_note']})" if r.get("gan_diversity_at_end_note") else "")]
    lines += ["", f"![{name}]({_plot(name, r, results, out_md)})", ""]
    return lines


def _percent_row(label: str, per_class: dict, names: list[str]) -> str:
    """A markdown table row: `label`, then each class's fraction in `per_class` as a percentage."""
    return f"| {label} | " + " | ".join(f"{100 * per_class[n]:.1f}" for n in names) + " |"


def speed_section(r: dict) -> list[str]:
    lines = ["## speed", "", f"- command: `{r['command']}`", f"- machine: {_machine(r['machine'])}", f"- date: {r['date']}"]
    if r.get("resumed_parts"):
        lines.append(f"- parts read with `--resume` from an interrupted run of the same arguments in the same workdir: "
                     f"{', '.join(r['resumed_parts'])}")
        codes = {name: r[name].get("code") for name in ("gan_train", "generate", "flops") if name in r}
        if "demo_seconds" in r:
            codes["demo"] = r.get("demo_code")  # the demo part's figures are stored flat
        lines.append("- code of each part: " + ", ".join(f"{name} {_code(code or {})}" for name, code in codes.items()))
    lines.append("")
    if "gan_train" in r:
        g = r["gan_train"]
        lines += ["| GAN training (same wall-time budget) | wall s | images/s | class consistency (judge on full real data) "
                  "| peak RSS MiB |", "|---|---|---|---|---|"]
        for key, run in g["runs"].items():
            lines.append(f"| {key}: {run['arch']} / {run['loss']} ({run['steps']} steps) | {run['wall_s']} | {run['img_per_s']} | "
                         f"{run['class_consistency']['overall']:.3f} (min class {run['class_consistency']['min']:.3f}) | {g['peak_rss_mb']:.0f} |")
        lines.append("")
        names = list(next(iter(g["runs"].values()))["class_consistency"]["per_class"])
        judge = g.get("judge_on_real_test")
        lines += ["Per-class agreement of the judge with the intended class (goal: >= 98% for every class):", "",
                  "| recipe | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        for key, run in g["runs"].items():
            lines.append(_percent_row(key, run["class_consistency"]["per_class"], names))
        if judge:
            lines.append(_percent_row("judge on real test images", judge["per_class"], names))
            lines += ["", f"Judge: small CNN on the full real training set, {100 * judge['test_accuracy']:.2f}% real test "
                          f"accuracy; recipe `{json.dumps(judge.get('recipe'), sort_keys=True)}`."]
        rescored = g.get("rescored")
        if rescored:
            prev = rescored["previous"]
            lines += ["", f"Re-judged on {rescored['date']} (`speed.py --rescore`: the same GANs, today's judge; images/s "
                          "as measured). Earlier judge's figures:", "",
                      "| recipe | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
            for key in g["runs"]:
                lines.append(_percent_row(key, prev[key]["per_class"], names))
            if prev.get("judge_on_real_test"):
                lines.append(_percent_row("earlier judge on real test images", prev["judge_on_real_test"]["per_class"], names))
        recipe = next(iter(g["runs"].values())).get("recipe")
        if recipe:
            lines += ["", f"Our recipe: `{json.dumps(recipe, sort_keys=True)}`."]
        lines.append("")
    if "generate" in r:
        peaks = r.get("flops") or {}
        lines += ["| generation | precision (ours / per-file) | shards images/s | generator only | writer only "
                  "| per-file save_image images/s | speed-up | generator MFLOP/image "
                  "| generator bound at the matmul peak of its precision, images/s |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for shape, s in r["generate"]["by_shape"].items():
            mflop = s.get("generator_mflop_per_image")
            # results from before generate.precision ran the generator in fp32
            ours = s.get("precision", "fp32")
            peak = peaks.get(f"{ours}_matmul_peak")
            bound = f"{peak / (mflop * 1e6):.0f}" if peak and mflop else "n/a"
            precision = f"{ours} / {s.get('per_file_precision', 'fp32')}"
            lines.append(f"| {shape} | {precision} | {s['shards_img_per_s']} | {s['generator_only_img_per_s']} | "
                         f"{s['writer_only_img_per_s']} | "
                         f"{s['per_file_img_per_s']} | {s['speedup']}x | {mflop if mflop else 'n/a'} | {bound} |")
        lines.append("")
    if "demo_seconds" in r:
        lines += [f"Demo (`augment run` on the default params): {r['demo_seconds']} s, peak RSS {r['demo_peak_rss_mb']:.0f} MiB.", ""]
    if "flops" in r:
        f = r["flops"]
        lines += [f"Training FLOP/s: {f['achieved_flop_per_s'] / 1e9:.2f} GFLOP/s achieved = {f['fraction_of_fp32_peak']:.1%} of "
                  f"the measured fp32 matmul peak ({f['fp32_matmul_peak'] / 1e9:.1f} GFLOP/s; bf16 matmul "
                  f"{f['bf16_matmul_peak'] / 1e9:.1f} GFLOP/s: {f['note']}).", ""]
    return lines


SHARED_CORES_BAR = 0.40  # share of the alone speed train-gan keeps beside one busy single-threaded process


def shared_cores_section(r: dict) -> list[str]:
    """train-gan alone and beside one busy single-threaded process (shared_cores.py)."""
    lines = ["## Shared cores", "", f"- command: `{r['command']}`", f"- machine: {_machine(r['machine'])}",
             "",
             "`augment train-gan` (MNIST-LT, the auto recipe) for the same steps in a fresh process, alone and "
             "with `python -c \"while True: pass\"` started beside it; images/s as the trainer logs them (startup "
             f"excluded). Share: of the fastest alone figure. Goal: >= {SHARED_CORES_BAR:.0%} beside the neighbour. "
             "`cores idle before`: how idle the machine was when the case started (other work shows here).", "",
             "| case | neighbour | threads | images/s | share of best alone | cores idle before |",
             "|---|---|---|---|---|---|"]
    for row in r["rows"]:
        lines.append(f"| {row['case']} | {'yes' if row['neighbour'] else 'no'} | {row['threads']} | "
                     f"{row['images_per_s']} | {row['share_of_best_alone']:.0%} | {row.get('cores_idle_before', '')} |")
    lines += ["", "Cases: `0.4.0` torch's default threads with libgomp's spinning wait (GOMP_SPINCOUNT=300000); "
              "`passive` the same threads with OMP_WAIT_POLICY=PASSIVE; `auto` "
              "`train_gan.cpu_threads=auto` (the cores free at the start) with PASSIVE; `auto-spin` auto with spinning."]
    return lines + [""]


def _shared_cores_rows(results: dict[str, dict]) -> list[list[str]]:
    """The shared-cores goal from shared_cores.json: the speed beside the neighbour as a share of the
    fastest alone speed, with `train_gan.cpu_threads: auto` (case auto-spin: libgomp's wait policy
    as shipped) and with the default, torch's threads (case 0.4.0)."""
    r = results.get("shared_cores")
    beside = {row["case"]: row["share_of_best_alone"] for row in (r or {}).get("rows", []) if row["neighbour"]}
    if "auto-spin" not in beside:
        return []
    auto, default = beside["auto-spin"], beside.get("0.4.0")
    status = "met with cpu_threads: auto" if auto >= SHARED_CORES_BAR else "missed"
    if default is not None and default < SHARED_CORES_BAR <= auto:
        status += " (the default, torch's threads, keeps the bytes independent of the load and misses)"
    return [[f"With one busy single-threaded neighbour on a 2-core host, train-gan keeps >= {SHARED_CORES_BAR:.0%} of its "
             "alone speed",
             f"cpu_threads auto {auto:.0%}" + (f", default {default:.0%}" if default is not None else ""),
             status, "shared_cores.json"]]


def gan_ablation_section(name: str, r: dict) -> list[str]:
    """Each limited-data GAN technique alone against the recipe (gan_ablation.py)."""
    bar = r.get("recall_bar", 0.6)
    lines = [f"## GAN ablation: {name}", "", f"- command: `{r['command']}`",
             f"- machine: {_machine(r['machine'])}{'; ' + r['wall_note'] if r.get('wall_note') else ''}",
             f"- code: {_code(r.get('code', {}))}" if r.get("code") else "", "",
             f"{r['steps']} steps each, judged by the tracker (100 EMA samples per class at each evaluation, a small CNN "
             f"trained on the real images): mean and worst-class judge agreement, mean and worst-class recall (real images inside "
             f"the samples' 3-NN manifold). `bar`: first evaluation where every class has agreement >= 0.98 and recall "
             f">= {bar}. s/step includes the tracker's evaluations; other work on the machine shows here, not in the "
             "quality figures (the weights depend only on the settings and thread count).", "",
             "| variant | settings | agreement mean | worst agreement | recall mean | worst recall | best step | bar at step | "
             "lowest spread ratio at the end | s/step |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for variant, v in r["variants"].items():
        last, settings = v["last"], ", ".join(f"{k.split('.')[-1]}={x}" for k, x in v["overrides"].items()) or "recipe"
        mean_agreement = f"{last['mean_agreement']:.3f}" if "mean_agreement" in last else "-"
        lines.append(f"| {variant} | {settings} | {mean_agreement} | {last['worst_agreement']:.3f} | {last['mean_recall']:.3f} | "
                     f"{last['worst_recall']:.3f} | {v.get('best_step')} | {v.get('steps_to_bar') or 'never'} | "
                     f"{_lowest_spread(v.get('diversity_at_end'))} | {v['s_per_step']:.3f} |")
    if any(v.get("diversity_at_end") for v in r["variants"].values()):
        lines += ["", "Lowest spread ratio: the class whose samples spread least relative to its real images at the "
                      "last evaluation (the mode-collapse signal; the run warns below 0.5)."]
    return lines + [""]


def _lowest_spread(d: dict | None) -> str:
    """`0.53 (class 9)` from a diversity_at_end record; `-` for a run recorded before it existed."""
    if not d:
        return "-"
    low = min(d["ratio"], key=d["ratio"].get)
    return f"{d['ratio'][low]:.2f} (class {low})"


REFERENCE_TEXT = "the tutorial cGAN (speed.py REFERENCE: concat MLPs, BCE, Adam beta1 0.5, no augmentation, no EMA, fp32)"


def three_x_verdict(ours_s: float | None, reference_s: float | None, reference_budget_s: float) -> str:
    """One run's reading of the goal "ours reaches the bar >= 3x sooner than the reference (or the
    reference never does within 3x our time)": "met", "missed", or "undecided" where the reference
    never reached the bar within a budget shorter than 3x our time."""
    if ours_s is None:
        return "missed"
    if reference_s is not None:
        return "met" if reference_s >= 3 * ours_s else "missed"
    return "met" if reference_budget_s >= 3 * ours_s else "undecided"


def _time_to_quality_rows(results: dict[str, dict]) -> list[list[str]]:
    """The generator goals measured by time_to_quality_mnist_lt*.json: our recipe's time to the
    0.98 / 0.7 bar on 2 threads (time_to_quality_mnist_lt.json), and, from every run that trained the
    reference and the same `ours` recipe as that file (a run of a former recipe does not count), its
    time to the 0.98 / 0.6 bar against ours (met when some run settles it and none refutes it)."""
    rows = []
    t = results.get("time_to_quality_mnist_lt")
    if t and "ours" in t["recipes"]:
        ours = t["recipes"]["ours"]
        strict = ours["seconds_to_bar"].get("0.7")
        rows.append(["MNIST-LT generator: every class consistency >= 0.98 and recall >= 0.7 within 10 min on 2 CPU cores",
                     f"{_minutes(strict)} (budget {_minutes(ours['budget_s'])}; at the end worst agreement "
                     f"{ours['curve'][-1]['worst_agreement']:.3f}, worst recall {ours['curve'][-1]['worst_recall']:.3f})",
                     "met" if strict is not None and strict <= 600 else "missed", "time_to_quality_mnist_lt.json"])
    # time_to_quality.py records each recipe's train_gan settings less its clock fields (absent in older files)
    recipe = (t or {}).get("recipes", {}).get("ours", {}).get("train_gan")
    runs = {name: r for name, r in sorted(results.items())
            if name.startswith("time_to_quality_mnist_lt") and {"ours", "reference"} <= set(r.get("recipes", {}))
            and (t is None or r["recipes"]["ours"].get("train_gan") == recipe)}
    if runs:
        measured, verdicts = [], []
        for name, r in runs.items():
            ours, ref = r["recipes"]["ours"], r["recipes"]["reference"]
            mine, theirs = ours["seconds_to_bar"].get("0.6"), ref["seconds_to_bar"].get("0.6")
            verdicts.append(three_x_verdict(mine, theirs, ref["budget_s"]))
            measured.append(f"{name}.json ({r['threads']} thread(s)): ours {_minutes(mine)}, reference {_minutes(theirs)} "
                            f"(reference budget {_minutes(ref['budget_s'])}): {verdicts[-1]}")
        status = ("missed" if "missed" in verdicts else "met" if "met" in verdicts
                  else "undecided: the reference's budget was under 3x ours")
        rows.append(["Time to quality (every class agreement >= 0.98, recall >= 0.6): ours >= 3x sooner than the reference",
                     "; ".join(measured), status, ", ".join(f"{n}.json" for n in runs)])
    return rows


GTSRB_BUDGET_S = 90 * 60  # the GTSRB natural generator goal's wall budget
GTSRB_MEAN_AGREEMENT, GTSRB_WORST_AGREEMENT, GTSRB_RECALL = 0.9, 0.7, 0.5  # and its bars


def meets_gtsrb_generator_goal(c: dict) -> bool:
    """Snapshot `c` passes the GTSRB natural generator goal's bars (the budget is checked apart)."""
    return (c["mean_agreement"] >= GTSRB_MEAN_AGREEMENT and c["worst_agreement"] >= GTSRB_WORST_AGREEMENT
            and c["mean_recall"] >= GTSRB_RECALL)


def gtsrb_generator_point(curve: list[dict]) -> dict | None:
    """The first snapshot within GTSRB_BUDGET_S that meets the GTSRB natural generator goal (mean
    agreement >= 0.90, every class >= 0.70, mean recall >= 0.5), else the last one within it."""
    inside = [c for c in curve if c["seconds"] <= GTSRB_BUDGET_S]
    return next((c for c in inside if meets_gtsrb_generator_goal(c)), inside[-1] if inside else None)


def _gtsrb_generator_row(results: dict[str, dict]) -> list[list[str]]:
    """The GTSRB natural generator goal, from every time_to_quality_gtsrb* run: the recipe whose
    snapshot within 90 min meets it first, else the one with the highest mean agreement there."""
    points = []
    for stem, r in results.items():
        if not stem.startswith("time_to_quality_gtsrb") or r.get("long_tail") != "natural":
            continue
        for recipe, v in r["recipes"].items():
            point = gtsrb_generator_point(v["curve"])
            if point:
                points.append((stem, recipe, r["threads"], point))
    if not points:
        return []
    met = meets_gtsrb_generator_goal
    stem, recipe, threads, c = min(points, key=lambda p: (not met(p[3]), p[3]["seconds"] if met(p[3]) else
                                                           -p[3]["mean_agreement"]))
    status = "met" if met(c) else (
        f"missed: mean agreement {c['mean_agreement']:.2f} of {GTSRB_MEAN_AGREEMENT:.2f}, worst "
        f"{c['worst_agreement']:.2f} of {GTSRB_WORST_AGREEMENT:.2f}, mean recall {c['mean_recall']:.2f} of {GTSRB_RECALL}")
    real = results[stem].get("real_ceiling")
    if real and not met(c):  # what held-out real images score on the same referee: where the bars sit
        status += (f" (real test images in place of the samples: mean agreement {real['mean_agreement']:.2f}, "
                   f"worst {real['worst_agreement']:.2f}, mean recall {real['mean_recall']:.2f})")
    return [[f"GTSRB natural generator: consistency >= {GTSRB_MEAN_AGREEMENT:.2f} overall, every class >= "
             f"{GTSRB_WORST_AGREEMENT:.2f}, recall >= {GTSRB_RECALL}, within {GTSRB_BUDGET_S // 60} min on 2 CPU cores",
             f"{recipe} at {_minutes(c['seconds'])} ({c['step']} steps, {threads} thread(s)): mean agreement "
             f"{c['mean_agreement']:.2f}, worst {c['worst_agreement']:.2f}, mean recall {c['mean_recall']:.2f}",
             status, f"{stem}.json"]]


GTSRB_LT_CONSISTENCY = 0.80


def _gtsrb_lt_consistency_row(results: dict[str, dict]) -> list[list[str]]:
    """Issue 23's GTSRB-LT bar: the class consistency (`gan_quality`, the evaluation's real-data
    judge) of the GAN the GTSRB-LT goal run trained; [] without one."""
    name = goal_run(results, "gtsrb_lt")
    q = (results.get(name) or {}).get("gan_quality") or {}
    if q.get("class_consistency") is None:
        return []
    c = q["class_consistency"]
    per_class = [v for v in (q.get("class_consistency_per_class") or {}).values() if v is not None]
    worst = f", worst class {min(per_class):.3f}" if per_class else ""
    params = results[name].get("params") or {}
    if filter_on((params.get("generate") or {}).get("filter", {}).get("enabled", False),
                 (params.get("train_gan") or {}).get("recipe", "")):
        worst += " (the set the generation filter kept: its judge and this one are both real-data CNNs)"
    status = "met" if c >= GTSRB_LT_CONSISTENCY else f"missed by {GTSRB_LT_CONSISTENCY - c:.3f}"
    # a higher figure from a run of another configuration on the same data (not shipped: see its note)
    others = {n: (r.get("gan_quality") or {}).get("class_consistency") for n, r in results.items()
              if n != name and r.get("profile") == results[name].get("profile")
              and r.get("dataset") == results[name].get("dataset") and _from_gan(r)}
    above = sorted((n for n, v in others.items() if v is not None and v >= GTSRB_LT_CONSISTENCY), key=lambda n: -others[n])
    if above and c < GTSRB_LT_CONSISTENCY:
        status += ("; reached by configurations not shipped (each note says why): "
                   + ", ".join(f"{others[n]:.3f} in {n}.json" for n in above))
    return [[f"GTSRB-LT generator: class consistency >= {GTSRB_LT_CONSISTENCY:.2f}", f"{c:.3f}{worst}", status,
             f"{name}.json"]]


def _minutes(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds / 60:.1f} min"


def time_to_quality_section(name: str, r: dict, results: Path, out_md: Path) -> list[str]:
    """Wall time until every class passes the agreement and recall bars, per recipe (time_to_quality.py)."""
    bars = r["recall_bars"]
    rel = lambda f: os.path.relpath(results / f, out_md.parent)  # noqa: E731
    lines = [f"## Time to quality: {name}", "", f"- command: `{r['command']}`", f"- machine: {_machine(r['machine'])}",
             *([f"- note: {r['note']}"] if r.get("note") else []), "",
             f"Each recipe runs `augment train-gan` ({r['dataset']}, profile {r['long_tail']}, {r['threads']} threads) "
             "for a fixed wall time; the clock starts with the process, so start-up, data loading and checkpoints "
             f"count. Every checkpoint's EMA generator draws {r['samples_per_class']} fixed samples per class, scored "
             f"afterwards by the referee (a small CNN trained on the full real training set, "
             f"{100 * r['judge_on_real_test']['test_accuracy']:.2f}% on real test images): agreement with the intended "
             "class, and recall of the class's real training images inside the samples' 3-NN manifold. "
             f"Bar: every class agreement >= {r['agreement_bar']} and recall >= the figure named.", "",
             "| recipe | settings | steps in budget | s/step | first checkpoint | " +
             " | ".join(f"bar, recall >= {b}" for b in bars) +
             " | at the end: worst agreement | mean agreement | worst recall | mean recall |",
             "|---|---|---|---|---|" + "---|" * len(bars) + "---|---|---|---|"]
    for recipe, v in r["recipes"].items():
        last = v["curve"][-1]
        settings = (REFERENCE_TEXT if recipe == "reference" else
                    ", ".join(f"{k}={x}" for k, x in v["overrides"].items()) or "the auto recipe")
        lines.append(f"| {recipe} | {settings} | {v['steps_reached']} in {_minutes(v['budget_s'])} | {v['s_per_step']} | "
                     f"{v['first_snapshot_s']:.0f} s | " + " | ".join(_minutes(v["seconds_to_bar"][str(b)]) for b in bars) +
                     f" | {last['worst_agreement']:.3f} | {last['mean_agreement']:.3f} | {last['worst_recall']:.3f} | "
                     f"{last['mean_recall']:.3f} |")
    ceiling = r.get("real_ceiling")
    if ceiling:
        lines.append("| real test images in place of the samples (the ceiling) | - | - | - | - | " + "- | " * len(bars) +
                     f"{ceiling['worst_agreement']:.3f} | {ceiling['mean_agreement']:.3f} | {ceiling['worst_recall']:.3f} | "
                     f"{ceiling['mean_recall']:.3f} |")
    lines += ["", f"![consistency and recall against wall time]({rel(name + '.png')})", "",
              "Per class at the end (agreement / recall):", "",
              "| recipe | " + " | ".join(str(c) for c in range(len(last["agreement"]))) + " |",
              "|---|" + "---|" * len(last["agreement"])]
    for recipe, v in r["recipes"].items():
        end = v["curve"][-1]
        lines.append(f"| {recipe} | " + " | ".join(f"{a:.2f} / {c:.2f}" for a, c in zip(end["agreement"], end["recall"])) + " |")
    if ceiling:
        lines.append("| real test images | " + " | ".join(f"{a:.2f} / {c:.2f}" for a, c in
                                                     zip(ceiling["agreement"], ceiling["recall"])) + " |")
    lines += ["", "Samples of the last checkpoint, one row per class (10 fixed noise vectors):", ""]
    lines += [f"- {recipe}: ![{recipe} samples]({rel(v['grid'])})" for recipe, v in r["recipes"].items()]
    return lines + [""]


def precision_section(r: dict) -> list[str]:
    """fp32 against bf16 for the GAN step, the generator and the classifier (precision.py)."""
    rows = [("GAN step (sngan 28x28, width 16, batch 64), steps/s", r["gan_step_per_s"])]
    rows += [(f"generator eval forward {shape} (width 16, batch 256), images/s", v)
             for shape, v in r["generator_img_per_s"].items()]
    rows.append(("small_cnn Adam step (28x28, batch 32, one thread), images/s", r["classifier_img_per_s"]))
    lines = ["## precision", "", f"- command: `{r['command']}`", f"- machine: {_machine(r['machine'])}",
             f"- date: {r['date']}; `precision: auto` resolves to **{r['auto']}** on this CPU", "",
             "bf16: autocast for the training steps; the generator runs with its weights in bf16, as "
             "`generate` does (files from before 0.2.0 measured it under autocast; from 0.3.0 it is the "
             "fused one-class forward, `pipeline.generate.class_forward`, in both precisions).", "",
             "| what | fp32 | bf16 | bf16 / fp32 |", "|---|---|---|---|"]
    for what, v in rows:
        lines.append(f"| {what} | {v['fp32']} | {v['bf16']} | {v['bf16'] / v['fp32']:.2f}x |")
    if r.get("pixel_change"):
        lines += ["", "Trained generators, bf16 images against fp32 ones (same seeds; levels of 255):", "",
                  "| generator | images | pixels moved | moved by > 1 level | mean levels | max levels |",
                  "|---|---|---|---|---|---|"]
        for path, c in r["pixel_change"].items():
            lines.append(f"| `{path}` ({'x'.join(map(str, c['image_shape']))}) | {c['images']} | {c['fraction_moved']:.1%} "
                         f"| {c['fraction_moved_more_than_one']:.2%} | {c['mean_levels']} | {c['max_levels']} |")
    return lines + [""]


# the strong cheap baselines a gain goal is measured against (the outcome issue's honest bar): a
# run without one of them cannot settle the goal, whatever its gain over the baselines it had
STRONG_BASELINES = ("logit_adjust", "drw", "mixup_drw")
# the classifier seeds a gain goal asks for (the outcome issue: ">= 5 seeds, paired CI")
GOAL_SEEDS = 5


def _collapse_rows(results: dict[str, dict]) -> list[list[str]]:
    """The generator issue's "no mode-collapse warning at the end of the benchmark runs", over
    every outcome run that trained its GAN and recorded the signal at its last evaluation
    (`gan_diversity_at_end`: each class's sample spread over its real spread)."""
    runs = {n: r["gan_diversity_at_end"] for n, r in sorted(results.items())
            if r.get("gan_diversity_at_end") and not r.get("reused_gan")}
    if not runs:
        return []
    some = next(iter(runs.values()))
    bad = {n: d for n, d in runs.items() if d["collapsed"]}
    def classes(d: dict) -> str:
        low = sorted(d["collapsed"], key=lambda c: d["ratio"][c])
        named = ", ".join("%s (%.2f)" % (c, d["ratio"][c]) for c in low[:3])
        return f"class {named}" if len(low) <= 3 else f"{len(low)} of {len(d['ratio'])} classes, lowest {named}"
    status = "met" if not bad else "missed: " + "; ".join(f"{n} {classes(d)}" for n, d in bad.items())
    return [[f"No mode-collapse warning at the end of the benchmark runs (every class's sample spread >= "
             f"{100 * some['collapse_ratio']:.0f}% of its real images)",
             f"{len(runs) - len(bad)} of {len(runs)} runs without", status, ", ".join(f"{n}.json" for n in runs)]]


def _gain_row(results: dict[str, dict], name: str, goal: str, need: float) -> list[str]:
    """Goal row for `gan(_policy) - best non-GAN >= need` (a fraction), CI above 0. A run that lacks
    one of STRONG_BASELINES, or has fewer than GOAL_SEEDS seeds, says so: not settled when met, the
    shortfall kept when missed."""
    r = results.get(name) or {}
    d = (r.get("gain") or {}).get("balanced_accuracy")
    if not d:
        return [goal, "-", "not measured", f"{name}.json"]
    met = d["mean"] >= need and d["ci95"][0] > 0
    short = max(need - d["mean"], -d["ci95"][0])  # the mean below the goal, or the CI's low end below 0
    absent = [s for s in STRONG_BASELINES if s not in r.get("strategies", {})]
    lacks = [f"the run has no {', '.join(absent)} baseline"] if absent else []
    seeds = len(r.get("seeds") or d.get("per_seed") or [])
    if seeds < GOAL_SEEDS:
        lacks.append(f"{seeds} seeds of the {GOAL_SEEDS} the goal asks")
    status = "met" if met else f"missed by {100 * short:.1f} points"
    if lacks:
        status = "; ".join(["not settled" if met else status, *lacks])
    if r.get("goal_note"):  # what the figure alone does not say, written by hand into the result file
        status += f"; {r['goal_note']}"
    return [goal, _gain_text(r), status, f"{name}.json"]


def _points(x: float) -> str:
    return f"{100 * x:+.2f}"


# the runs a dataset's goals read, the shipped GAN recipe's first: the first present is the goals'
# (mnist_lt and usps_lt are the former recipe's runs: sngan width 16, class head 1.0, no mode seeking)
# (mnist_lt_share and usps_lt_share: the default synthetic share, each reusing the GAN of the run after it;
# the time goal reads the first run that trained its GAN, `whole_run`)
# (mnist_lt_shipped: the shipped recipe end to end, GAN trained in the run, classifiers at the default
# 15 epochs, the strong baselines: the whole benchmark the time goal means; mnist_lt_shipped_seeds10:
# its GAN and its 5 seeds' runs reused, 5 more seeds; usps_lt_shipped: the same for USPS-LT, 10 seeds;
# usps_lt_shipped_seeds30: its GAN and 10 seeds reused, 20 more, as 10 seeds' CI was wider than the ceiling's gain;
# usps_lt_ms: the tiny_gray recipe (the demo's with mode seeking) on those 30 seeds)
# (gtsrb_filter_only, gtsrb_lt_filter_only: the shipped GTSRB GANs with the generation filter as shipped for
# colour (enabled: auto, fill false); gtsrb_guide_ms: GTSRB natural with the small_color recipe (guidance, mode seeking) against the
# strong runs' best baseline; gtsrb_strong, gtsrb_lt_strong: GTSRB natural and rho=100 with the strong
# baselines and the recipe before guidance; gtsrb_lt_guide_ms: GTSRB-LT with the shipped recipe; gtsrb,
# gtsrb_lt: the 0.1.0 runs)
GOAL_RUNS = {"mnist_lt": ("mnist_lt_shipped_seeds10", "mnist_lt_shipped", "mnist_lt_epochs15", "mnist_lt_share", "mnist_lt_diverse_gan", "mnist_lt"),
             "usps_lt": ("usps_lt_ms", "usps_lt_shipped_seeds30", "usps_lt_shipped", "usps_lt_seeds10", "usps_lt_share", "usps_lt_diverse_gan", "usps_lt"),
             "gtsrb": ("gtsrb_steps13000", "gtsrb_filter_only", "gtsrb_guide_ms", "gtsrb_strong", "gtsrb"),
             "gtsrb_lt": ("gtsrb_lt_steps13000", "gtsrb_lt_filter_only", "gtsrb_lt_guide_ms", "gtsrb_lt_strong", "gtsrb_lt")}


def goal_run(results: dict[str, dict], dataset: str) -> str:
    """The result name `dataset`'s goals read (GOAL_RUNS), or `dataset` itself when none is present."""
    return next((n for n in GOAL_RUNS.get(dataset, ()) if n in results), dataset)


def whole_run(results: dict[str, dict], dataset: str) -> str | None:
    """The first of `dataset`'s GOAL_RUNS that trained its GAN (not `reused_gan`): the one whose wall
    time is the whole benchmark's; None when none is present."""
    return next((n for n in GOAL_RUNS.get(dataset, (dataset,)) if n in results and not results[n].get("reused_gan")), None)


def _cpu(machine: dict) -> str:
    """`Intel(R) Xeon(R) Processor, AVX512, bf16`: the CPU a timed figure depends on."""
    return ", ".join(str(v) for v in (machine.get("cpu"), machine.get("cpu_capability"), _auto_precision(machine)) if v)


def _whole_wall(m: dict) -> tuple[float, str]:
    """(seconds, note) of a whole run: wall_s plus the time of an earlier run it resumed (wall_s_earlier)."""
    earlier = m.get("wall_s_earlier") or 0.0
    note = f", incl. {earlier / 60:.1f} min of an earlier run it resumed" if earlier else ""
    return m["wall_s"] + earlier, note


def _from_gan(r: dict) -> bool:
    """Whether a result's synthetic rows were a GAN's (not `outcome.py --synthetic real`'s real images)."""
    return r.get("synthetic_source", "gan") == "gan"


def _ceiling_runs(results: dict[str, dict]) -> list[tuple[str, dict, dict]]:
    """(name, result, its gain's balanced-accuracy figures) of every run with real images in place
    of the GAN's (`outcome.py --synthetic real`) that has a gain, by name."""
    return [(name, r, g) for name, r in sorted(results.items())
            if not _from_gan(r) and (g := (r.get("gain") or {}).get("balanced_accuracy"))]


def _with_ceiling(row: list[str], results: dict[str, dict], run: str) -> list[str]:
    """`run`'s gain row with the ceiling beside its status: the validation-best gain of a run on
    the same data and profile with real images in place of the GAN's (`ceiling_section`)."""
    r = results.get(run) or {}
    for name, c, g in _ceiling_runs(results):
        if (c.get("dataset"), c.get("profile")) == (r.get("dataset"), r.get("profile")):
            return [*row[:2], f"{row[2]}; with real images in place of the GAN's {c['gain']['strategy']} "
                    f"{_points(g['mean'])} (CI {_points(g['ci95'][0])}..{_points(g['ci95'][1])}, {name}.json)", row[3]]
    return row


def goals_section(results: dict[str, dict]) -> list[str]:
    """One table: each goal of the benchmark issue, the measured figure, met or by how much missed."""
    mnist = goal_run(results, "mnist_lt")
    rows = [_with_ceiling(_gain_row(results, mnist, "MNIST-LT: validation-best GAN strategy >= best non-GAN + "
                                    "1.0 pt, CI above 0", 0.01), results, mnist)]
    m = results.get(mnist)
    if m and m.get("gain", {}).get("strategy"):
        ba = m["strategies"][m["gain"]["strategy"]]["balanced_accuracy"]["mean"]
        rows.append(["MNIST-LT: GAN strategy balanced accuracy >= 97.5%", f"{100 * ba:.2f}%",
                     "met" if ba >= 0.975 else f"missed by {100 * (0.975 - ba):.2f} points", f"{mnist}.json"])
    checked = {n: r["selection"] for n, r in results.items() if r.get("selection") and _from_gan(r)}
    if checked:
        median = statistics.median(100 * c["regret"] for c in checked.values())
        below = [n for n, c in checked.items() if c["not_below_best_non_gan_ci"] is False]
        files = ", ".join(f"{n}.json" for n in checked)
        rows.append(["Recommendation never below the best non-GAN strategy's test CI",
                     f"{len(checked) - len(below)} of {len(checked)} runs", "met" if not below else
                     f"missed on {', '.join(below)}", files])
        rows.append(["Median selection regret <= 0.3 pt", f"{median:.2f} pt over {len(checked)} run(s)",
                     "met" if median <= 0.3 else f"missed by {median - 0.3:.2f} pt", files])
    timed = whole_run(results, "mnist_lt")
    if timed:
        t = results[timed]
        wall, note = _whole_wall(t)
        rows.append(["MNIST-LT: whole benchmark <= 30 min on 2 CPU cores",
                     f"{wall / 60:.1f} min ({len(t['seeds'])} seeds{note}"
                     + (f"; {_cpu(t['machine'])}" if t.get("machine") else "") + ")",
                     "met" if wall <= 1800 else f"missed by {(wall - 1800) / 60:.1f} min", f"{timed}.json"])
    elif m:
        rows.append(["MNIST-LT: whole benchmark <= 30 min on 2 CPU cores", "GAN reused: not the whole run",
                     "not measured", f"{mnist}.json"])
    usps = goal_run(results, "usps_lt")
    rows.append(_with_ceiling(_gain_row(results, usps, "USPS-LT: gain over the best non-GAN strategy, CI above 0",
                                        0.0), results, usps))
    rows.append(_gain_row(results, goal_run(results, "gtsrb"), "GTSRB natural: gain over the best non-GAN strategy, CI above 0", 0.0))
    rows.append(_gain_row(results, goal_run(results, "gtsrb_lt"), "GTSRB-LT: gain >= +2 pt", 0.02))
    sp = results.get("speed") or {}
    t, gen = sp.get("gan_train"), sp.get("generate")
    if t:
        ratio = t["augment_img_per_s"] / t["reference_img_per_s"]
        rows.append(["GAN training >= 3x the reference's images/s at equal or better class consistency",
                     f"{ratio:.2f}x ({t['augment_img_per_s']} vs {t['reference_img_per_s']} img/s), consistency "
                     f"{t['augment_class_consistency']} vs {t['reference_class_consistency']}",
                     "met" if ratio >= 3 and t["augment_class_consistency"] >= t["reference_class_consistency"]
                     else "missed on speed" if t["augment_class_consistency"] >= t["reference_class_consistency"] else "missed",
                     "speed.json"])
    if gen:
        speedup = gen["shards_img_per_s"] / gen["per_file_img_per_s"]
        ok = speedup >= 10 and gen["shards_img_per_s"] >= 5000
        rows.append(["Shards >= 10x a per-file loop and >= 5,000 images/s at 28x28",
                     f"{gen['shards_img_per_s']:.0f} img/s, {speedup:.1f}x per-file", "met" if ok else "missed", "speed.json"])
    if "demo_seconds" in sp:
        rows.append(["`make demo` <= 300 s after install", f"{sp['demo_seconds']:.0f} s",
                     "met" if sp["demo_seconds"] <= 300 else "missed", "speed.json"])
    rows += _time_to_quality_rows(results)
    rows += _gtsrb_generator_row(results)
    rows += _gtsrb_lt_consistency_row(results)
    rows += _collapse_rows(results)
    rows += _shared_cores_rows(results)
    table = ["| goal | measured | status | result file |", "|---|---|---|---|"]
    table += ["| " + " | ".join(r) + " |" for r in rows]
    return ["## Goals", "", "From the benchmark issue; each figure is from the result file named, whose section "
            "below gives its command and machine.", "", *table, ""]


def _ba(r: dict, strategy: str) -> float | None:
    s = r.get("strategies", {}).get(strategy)
    return s["balanced_accuracy"]["mean"] if s else None


def _gain_text(r: dict) -> str:
    g = r.get("gain") or {}
    d = g.get("balanced_accuracy")
    if not d:
        return "no gain measured"
    return (f"{g['strategy']} {_points(d['mean'])} points vs {g['baseline']} (CI {_points(d['ci95'][0])}.."
            f"{_points(d['ci95'][1])}, {len(d['per_seed'])} seeds)")


MAX_CLASS_COLUMNS = 12


def per_class_section(r: dict) -> list[str]:
    """Test recall per class (training images per class in the header) of the gain's GAN strategy,
    its baseline and the best strategy on test: where the synthetic images add or cost accuracy."""
    g, sel = r.get("gain") or {}, r.get("selection") or {}
    names = list(dict.fromkeys(n for n in (g.get("strategy"), g.get("baseline"), sel.get("best_on_test"))
                               if n and "per_class_recall" in r["strategies"].get(n, {})))
    counts, classes = r.get("train_counts"), r.get("class_names")
    if not names or not counts or not classes:
        return []
    n_train = [counts[i] if isinstance(counts, list) else counts.get(c, 0) for i, c in enumerate(classes)]
    # many classes: the MAX_CLASS_COLUMNS rarest, rarest last as in a long-tail profile
    shown = sorted(range(len(classes)), key=lambda i: -n_train[i])[-MAX_CLASS_COLUMNS:]
    some = "" if len(shown) == len(classes) else f", the {len(shown)} rarest of {len(classes)} classes"
    out = ["", f"Test recall per class, % (training images in brackets{some}):", "",
           "| strategy | " + " | ".join(f"{classes[i]} ({n_train[i]})" for i in shown) + " |",
           "|---" * (len(shown) + 1) + "|"]
    for n in names:
        recall = r["strategies"][n]["per_class_recall"]["mean"]
        out.append(f"| {n} | " + " | ".join(f"{100 * recall[i]:.1f}" for i in shown) + " |")
    return out


def _gan_text(r: dict) -> str:
    """Recipe and sample quality of the result's GAN, from its params and gan_quality."""
    t, q = r["params"]["train_gan"], r.get("gan_quality") or {}
    recipe = (f"{t['arch']} width {t['width']}, {t['steps']} steps, class head {t.get('aux_weight', 0)}, "
              f"DiffAugment {t.get('diffaug') or 'off'}, EMA warm-up {t.get('ema_warmup')}")
    if t.get("ms_weight"):
        recipe += f", mode seeking {t['ms_weight']}"
    if t.get("guide_weight"):
        until = t.get("guide_until", 1.0)
        recipe += f", classifier guidance {t['guide_weight']}" + (f" until p >= {until}" if until < 1 else "")
    quality = f"class consistency {q['class_consistency']:.3f}, FID {q['fid']:.1f}" if q.get("fid") is not None else ""
    return f"{recipe}; {quality}" if quality else recipe


def _gan_vs_baseline(r: dict) -> str:
    base = (r.get("gain") or {}).get("baseline") or "none"
    return f"`gan` alone {100 * _ba(r, 'gan'):.2f}% vs {base} {100 * _ba(r, base):.2f}%"


def ceiling_section(results: dict[str, dict]) -> list[str]:
    """Runs whose synthetic rows were real images the profile left out (`outcome.py --synthetic
    real`): what a perfect generator adds under the same strategies, beside the GAN runs' gain."""
    rows = []
    for name, r, g in _ceiling_runs(results):
        gan, base = _test_best(r, True), _test_best(r, False)
        short = r.get("real_short") or {}
        fewer = (" (fewer real images than the plan: " + ", ".join(f"{c} {had:,} of {asked:,}" for c, (asked, had)
                                                                   in short.items()) + ")") if short else ""
        rows.append(f"| `{name}.json` | {r['dataset']} {r['profile']}{fewer} | {len(r['seeds'])} | "
                    f"{r['gain']['strategy']} {_points(g['mean'])} [{_points(g['ci95'][0])}, {_points(g['ci95'][1])}] "
                    f"vs {r['gain']['baseline']} | {gan} {100 * _ba(r, gan):.2f}% vs {base} {100 * _ba(r, base):.2f}%: "
                    f"{_points(_ba(r, gan) - _ba(r, base))} | {(r.get('recommendation') or {}).get('strategy') or '-'} |")
    if not rows:
        return []
    return ["## The ceiling: real images in place of the GAN's", "",
            "The same pipeline with the synthetic release filled with real training images that the long-tail "
            "profile left out (`benchmarks/outcome.py --synthetic real`): as many rows per class as the plan "
            "asks, drawn by the same strategies. These are the samples a perfect generator of the data's "
            "distribution would give, so a gain goal above this ceiling is out of a better GAN's reach under "
            "these strategies and this classifier (rows aimed at the classifier's mistakes, M2m-style, or "
            "another classifier could differ). The last column is what the validation-only recommendation "
            "chose.", "",
            "| result | data | seeds | validation-best strategy using the rows, gain in points [95% CI] "
            "| test-best using the rows vs test-best without, balanced accuracy | recommended |",
            "|---|---|---|---|---|---|",
            *rows, ""]


def tried_section(results: dict[str, dict]) -> list[str]:
    """For each missed goal, what the result files show was tried, with their figures."""
    out = []
    m = results.get("mnist_lt")
    if m and _ba(m, "gan") is not None and m.get("mix_policy"):
        grid = m["mix_policy"].get("grid", [])
        tried = ", ".join(sorted({p["name"] for p in grid}))
        out.append(f"- **MNIST-LT gain, the former recipe** (`mnist_lt.json`): GAN {_gan_text(m)}. Plan: every class filled to "
                   f"{m['params']['plan']['sampling_strategy']}. Filter, ratio and loss weight searched on validation "
                   f"({tried}); chosen `{m['mix_policy']['chosen']['name']}`. Result {_gain_text(m)}; "
                   f"{_gan_vs_baseline(m)}.")
    for name, what in (("mnist_lt_epochs15", "MNIST-LT, the shipped small_gray GAN, classifiers at the default 15 "
                        "epochs (the runs below: 6)"),
                       ("mnist_lt_epochs15_pool3", "MNIST-LT, the same at 15 epochs, a pool 3x the plan (fresh "
                        "images every epoch)"),
                       ("mnist_lt_hard4_seeds10", "MNIST-LT, the shipped GAN, hard synthetic draws "
                        "(evaluate.synthetic_candidates 4), 10 seeds"),
                       ("mnist_lt_shipped_ratio4", "MNIST-LT, the shipped GAN, at most 4 synthetic rows per real row "
                        "of a class an epoch (evaluate.synthetic_ratio 4)"),
                       ("mnist_lt_hard4", "MNIST-LT, the shipped GAN, hard synthetic draws (evaluate.synthetic_candidates 4)"),
                       ("mnist_lt_diverse_gan", "MNIST-LT, the shipped small_gray recipe (mode seeking, 12,000 steps)"),
                       ("mnist_lt_diverse_gan_fill_2000", "MNIST-LT, the same GAN, every class filled to 2,000 "
                        "(13,000 synthetic rows per epoch)"),
                       ("mnist_lt_diverse_gan_fill_all", "MNIST-LT, the same GAN, every class filled to the largest "
                        "(plan auto: 31,000 synthetic rows per epoch instead of 5,000)"),
                       ("usps_lt_diverse_gan", "USPS-LT, the shipped demo recipe"),
                       ("usps_lt_seeds10", "USPS-LT, the shipped demo recipe's GAN, 10 classifier seeds"),
                       ("usps_lt_guide_ms", "USPS-LT, the demo recipe with classifier guidance and mode seeking, 30 seeds"),
                       ("usps_lt_ms", "USPS-LT, the demo recipe with mode seeking 0.3 (the tiny_gray recipe since), 30 seeds"),
                       ("usps_lt_guide", "USPS-LT, the demo recipe with classifier guidance, 30 seeds"),
                       ("usps_lt_steps6000", "USPS-LT, the demo recipe trained for 6,000 steps, 30 seeds"),
                       ("mnist_lt_selection_seeds3", "MNIST-LT, policy chosen on 3 classifier seeds per grid point"),
                       ("mnist_lt_long_gan", "MNIST-LT, 3x the GAN steps"),
                       ("mnist_lt_long_gan_selection_seeds3", "MNIST-LT, 3x the GAN steps, policy chosen on 3 seeds"),
                       ("mnist_lt_mixup_real", "MNIST-LT, the shipped GAN, with gan_mixup_drw_real_prior (DRW's late "
                        "weights from the real rows' counts)"),
                       ("gtsrb_mixup_real", "GTSRB natural, the shipped small_color GAN, with gan_mixup_drw_real_prior"),
                       ("gtsrb_filter_only", "GTSRB natural, the shipped GAN with the generation filter as shipped "
                        "for colour (short classes keep fewer rows)"),
                       ("gtsrb_filter", "GTSRB natural, the shipped GAN, the filter filling short classes with their "
                        "best rejected samples"),
                       ("gtsrb_filter_mixup", "GTSRB natural, the filtered set inside mixup_drw's recipe"),
                       ("gtsrb_steps13000", "GTSRB natural, the shipped small_color recipe trained 13,000 steps "
                        "(shipped: 4,000), its set filtered as shipped"),
                       ("gtsrb_steps13000_mixprior", "GTSRB natural, the 13,000-step GAN's set with gan_mixup_drw "
                        "(the mix prior)"),
                       ("gtsrb_strong", "GTSRB natural, the small_color recipe before guidance, the strong baselines"),
                       ("gtsrb_guide", "GTSRB natural, the same recipe with classifier guidance (train_gan.guide_weight)"),
                       ("gtsrb_guide_until", "GTSRB natural, classifier guidance capped at p 0.5 (train_gan.guide_until)"),
                       ("gtsrb_guide_ms", "GTSRB natural, classifier guidance with mode seeking (the small_color recipe since)"),
                       ("gtsrb_lt_filter_only", "GTSRB-LT, the shipped GAN with the generation filter as shipped "
                        "for colour"),
                       ("gtsrb_lt_filter_mixup", "GTSRB-LT, the filtered set inside mixup_drw's recipe"),
                       ("gtsrb_lt_steps13000", "GTSRB-LT, the shipped small_color recipe trained 13,000 steps, "
                        "its set filtered as shipped"),
                       ("gtsrb_lt_steps25000", "GTSRB-LT, the small_color recipe trained 25,000 steps (the "
                        "13,000-step GAN trained on), its set filtered as shipped"),
                       ("gtsrb_lt_gsr", "GTSRB-LT, the 13,000-step small_color recipe with group spectral "
                        "regularisation of G's class-conditional BatchNorm (train_gan.gsr_weight 0.5)"),
                       ("gtsrb_lt_transition", "GTSRB-LT, the 13,000-step small_color recipe with transitional "
                        "conditioning (unconditional until step 1,000, the class blended in over 4,000 steps)"),
                       ("gtsrb_lt_lecam", "GTSRB-LT, the 13,000-step small_color recipe with LeCam "
                        "regularisation of D (train_gan.lecam_weight 0.3)"),
                       ("gtsrb_lt_embed_noise", "GTSRB-LT, the 13,000-step small_color recipe with noise on G's "
                        "class embeddings (train_gan.embed_noise 0.1)"),
                       ("gtsrb_lt_even", "GTSRB-LT, the 13,000-step GAN's rows spread evenly over every class "
                        "(evaluate.synthetic_spread even, a plan filling each class to 360)"),
                       ("gtsrb_lt_steps13000_late", "GTSRB-LT, the 13,000-step GAN's set used late: gan_drw (DRW "
                        "phase only) and gan_crt (head re-training only)"),
                       ("gtsrb_lt_steps13000_ratio1", "GTSRB-LT, the 13,000-step GAN's set, at most 1 synthetic row "
                        "per real row of a class an epoch (evaluate.synthetic_ratio 1)"),
                       ("gtsrb_lt_steps13000_ratio4", "GTSRB-LT, the 13,000-step GAN's set, at most 4 synthetic rows "
                        "per real row of a class an epoch (evaluate.synthetic_ratio 4)"),
                       ("gtsrb_lt_steps13000_mixprior", "GTSRB-LT, the 13,000-step GAN's set with the mix-prior "
                        "strategies (gan_la, gan_mixup_drw)"),
                       ("gtsrb_lt_steps13000_judges2", "GTSRB-LT, the 13,000-step GAN's set filtered by two judges "
                        "(generate.filter.judges 2)"),
                       ("gtsrb_lt_filter_share0.1", "GTSRB-LT, the filtered set at a synthetic share of 0.1"),
                       ("gtsrb_lt_strong", "GTSRB-LT, the small_color recipe before guidance, the strong baselines"),
                       ("gtsrb_lt_guide", "GTSRB-LT, the same recipe with classifier guidance (train_gan.guide_weight)"),
                       ("gtsrb_lt_guide_ms", "GTSRB-LT, the small_color recipe as shipped (guidance, mode seeking)"),
                       ("gtsrb_lt", "GTSRB-LT gain"), ("gtsrb_lt_no_class_head", "GTSRB-LT, no class head"),
                       ("gtsrb", "GTSRB natural imbalance"), ("usps_lt", "USPS-LT"),
                       ("usps_lt_demo_recipe", "USPS-LT, the demo recipe")):
        r = results.get(name)
        if r and "params" in r and (r.get("gain") or {}).get("balanced_accuracy"):
            # a run without gan_policy compares the validation-best GAN strategy instead
            how = (f"policy `{r['mix_policy']['chosen']['name']}`" if r.get("mix_policy")
                   else "validation-best GAN strategy")
            alone = f" {_gan_vs_baseline(r)};" if _ba(r, "gan") is not None else ""
            how = how if alone else how[0].upper() + how[1:]
            note = f" {r['note']}" if r.get("note") else ""  # written by hand into the result file
            out.append(f"- **{what}** (`{name}.json`): GAN {_gan_text(r)}.{alone} {how}: {_gain_text(r)}.{note}")
    sp = results.get("speed") or {}
    if sp.get("gan_train"):
        t = sp["gan_train"]
        out.append(f"- **GAN training speed** (`speed.json`): our recipe ({t['runs']['augment']['arch']}, hinge, "
                   f"DiffAugment, class head) trains at {t['augment_img_per_s']} img/s, the concat MLP reference "
                   f"at {t['reference_img_per_s']}; after the same wall time their samples reach class consistency "
                   f"{t['augment_class_consistency']} vs {t['reference_class_consistency']}. The reference is "
                   "cheaper per image, not better; a recipe 3x faster than it at our consistency was not built.")
    shapes = (sp.get("generate") or {}).get("by_shape", {})
    ours, concat = shapes.get("28x28x1"), shapes.get("28x28x1 (concat generator)")
    if ours:
        extra = (f"; with the concat generator ({concat['generator_mflop_per_image']} MFLOP) the same writer "
                 f"is {concat['speedup']}x the per-file loop") if concat else ""
        out.append(f"- **Shards vs per-file** (`speed.json`): the writer alone runs at {ours['writer_only_img_per_s']:.0f} "
                   f"img/s, the generator alone ({ours['generator_mflop_per_image']} MFLOP/image) at "
                   f"{ours['generator_only_img_per_s']:.0f}, so generator-to-shards ({ours['shards_img_per_s']:.0f}) is "
                   f"bound by the generator, which the per-file loop runs too ({ours['speedup']}x){extra}."
                   + (f" The per-file loop spends {ours['per_file_save_image_share']:.0%} of its time in `save_image`, "
                      "the rest in the fp32 generator." if "per_file_save_image_share" in ours else ""))
    if not out:
        return []
    return ["## What was tried for the goals", "",
            "Figures from the result files below; each file's section gives its command and machine.", "", *out, ""]


# runs of one GAN each that differ in how many synthetic rows an epoch the fresh-pool strategies draw
SHARE_RUNS = {
    "MNIST-LT": ("mnist_lt_share_0.2", "mnist_lt_share", "mnist_lt_share_0.5", "mnist_lt_diverse_gan",
                 "mnist_lt_diverse_gan_fill_2000", "mnist_lt_diverse_gan_fill_all"),
    "USPS-LT": ("usps_lt_share_0.2", "usps_lt_share", "usps_lt_diverse_gan"),
}


def synthetic_rows(r: dict) -> tuple[int, int]:
    """(synthetic rows a fresh-pool strategy draws an epoch, real rows) of a result: the plan's count
    per class (the pool holds pool_factor times it), within `evaluate.synthetic_share` (absent: None)."""
    counts = r["train_counts"]
    plan = [int(r["plan"].get(name, 0)) for name in r["class_names"]]
    per_epoch = synthetic_per_epoch(counts, plan, r["params"]["evaluate"].get("synthetic_share"),
                                    r["params"]["evaluate"].get("synthetic_spread", "rarest_first"))
    return int(per_epoch.sum()), int(sum(counts))


def share_section(results: dict[str, dict]) -> list[str]:
    """One table per dataset: the GAN strategy's gain as the synthetic rows an epoch change."""
    out = []
    for dataset, names in SHARE_RUNS.items():
        rows = []
        for name in (n for n in names if n in results and (results[n].get("gain") or {}).get("balanced_accuracy")):
            r = results[name]
            syn, real = synthetic_rows(r)
            g = r["gain"]
            share = r["params"]["evaluate"].get("synthetic_share")
            rows.append(f"| `{name}.json` | {r['params']['plan']['sampling_strategy']} | "
                        f"{'none (the plan)' if share is None else share} | {syn:,} ({syn / (syn + real):.0%}) | "
                        f"{g['strategy']} {100 * _ba(r, g['strategy']):.2f}% | {_points(g['balanced_accuracy']['mean'])} "
                        f"[{_points(g['balanced_accuracy']['ci95'][0])}, {_points(g['balanced_accuracy']['ci95'][1])}] "
                        f"vs {g['baseline']} | {r['recommendation']['strategy']} |")
        if len(rows) > 1:
            out += [f"**{dataset}**, one GAN, {len(rows)} runs:", "",
                    "| result | plan | synthetic_share | synthetic rows an epoch (share) | validation-best GAN strategy "
                    "| gain, points [95% CI] | recommended |", "|---|---|---|---|---|---|---|", *rows, ""]
    if not out:
        return []
    return ["## How many synthetic rows an epoch", "",
            "The fresh-pool strategies draw each class's synthetic rows afresh every epoch: the plan's count, within "
            "`evaluate.synthetic_share` of the epoch's rows (rarest classes first) where it is set. The same GAN "
            "in every row of a table; the classifiers take the same optimiser steps, so more synthetic rows "
            "mean fewer real ones per step. The MNIST-LT runs train the classifiers for 6 epochs, where the "
            "GAN's lead did not survive the default 15 (next section). Commands and machines in each file's "
            "section below.", "", *out]


# runs of one GAN that differ in how long the classifiers train (and how large the pool is)
EPOCH_RUNS = {"MNIST-LT": ("mnist_lt_share", "mnist_lt_epochs15", "mnist_lt_epochs15_pool3")}


def _test_best(r: dict, synthetic: bool) -> str | None:
    """The strategy with the best mean test balanced accuracy among the GAN (or non-GAN) ones run."""
    names = [n for n in r["strategies"] if STRATEGIES[n].uses_synthetic == synthetic]
    return max(names, key=lambda n: _ba(r, n), default=None)


def epochs_section(results: dict[str, dict]) -> list[str]:
    """One table per dataset: every strategy's test balanced accuracy in runs of one GAN that train
    the classifiers for different epochs, and the GAN's margin over the test-best non-GAN strategy."""
    out = []
    for dataset, names in EPOCH_RUNS.items():
        runs = [n for n in names if n in results]
        if len(runs) < 2:
            continue
        heads = [f"`{n}` ({results[n]['epochs']} epochs, pool x{results[n]['params']['generate']['pool_factor']})"
                 for n in runs]
        strategies = list(dict.fromkeys(s for n in runs for s in results[n]["strategies"]))
        rows = ["| strategy | " + " | ".join(heads) + " |", "|---" * (len(runs) + 1) + "|"]
        for s in strategies:
            cells = [f"{100 * _ba(results[n], s):.2f}" if _ba(results[n], s) is not None else "-" for n in runs]
            rows.append(f"| {s} | " + " | ".join(cells) + " |")
        margin = []
        for n in runs:
            r = results[n]
            gan, base = _test_best(r, True), _test_best(r, False)
            margin.append(f"{gan} {_points(_ba(r, gan) - _ba(r, base))} vs {base}" if gan and base else "-")
        rows.append("| best GAN minus best non-GAN strategy, both on test | " + " | ".join(margin) + " |")
        rows.append("| recommended (validation) | " + " | ".join(results[n]["recommendation"]["strategy"] or "-"
                                                              for n in runs) + " |")
        out += [f"**{dataset}**, one GAN:", "", *rows, ""]
    if not out:
        return []
    return ["## How long the classifier trains", "",
            "The same GAN, the classifiers trained for the benchmark's shortened 6 epochs and for the default 15 "
            "(`evaluate.epochs`); test balanced accuracy %, means over the seeds. A margin read on test favours "
            "whichever side has the luckier pick; the verdict in each file's section pairs the seeds against the "
            "validation-chosen baseline. Commands and machines in each file's section below.", "", *out]


def scarcity_section(summary: dict, results: Path, out_md: Path) -> list[str]:
    """The scarcity sweep (scarcity.py): gain of the validation-best GAN strategy over the
    validation-best non-GAN one against the rarest class's size, as a table and a plot."""
    tails = summary["tails"]
    lines = ["## When does GAN data help? Scarcity sweep", "",
             f"`python benchmarks/scarcity.py --data {summary['data']}` (head {summary['head']} images, exponential "
             "profile down to the tail; each tail's own result file in `benchmarks/results/scarcity/` gives its "
             "command and machine).", "",
             "| rarest class | GAN strategy (val.-best) | % | non-GAN (val.-best) | % | gain, points [95% CI] | recommended |",
             "|---|---|---|---|---|---|---|"]
    xs, ys, lo, hi = [], [], [], []
    for tail, t in sorted(tails.items(), key=lambda kv: int(kv[0])):
        if t["gain"] is None:
            continue
        ci = t["ci95"]
        lines.append(f"| {tail} | {t['gan_strategy']} | {100 * t['gan']:.2f} | {t['baseline']} | "
                     f"{100 * t['baseline_score']:.2f} | {_points(t['gain'])} [{_points(ci[0])}, {_points(ci[1])}] | "
                     f"{t['recommended']} |")
        xs.append(int(tail))
        ys.append(100 * t["gain"])
        lo.append(100 * (t["gain"] - ci[0]))
        hi.append(100 * (ci[1] - t["gain"]))
    if xs:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xscale("log")
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.set_xlabel("images of the rarest class")
        ax.set_ylabel("gain, balanced acc. points")
        ax.set_title("GAN strategy minus best non-GAN (95% CI)")
        fig.tight_layout()
        png = results / "scarcity" / "scarcity.png"
        fig.savefig(png, dpi=90)
        plt.close(fig)
        lines += ["", f"![scarcity]({os.path.relpath(png, out_md.parent)})"]
    return lines + [""]


def selection_section(folder: Path) -> list[str]:
    """The BENCHMARKS.md section: per rule over the cases, then each case's picks."""
    summary = json.loads((folder / "summary.json").read_text())
    cases = {n: json.loads((folder / f"{n}.json").read_text()) for n in summary["cases"]}
    first = next(iter(cases.values()))
    lines = ["## Choosing a strategy on scarce validation data: selection benchmark", "",
             f"- command: `{first['command'].split(' --cases')[0]}` (every case; it ran as several processes, each "
             "given some `--cases` and pinned to one core, two at a time; each case's file in "
             "`benchmarks/results/selection/` gives its own command)",
             f"- machine: {first['machine']['cpu']}, {first['machine']['cores']} cores", "",
             "Every non-GAN strategy trained for the seeds of each case; each rule picks one on validation only, and "
             "the test set scores the pick: regret = the best strategy on test minus the pick (balanced accuracy, "
             "points), inside CI = the pick's test score is inside the test-best strategy's 95% CI. "
             "`fixed_logit_adjust` always picks logit_adjust, the reference a rule should beat.", "",
             "| rule | cases | median regret | mean regret | worst regret | inside the best's CI | picked the best |",
             "|---|---|---|---|---|---|---|"]
    for group, rules in (("all cases", summary["rules"]), ("held out", summary.get("rules_held_out") or {})):
        for rule, r in rules.items():
            lines.append(f"| {rule} ({group}) | {r['cases']} | {100 * r['median_regret']:.2f} | "
                         f"{100 * r['mean_regret']:.2f} | {100 * r['worst_regret']:.2f} | {r['inside_best_ci']} | "
                         f"{r['picked_best']} |")
    noise = summary.get("within_noise")
    if noise:
        lines += ["", f"Within the validation noise (what the report lists beside the recommendation): the "
                      f"test-best strategy was in that set in {noise['best_inside']} of {noise['cases']} cases; the set "
                      f"held a median of {noise['median_size']:g} of {noise['strategies']:g} strategies."]
    rules = list(summary["rules"])
    lines += ["", "| case | rarest train / val images | best on test | " + " | ".join(rules) + " |",
              "|---|---|---|" + "---|" * len(rules)]
    for name, c in cases.items():
        picks = " | ".join(f"{c['rules'][r]['pick']} ({100 * c['rules'][r]['regret']:.2f})" if r in c["rules"] else "-"
                           for r in rules)
        held = " (held out)" if c.get("held_out") else ""
        lines.append(f"| {name}{held} | {min(c['train_counts'])} / {min(c['val_counts'])} | {c['best_on_test']} "
                     f"{100 * c['test'][c['best_on_test']]:.2f} | {picks} |")
    return lines + [""]


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(description="Write BENCHMARKS.md from the benchmark result files.")
    p.add_argument("--results", default=str(HERE / "results"), help="folder of *.json result files")
    p.add_argument("--out", default=str(REPO / "BENCHMARKS.md"))
    args = p.parse_args(argv)
    results = sorted(Path(args.results).glob("*.json"))
    lines = ["# Benchmarks", "", "Generated by `python benchmarks/render.py` from `benchmarks/results/*.json`; each section "
             "names the command and machine that produced it. Figures measured on a shared 2-core machine are "
             "noisy; where a goal is missed the numbers say by how much.", ""]
    loaded = {path.stem: json.loads(path.read_text()) for path in results}
    lines += goals_section(loaded)
    lines += tried_section(loaded)
    lines += ceiling_section(loaded)
    lines += share_section(loaded)
    lines += epochs_section(loaded)
    for path in results:
        r = loaded[path.stem]
        if path.stem == "speed":
            lines += speed_section(r)
        elif path.stem == "precision":
            lines += precision_section(r)
        elif path.stem == "shared_cores":
            lines += shared_cores_section(r)
        elif path.stem.startswith("gan_ablation"):
            lines += gan_ablation_section(path.stem, r)
        elif path.stem.startswith("time_to_quality"):
            lines += time_to_quality_section(path.stem, r, path.parent, Path(args.out))
        else:
            lines += outcome_section(path.stem, r, path.parent, Path(args.out))
    sweep = Path(args.results) / "scarcity" / "summary.json"
    if sweep.is_file():
        lines += scarcity_section(json.loads(sweep.read_text()), Path(args.results), Path(args.out))
    chooser = Path(args.results) / "selection"
    if (chooser / "summary.json").is_file():
        lines += selection_section(chooser)
    atomic.write_text(Path(args.out), "\n".join(lines) + "\n")
    print(f"BENCHMARKS.md from {len(results)} result file(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
