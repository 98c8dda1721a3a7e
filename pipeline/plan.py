"""The quota plan: how many images each class lacks, from class counts and a sampling strategy.

`plan_quota` resolves an over-sampling `sampling_strategy` into a plain `{class: n_to_add}` dict
with an entry (0 where none) for every class. imbalanced-learn's `check_sampling_strategy` does the
resolution; this module adds two forms it lacks (an int target count, and a float ratio for more
than two classes, both turned into its mapping form) and one-line errors for bad input.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

STRING_STRATEGIES = ("auto", "not majority", "minority", "not minority", "all")


def _check_counts(counts: dict[str, int]) -> None:
    if len(counts) < 2:
        raise ValueError(f"need at least two classes to plan for, got {counts or 'none'}")
    if any(n < 1 for n in counts.values()):
        raise ValueError(f"every class needs at least one image, got counts {counts}")


def _ratio_targets(counts: dict[str, int], ratio: float) -> dict[str, int]:
    """Float form: every class but the majority is brought to int(ratio * majority count)."""
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"sampling_strategy ratio must be in (0, 1], got {ratio}")
    n_max = max(counts.values())
    majority = next(c for c, n in counts.items() if n == n_max)
    target = int(ratio * n_max)
    short = {c: n for c, n in counts.items() if c != majority and n > target}
    if short:
        c, n = next(iter(short.items()))
        raise ValueError(
            f"sampling_strategy ratio {ratio} targets {target} images per class, but class {c!r} "
            f"already has {n} (over-sampling never removes images); use a larger ratio, an "
            "integer target count, or a {class: count} mapping"
        )
    return {c: target for c in counts if c != majority}


def _checked_mapping(counts: dict[str, int], wanted: Mapping) -> dict[str, int]:
    """Mapping form {class: target count}, each class known and each target a count it reaches."""
    targets = {}
    for key, target in wanted.items():
        name = str(key)
        if name not in counts:
            raise ValueError(
                f"sampling_strategy names class {name!r}, which is not in the data; "
                f"valid classes: {', '.join(map(repr, counts))}"
            )
        if not isinstance(target, int) or isinstance(target, bool) or target < 0:
            raise ValueError(f"sampling_strategy[{name!r}] must be a count >= 0, got {target!r}")
        if target < counts[name]:
            raise ValueError(
                f"sampling_strategy[{name!r}] = {target} is below the {counts[name]} images the "
                "class already has; over-sampling never removes images"
            )
        targets[name] = target
    return targets


def _imblearn_form(counts: dict[str, int], strategy: str | float | int | Mapping) -> str | dict[str, int]:
    """`strategy` checked, as a string imbalanced-learn knows or a {class: target count} mapping."""
    if isinstance(strategy, str):
        if strategy not in STRING_STRATEGIES:
            raise ValueError(
                f"sampling_strategy {strategy!r} is not one of "
                f"{', '.join(map(repr, STRING_STRATEGIES))}, a float ratio, an int target or a mapping"
            )
        return strategy
    if isinstance(strategy, bool):
        raise ValueError(f"sampling_strategy {strategy!r} is not a valid strategy")
    if isinstance(strategy, int):
        if strategy < 1:
            raise ValueError(f"sampling_strategy target count must be >= 1, got {strategy}")
        return {c: strategy for c, n in counts.items() if n < strategy}
    if isinstance(strategy, float):
        return _ratio_targets(counts, strategy)
    if isinstance(strategy, Mapping):
        return _checked_mapping(counts, strategy)
    raise ValueError(f"sampling_strategy {strategy!r} has unsupported type {type(strategy).__name__}")


def plan_quota(counts: Mapping[str, int], sampling_strategy: str | float | int | Mapping) -> dict[str, int]:
    """How many images to add per class.

    Args:
        counts: images per class name (every class, in order; at least two, each >= 1).
        sampling_strategy: one of `"auto"` (= `"not majority"`), `"not majority"`, `"minority"`,
            `"not minority"`, `"all"` (those classes are filled up to the majority count); a float
            ratio r in (0, 1] (every non-majority class brought to int(r * majority count));
            an int target count per class (every class below it is filled to it); or a mapping
            `{class: target count}`. Ties between equal counts go to the class listed first.

    Returns:
        `{class: n_to_add}` with every class of `counts`, 0 where none is added.

    Raises:
        ValueError: an unknown strategy or class, a negative count, or an impossible ratio/target.
    """
    from imblearn.utils import check_sampling_strategy  # 1 s of sklearn/scipy imports, for this call only

    counts = {str(c): int(n) for c, n in counts.items()}
    _check_counts(counts)
    form = _imblearn_form(counts, sampling_strategy)
    index = {c: i for i, c in enumerate(counts)}
    if isinstance(form, dict):
        form = {index[c]: n for c, n in form.items()}
    # labels as class positions, so imbalanced-learn's ties (lowest label first) go to the first listed
    y = np.repeat(np.arange(len(counts)), list(counts.values()))
    added = check_sampling_strategy(form, y, "over-sampling")
    return {c: int(added.get(i, 0)) for c, i in index.items()}
