"""One function per pipeline stage: (config) -> files under `config.paths`. The only I/O glue.

The CLI (`augment <stage>`), `dvc.yaml` (which calls the CLI) and the Prefect flow all call these
functions, so each stage has exactly one implementation. Each returns a small JSON-able summary.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np

from pipeline import io
from pipeline.config import Config
from pipeline.data import (
    ImageTable,
    check_classes,
    impose_long_tail,
    long_tail_counts,
    stratified_split,
)
from pipeline.errors import DataError
from pipeline.plan import plan_quota
from pipeline.sources import ImageSpec, read_source

log = logging.getLogger("augment")

SPLITS = ("train", "val", "test")
_PROGRESS = True


def set_progress(enabled: bool) -> None:
    """Show (default) or hide progress bars in long stages."""
    global _PROGRESS
    _PROGRESS = enabled


def prepared_path(cfg: Config, split: str) -> Path:
    return Path(cfg.paths.prepared) / f"{split}.parquet"


def counts_path(cfg: Config) -> Path:
    return Path(cfg.paths.prepared) / "class_counts.json"


def read_prepared(cfg: Config, split: str) -> ImageTable:
    """A prepared split; a clear error if `augment prepare` has not run, or ran with other data params."""
    from pipeline.tables import read_parquet

    path = prepared_path(cfg, split)
    if not path.is_file():
        raise DataError(f"{path}: not found; run `augment prepare` first")
    if not counts_path(cfg).is_file():  # written last: without it the splits may be from two runs
        raise DataError(f"{counts_path(cfg)}: not found; `augment prepare` did not finish: run it again")
    read_counts(cfg)  # checks the data params it was prepared with
    return read_parquet(path)


def _first_difference(recorded: dict, now: dict, prefix: str) -> str | None:
    """`prefix.key = recorded, the params now say now` for the first differing (nested) key, else None."""
    for key in sorted(set(recorded) | set(now)):
        a, b = recorded.get(key), now.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found = _first_difference(a, b, f"{prefix}.{key}")
            if found:
                return found
        elif a != b:
            return f"{prefix}.{key} = {a!r}, the params now say {b!r}"
    return None


def _val_profile(target: list[int], val_fraction: float, available: np.ndarray) -> list[int]:
    """The long-tail profile scaled to the validation split (at least one image per class)."""
    scale = val_fraction / (1.0 - val_fraction)
    return [int(min(n, max(1, round(t * scale)))) for t, n in zip(target, available)]


def split_and_profile(cfg: Config, pool: ImageTable) -> tuple[ImageTable, ImageTable]:
    """Split `pool` into (train, val); impose the long-tail profile on both, train getting exact counts.

    The validation split is taken first, so the profile's counts are the training set's counts
    (rarest class 40 for `deepsmote`), and validation follows the same shape scaled by
    val_fraction / (1 - val_fraction): model choice sees the imbalance users have.
    """
    lt, profile = cfg.data.long_tail, cfg.data.profile()
    train, val = stratified_split(pool, cfg.data.val_fraction, cfg.data.split_seed)
    if profile == "none":
        return train, val
    target = long_tail_counts(train.counts(), profile, lt.ratio, lt.counts, lt.fraction)
    train = impose_long_tail(train, target, lt.seed)
    if len(val):
        val = impose_long_tail(val, _val_profile(target, cfg.data.val_fraction, val.counts()), lt.seed + 1)
    return train, val


def prepare(cfg: Config) -> dict:
    """Stage `prepare`: read and check the source, split, impose the profile, write Parquet + counts."""
    from pipeline.tables import write_parquet

    spec = ImageSpec(cfg.data.image_size, cfg.data.channels, cfg.data.resize)
    source = read_source(cfg.data.source, spec)
    check_classes(source.train, f"{cfg.data.source} (train)", source.empty_hint)
    pool, test = source.train, source.test
    if test is None:
        pool, test = stratified_split(pool, cfg.data.test_fraction, cfg.data.split_seed + 1000)
        log.info("source has no test set: held out %d images (data.test_fraction=%s)", len(test), cfg.data.test_fraction)
    if test.image_shape != pool.image_shape:
        raise DataError(
            f"{cfg.data.source}: test images are {test.image_shape}, train images {pool.image_shape}; "
            "set data.image_size and data.channels to bring them to one shape"
        )
    train, val = split_and_profile(cfg, pool)
    check_classes(train, f"{cfg.data.source} (train after profile)", source.empty_hint)
    tables = {"train": train, "val": val, "test": test}
    io.clean_temporaries(cfg.paths.prepared)  # what a killed run left: not part of the output
    # all written first, then renamed together (class_counts.json last): a full disk or a kill
    # never leaves a new train split beside an old test split and old counts
    with io.atomic_paths([*(prepared_path(cfg, split) for split in tables), counts_path(cfg)]) as tmps:
        files = {split: write_parquet(tmp, t) for tmp, (split, t) in zip(tmps, tables.items())}
        summary = {
            "data": cfg.data.model_dump(mode="json"),  # what later stages check they read
            "source": source.description,
            "class_names": list(train.class_names),
            "image_shape": list(train.image_shape),
            "counts": {split: t.counts_by_name() for split, t in tables.items()},
            "files": {split: {"rows": f["rows"], "sha256": f["sha256"]} for split, f in files.items()},
        }
        io.write_json(tmps[-1], summary)
    log.info("prepared %s: train %d, val %d, test %d images of shape %s",
             source.description, len(train), len(val), len(test), train.image_shape)
    return summary


def read_counts(cfg: Config) -> dict:
    """class_counts.json, refused when it was prepared with other `data` params than cfg's."""
    path = counts_path(cfg)
    if not path.is_file():
        raise DataError(f"{path}: not found; run `augment prepare` first")
    summary = _read_json(path, "augment prepare")
    if "data" in summary:  # files of augment before 0.4.0 do not record it
        changed = _first_difference(summary["data"], cfg.data.model_dump(mode="json"), "data")
        if changed:
            raise DataError(f"{cfg.paths.prepared}: prepared with {changed}; run `augment prepare`")
    return summary


