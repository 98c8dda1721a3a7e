"""The quota plan: how many images each class lacks, from class counts and a sampling strategy.

`plan_quota` resolves imbalanced-learn's over-sampling `sampling_strategy` forms into a plain
`{class: n_to_add}` dict with an entry (0 where none) for every class.
"""

from __future__ import annotations

from collections.abc import Mapping

STRING_STRATEGIES = ("auto", "not majority", "minority", "not minority", "all")


def _targets_for_string(counts: dict[str, int], strategy: str) -> dict[str, int]:
    """imbalanced-learn string forms: which classes are filled up to the majority count."""
    n_max, n_min = max(counts.values()), min(counts.values())
    majority = next(c for c, n in counts.items() if n == n_max)
    minority = next(c for c, n in counts.items() if n == n_min)
    chosen = {
        "auto": [c for c in counts if c != majority],
        "not majority": [c for c in counts if c != majority],
        "minority": [minority],
        "not minority": [c for c in counts if c != minority],
        "all": list(counts),
    }[strategy]
    return {c: n_max for c in chosen}


def _targets_for_ratio(counts: dict[str, int], ratio: float) -> dict[str, int]:
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


def _targets_for_dict(counts: dict[str, int], wanted: Mapping) -> dict[str, int]:
    """Mapping form: {class: target count}; classes not named get nothing."""
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


def plan_quota(counts: Mapping[str, int], sampling_strategy: str | float | int | Mapping) -> dict[str, int]:
    """How many images to add per class.

    Args:
        counts: images per class name (every class, in order).
        sampling_strategy: one of `"auto"` (= `"not majority"`), `"not majority"`, `"minority"`,
            `"not minority"`, `"all"` (those classes are filled up to the majority count); a float
            ratio r in (0, 1] (every non-majority class brought to int(r * majority count));
            an int target count per class (every class below it is filled to it); or a mapping
            `{class: target count}`.

    Returns:
        `{class: n_to_add}` with every class of `counts`, 0 where none is added.

    Raises:
        ValueError: an unknown strategy or class, a negative count, or an impossible ratio/target.
    """
    counts = {str(c): int(n) for c, n in counts.items()}
    if not counts:
        raise ValueError("no classes to plan for")
    if any(n < 0 for n in counts.values()):
        raise ValueError(f"class counts must be >= 0, got {counts}")
    if isinstance(sampling_strategy, str):
        if sampling_strategy not in STRING_STRATEGIES:
            raise ValueError(
                f"sampling_strategy {sampling_strategy!r} is not one of "
                f"{', '.join(map(repr, STRING_STRATEGIES))}, a float ratio, an int target or a mapping"
            )
        targets = _targets_for_string(counts, sampling_strategy)
    elif isinstance(sampling_strategy, bool):
        raise ValueError(f"sampling_strategy {sampling_strategy!r} is not a valid strategy")
    elif isinstance(sampling_strategy, int):
        if sampling_strategy < 1:
            raise ValueError(f"sampling_strategy target count must be >= 1, got {sampling_strategy}")
        targets = {c: sampling_strategy for c, n in counts.items() if n < sampling_strategy}
    elif isinstance(sampling_strategy, float):
        targets = _targets_for_ratio(counts, sampling_strategy)
    elif isinstance(sampling_strategy, Mapping):
        targets = _targets_for_dict(counts, sampling_strategy)
    else:
        raise ValueError(f"sampling_strategy {sampling_strategy!r} has unsupported type {type(sampling_strategy).__name__}")
    return {c: max(0, targets.get(c, n) - n) for c, n in counts.items()}
