"""The dataset card: the README.md of a release folder, and the Markdown table-cell rule.

`dataset_card(manifest)` writes the Hugging Face YAML header (features, splits, files) and a short
card (what, how made, labels and counts, intended use, license). `md_cell` makes any text safe in
a Markdown table cell; the report (`pipeline.report_document`) uses it too.
"""

from __future__ import annotations

import json
import re

import yaml

from pipeline.layout import CLASSES, EMPTY_MARKER, GRID, IMAGES_DIR, SHARDS_DIR

def _hf_card_features(features: dict) -> list[dict]:
    """The `datasets` features dict in the dataset-card YAML spelling (`dataset_info.features`)."""
    out = []
    for name, f in features.items():
        if f["_type"] == "Image":
            out.append({"name": name, "dtype": "image"})
        elif f["_type"] == "ClassLabel":
            names = {str(i): n for i, n in enumerate(f["names"])}
            out.append({"name": name, "dtype": {"class_label": {"names": names}}})
        else:
            out.append({"name": name, "dtype": f["dtype"]})
    return out


def md_cell(text: str) -> str:
    """Text safe inside a Markdown table cell (pipes escaped, no line breaks)."""
    return re.sub(r"[\x00-\x1f]", " ", str(text)).replace("|", "\\|")


def _card_header(manifest: dict) -> dict:
    """The card's YAML header: what the Hub and `datasets.load_dataset` read (files, features, splits)."""
    return {
        "license": "other",
        "task_categories": ["image-classification"],
        "tags": ["synthetic", "gan", "class-imbalance"],
        "pretty_name": "augment synthetic samples",
        "configs": [{"config_name": "default",
                     "data_files": [{"split": "train", "path": f"{SHARDS_DIR}/train-*.parquet"}]}],
        "dataset_info": {
            "features": _hf_card_features(manifest["features"]),
            "splits": [{"name": "train", "num_bytes": manifest["num_bytes"], "num_examples": manifest["rows"]}],
        },
    }


def filter_summary(stats: dict | None, rule: dict | None = None) -> str:
    """What the quality filter did (manifest `filter`: {class: quota, tried, accepted, below_tau}),
    naming the classes with samples below its threshold, with a leading space; "" when it was off.
    The card and the report's quality section both say it; with `rule` (generate.filter's params)
    the card also says what passing meant."""
    if not stats:
        return ""
    quota = sum(s["quota"] for s in stats.values())
    passed = sum(s["accepted"] for s in stats.values())
    short = [(c, s) for c, s in stats.items() if s["accepted"] < s["quota"]]
    how = ""
    if rule and "tau" in rule:
        judges = rule.get("judges", 1)
        who = f"each of {judges} real-data judges" if judges > 1 else "a real-data judge"
        how = f" (p(class) >= {rule['tau']} under {who})"
    text = f" The quality filter{how} passed {passed} of the {quota} planned images"
    if not short:
        return text + "."
    filled = sum(s["below_tau"] for _, s in short)
    named = ", ".join(f"{md_cell(c)} {s['accepted']} of {s['quota']}" for c, s in short)
    return (text + f"; classes short of their quota ({named}) "
            + (f"were filled with their {filled} best-scoring rejected images." if filled else "keep fewer images."))


def dataset_card(manifest: dict) -> str:
    """README.md for the synthetic folder: HF YAML header (features, splits, files) + a short card."""
    gen = manifest.get("generator")
    gen_text = gen if isinstance(gen, str) else json.dumps(gen, sort_keys=True, ensure_ascii=False)
    dirs = (manifest.get("images") or {}).get("class_dirs") or {}
    counts = "\n".join(
        f"| {i} | {md_cell(name)} | {n} |" + (f" `{IMAGES_DIR}/{md_cell(dirs[name])}/` |" if dirs else "")
        for i, (name, n) in enumerate(manifest["counts"].items()))
    folder_head, folder_rule = (" ImageFolder folder |", "---|") if dirs else ("", "")
    image_folder = f"""
**ImageFolder.** `images/<label>-<class>/` holds every class, also those without images (a
`{EMPTY_MARKER}` file keeps such a folder), so `torchvision.datasets.ImageFolder("images",
allow_empty=True)` numbers the classes as the shards' `label`.
""" if dirs else ""
    params = json.dumps(manifest.get("params", {}), indent=2, sort_keys=True, ensure_ascii=False)
    precision = f", run in {manifest['precision']}" if isinstance(manifest.get("precision"), str) else ""
    filtered = filter_summary(manifest.get("filter"), ((manifest.get("params") or {}).get("generate") or {}).get("filter"))
    body = f"""# augment synthetic samples

**What.** {manifest['rows']} images made by a class-conditional GAN (EMA generator) to fill the
per-class quotas of `plan.json`, so that an imbalanced training set can be balanced.
Each row has `image` (PNG), `label` / `label_name`, `source` ("synthetic"), `generator` (sha256 of
the checkpoint), `seed` (the per-sample seed: the same run seed, class and index give the same
image) and `score` (the quality filter's probability of the intended class; null when unfiltered).

**How made.** augment {manifest['package']['version']}; generator: `{gen_text}`{precision}.
The shards are `{SHARDS_DIR}/train-*.parquet`. Files, row counts and sha256 are in `manifest.json`
(`pipeline.loaders.load_arrow(path, verify=True)` checks them).{filtered} Parameters:

```json
{params}
```

**Labels and counts** (also in `{CLASSES}`: the class names in label order).

| label | class | images |{folder_head}
|---|---|---|{folder_rule}
{counts}
{image_folder}
**Samples** (one row per class): ![samples]({GRID})

**Intended use.** Extra training data for the minority classes, mixed with the real training split
(`pipeline.loaders.load_torch(path, mix="real+synthetic")`). Not for evaluation: test on real data only.
Check the report's downstream gain before relying on these images; they can copy or distort the
real images they were learnt from.

**License.** These images are derived from the real training data through the GAN and inherit its
license and terms of use; they add none of their own.
"""
    return "---\n" + yaml.safe_dump(_card_header(manifest), sort_keys=False, allow_unicode=True) + "---\n\n" + body