def _quota(cfg: Config) -> dict[str, int]:
    """The plan that class_counts.json and plan.sampling_strategy give now."""
    counts = read_counts(cfg)["counts"]["train"]
    try:
        return plan_quota(counts, cfg.plan.sampling_strategy)
    except ValueError as e:
        raise DataError(f"plan.sampling_strategy: {e}") from None


def _available_memory() -> int:
    """Bytes of memory this machine can give now (MemAvailable; else its physical memory)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_plan_fits(cfg: Config, quota: dict[str, int], image_shape: list[int] | tuple[int, ...]) -> None:
    """Refuse a plan whose images cannot be held in memory or written to disk.

    `generate` holds every generated image (uint8 H x W x C, times generate.pool_factor) in
    memory at once, and the shards store each one about that size (PNG without deflate).

    Raises:
        DataError: naming the plan's size, the limit and what to lower.
    """
    n = sum(quota.values()) * getattr(cfg.generate, "pool_factor", 1)
    per_image = int(np.prod([int(d) for d in image_shape]))
    need = n * per_image
    where = Path(cfg.paths.synthetic).absolute()
    while not where.exists() and where != where.parent:
        where = where.parent
    limits = {"memory available": _available_memory(), f"free disk at {where}": shutil.disk_usage(where).free}
    for what, have in limits.items():
        if need > have:
            raise DataError(f"plan.sampling_strategy = {cfg.plan.sampling_strategy!r}: the plan adds {n:,} images "
                            f"of {per_image} bytes ({need / 2**30:,.1f} GiB), more than the {what} "
                            f"({have / 2**30:,.1f} GiB); lower plan.sampling_strategy")


def plan(cfg: Config) -> dict[str, int]:
    """Stage `plan`: class counts + sampling_strategy -> `plan.json` {class: n_to_add}."""
    quota = _quota(cfg)
    check_plan_fits(cfg, quota, read_counts(cfg)["image_shape"])
    io.write_json(cfg.paths.plan, quota)
    log.info("plan: add %d images in total", sum(quota.values()))
    return quota


def read_plan(cfg: Config) -> dict[str, int]:
    """plan.json, refused when it is not the plan the prepared counts and plan params give now."""
    path = Path(cfg.paths.plan)
    if not path.is_file():
        raise DataError(f"{path}: not found; run `augment plan` first")
    quota = _read_json(path, "augment plan")
    try:
        now = _quota(cfg)
    except DataError:
        return quota  # the plan stage itself will say what is wrong
    well_formed = set(quota) <= set(now) and all(type(n) is int and n >= 0 for n in quota.values())
    if well_formed and quota != now:  # a malformed plan gets its own error where it is used
        c = next((c for c in {**now, **quota} if quota.get(c) != now.get(c)), None)
        raise DataError(f"{path}: adds {quota.get(c)!r} images of class {c!r}, the prepared counts and "
                        f"plan.sampling_strategy now give {now.get(c)!r}; run `augment plan`")
    return quota


def _read_json(path: Path, remedy: str) -> dict:
    """A JSON object a stage wrote; DataError naming the file and the command that remakes it."""
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e.__class__.__name__}); run `{remedy}` again") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a JSON object, got {type(obj).__name__}; run `{remedy}` again")
    return obj


def gan_final_path(cfg: Config) -> Path:
    return Path(cfg.paths.gan) / "final.pt"


def with_recipe(cfg: Config, announce: bool = False) -> Config:
    """`cfg` with `train_gan.recipe` resolved against the prepared data (class_counts.json): the
    recipe's values wherever params.yaml and --set gave none, `recipe` naming the one applied.
    `announce` logs the choice in one line. Resolving a resolved config changes nothing."""
    from pipeline.recipes import AUTO, resolve

    shape = counts = None
    if cfg.train_gan.recipe == AUTO or announce:
        summary = read_counts(cfg)
        shape, counts = summary.get("image_shape"), summary["counts"]["train"]
        if shape is None:  # files of augment before image_shape was recorded
            raise DataError(f"{counts_path(cfg)}: records no image_shape; run `augment prepare` again")
    section, choice = resolve(cfg.train_gan, shape, counts)
    if announce:
        log.info("%s", choice.line())
    return cfg.model_copy(update={"train_gan": section})


def shown_params(cfg: Config) -> dict:
    """The params as `augment show-params` prints them: `train_gan.recipe` resolved when the
    prepared data is there; else `auto (resolved after prepare)`, and the keys it will set say so."""
    from pipeline.config import dump
    from pipeline.recipes import AUTO, RECIPES

    try:
        return dump(with_recipe(cfg))
    except DataError:  # not prepared, or prepared with other data params: prepare decides
        tree = dump(cfg)
    section = tree["train_gan"]
    section["recipe"] = f"{AUTO} (resolved after prepare)"
    for key in set().union(*RECIPES.values()) - cfg.train_gan.model_fields_set:
        section[key] = "(from the recipe)"
    return tree


def train_gan(cfg: Config) -> dict:
    """Stage `train_gan`: fit the class-conditional GAN on the prepared training split, with
    `train_gan.cpu_threads` torch threads (auto: the free cores; None: torch's default), the previous
    count restored after."""
    from pipeline.gan import train_gan as fit
    from pipeline.threads import choose_threads, cpu_threads

    train = read_prepared(cfg, "train")
    cfg = with_recipe(cfg, announce=True)
    threads = choose_threads(cfg.train_gan.cpu_threads)
    if cfg.train_gan.cpu_threads == "auto":
        log.info("train-gan on %d CPU thread(s) (train_gan.cpu_threads auto: the cores free now)", threads)
    with cpu_threads(threads):
        final = fit(cfg.train_gan, train, Path(cfg.paths.gan), progress=_PROGRESS)
    return {"final": str(final)}


def _real_scorer(cfg: Config, train: ImageTable, val: ImageTable):
    """The filter's real-data judge (`judge.JUDGES["filter"]`), as `scorer(images, labels) -> p(intended class)`."""
    from functools import partial

    from pipeline.judge import fit_judge
    from pipeline.models.classifiers import class_probability

    model = fit_judge("filter", train, val, cfg.evaluate, cfg.generate.seed, epochs=cfg.generate.filter.epochs,
                      progress=_PROGRESS)
    return partial(class_probability, model.eval())


def check_generator(cfg: Config, path: Path, meta: dict, train: ImageTable) -> None:
    """Refuse a final.pt trained on other classes, image size or data, or with other train_gan params.

    Raises:
        DataError: one line naming what differs; the fix is `augment train-gan` again.
    """
    from pipeline.gan_fingerprint import UNFINGERPRINTED, config_fingerprint, data_fingerprint

    retrain = "run `augment train-gan` again"
    if list(meta["class_names"]) != list(train.class_names):
        raise DataError(f"{path}: generator was trained on classes {meta['class_names']}, the prepared data has "
                        f"{list(train.class_names)}; {retrain}")
    (c, h, w), (th, tw, tc) = meta["image_shape"], train.image_shape
    if (c, h, w) != (tc, th, tw):
        raise DataError(f"{path}: generator makes {w}x{h} images with {c} channel(s), the prepared data is "
                        f"{tw}x{th} with {tc}; {retrain}")
    if meta.get("fingerprint") == config_fingerprint(cfg.train_gan, data_fingerprint(train)):
        step = meta.get("step")
        if step is not None and step != cfg.train_gan.steps and not meta.get("stopped_early"):
            raise DataError(f"{path}: trained for {step} steps, train_gan.steps now says {cfg.train_gan.steps}; "
                            "run `augment train-gan`")
        return
    trained, now = meta.get("config") or {}, cfg.train_gan.model_dump(mode="json")
    changed = [k for k in now if k not in UNFINGERPRINTED and trained.get(k) != now[k]]
    if changed:
        k = changed[0]
        raise DataError(f"{path}: trained with train_gan.{k} = {trained.get(k)!r}, the params now say "
                        f"{now[k]!r}; {retrain}")
    raise DataError(f"{path}: trained on other images than {prepared_path(cfg, 'train')} holds now; {retrain}")


def generate(cfg: Config) -> dict:
    """Stage `generate`: sample each class's quota with the EMA generator into Parquet shards."""
    from pipeline import __version__
    from pipeline.config import dump
    from pipeline.device import choose_precision, precision_name, select_device
    from pipeline.gan_checkpoints import load_generator
    from pipeline.generate import generate as sample
    from pipeline.release import synthetic_columns, write_shards

    quota = read_plan(cfg)
    path = gan_final_path(cfg)
    if not path.is_file():
        raise DataError(f"{path}: not found; run `augment train-gan` first")
    device = select_device(cfg.train_gan.device)
    G, meta = load_generator(path, device)
    train = read_prepared(cfg, "train")
    names = list(train.class_names)
    cfg = with_recipe(cfg)  # the values final.pt was trained with, recorded in the manifest's params
    check_generator(cfg, path, meta, train)
    check_plan_fits(cfg, {c: n for c, n in quota.items() if isinstance(n, int) and n > 0}, train.image_shape)
    # unknown classes are left to the sampler's check, which names the valid ones
    untrained = [c for c, n in quota.items() if n and c in names and c not in meta.get("train_classes", names)]
    if untrained:
        raise DataError(
            f"{path}: the plan asks for classes {untrained} that the GAN was not trained on "
            "(train_gan.classes); add them there or leave them out of plan.sampling_strategy"
        )
    fcfg = cfg.generate.filter
    scorer = _real_scorer(cfg, train, read_prepared(cfg, "val")) if fcfg.enabled else None
    stats: dict = {}
    dtype = choose_precision(cfg.generate.precision, device)
    images, labels, seeds, scores = sample(
        G, meta, {c: n * cfg.generate.pool_factor for c, n in quota.items()}, cfg.generate.seed,
        cfg.generate.batch_size, device,
        scorer=scorer, tau=fcfg.tau if fcfg.enabled else 0.0, max_oversample=fcfg.max_oversample,
        progress=_PROGRESS, stats=stats, dtype=dtype,
    )
    extra = {"plan": quota, "pool_factor": cfg.generate.pool_factor, "params": dump(cfg), "generator": meta["sha256"], "augment_version": __version__,
             "filter": stats if fcfg.enabled else None, "precision": precision_name(dtype)}
    columns = synthetic_columns(meta["sha256"], seeds, scores)
    manifest = write_shards(cfg.paths.synthetic, ImageTable(images, labels, names), columns,
                            cfg.generate.shard_size, extra, export_images=cfg.generate.export_images)
    log.info("generated %d images into %s", len(labels), cfg.paths.synthetic)
    return {"rows": int(len(labels)), "files": len(manifest["files"])}


def read_synthetic(cfg: Config) -> tuple[ImageTable | None, np.ndarray | None]:
    """The generated dataset (checked against its manifest) and its quality scores (NaN where the
    generation filter was off); (None, None) when `augment generate` has not run."""
    from pipeline.reader import read_images, read_manifest, read_shards

    folder = Path(cfg.paths.synthetic)
    if not (folder / "manifest.json").is_file():
        if folder.is_dir() and any(folder.glob("**/*.parquet")):  # shards without their manifest (written last)
            raise DataError(f"{folder}: has shards but no manifest.json; `augment generate` did not finish: "
                            "run it again")
        return None, None
    check_synthetic(cfg, read_manifest(folder))
    table = read_images(folder, verify=True)
    scores = read_shards(folder).column("score").to_numpy(zero_copy_only=False).astype(np.float32)
    return table, scores


# generate params that change how the work is done, never the images
_GENERATE_UNRECORDED = ("batch_size",)


def check_synthetic(cfg: Config, manifest: dict) -> None:
    """Refuse a synthetic dataset made for another plan, by another final.pt or with other
    generate params than cfg's (e.g. `augment generate` was killed or not rerun after a change).

    Raises:
        DataError: one line naming what differs; the fix is `augment generate` again.
    """
    folder, redo = Path(cfg.paths.synthetic), "run `augment generate`"
    plan = read_plan(cfg)
    made_for = manifest.get("plan")
    if isinstance(made_for, dict) and made_for != plan:
        c = next(c for c in {**plan, **made_for} if made_for.get(c) != plan.get(c))
        raise DataError(f"{folder}: generated for a plan with {made_for.get(c)!r} images of class {c!r}, "
                        f"{cfg.paths.plan} now says {plan.get(c)!r}; {redo}")
    final = gan_final_path(cfg)
    if isinstance(manifest.get("generator"), str) and final.is_file() and io.sha256_file(final) != manifest["generator"]:
        raise DataError(f"{folder}: generated by another {final} than the one there now; {redo}")
    recorded = (manifest.get("params") or {}).get("generate")
    if isinstance(recorded, dict):
        now = cfg.generate.model_dump(mode="json")
        for key in _GENERATE_UNRECORDED:
            recorded.pop(key, None), now.pop(key, None)
        changed = _first_difference(recorded, now, "generate")
        if changed:
            raise DataError(f"{folder}: generated with {changed}; {redo}")


def evaluate(cfg: Config, mapper=None) -> dict:
    """Stage `evaluate`: every strategy x seed -> `metrics.json` + `predictions.parquet`.

    `mapper(fn, units)` may run the independent (strategy, seed) units elsewhere (Prefect + Dask).
    """
    from pipeline.evaluate import EvalData, evaluate as run, write_results

    tables = {split: read_prepared(cfg, split) for split in SPLITS}
    synthetic, scores = read_synthetic(cfg)
    if synthetic is None:
        log.warning("no synthetic dataset at %s: the GAN strategies are skipped", cfg.paths.synthetic)
    data = EvalData(tables["train"], tables["val"], tables["test"], synthetic, scores)
    result = run(cfg.evaluate, data, read_plan(cfg), progress=_PROGRESS, mapper=mapper)
    io.clean_temporaries(cfg.paths.reports)  # what a killed run left
    write_results(cfg.paths.reports, result)
    gain = result["metrics"].get("gain") or {}
    return {"gain": gain.get("balanced_accuracy"), "baseline": gain.get("baseline")}


def report(cfg: Config) -> dict:
    """Stage `report`: report.md, self-contained report.html, figures and plot CSVs."""
    from pipeline.config import dump
    from pipeline.evaluate import read_results
    from pipeline.report import write_report

    out = Path(cfg.paths.reports)
    if not (out / "metrics.json").is_file():
        raise DataError(f"{out / 'metrics.json'}: not found; run `augment evaluate` first")
    results = read_results(out)
    gan_dir = Path(cfg.paths.gan)
    paths = write_report(out, results["metrics"], results["predictions"], train=read_prepared(cfg, "train"),
                         synthetic=read_synthetic(cfg)[0], gan_dir=gan_dir if gan_dir.is_dir() else None,
                         params=dump(with_recipe(cfg)))
    log.info("report: %s", out / "report.html")
    return {"files": [str(p) for p in paths]}
