"""Reading the params: params.yaml (or defaults) plus `--set dotted.key=value` overrides, validated
into a frozen `pipeline.config.Config`. Errors name the file or `--set` and the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from pipeline.config import Config
from pipeline.config_messages import describe, first_error, strict_numbers
from pipeline.errors import ConfigError

PARAMS_FILE = "params.yaml"


def set_dotted(tree: dict, dotted: str, value: Any) -> None:
    """Set `tree[a][b][c] = value` for `dotted` = "a.b.c", creating groups as needed."""
    parts = dotted.split(".")
    if not all(parts):
        raise ConfigError(f"--set {dotted!r}: empty key part; write section.key=value")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted!r}: {part!r} is a value, not a group of keys")
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """`key=value` with the value parsed as YAML (`--set evaluate.strategies='[none,gan]'`)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected dotted.key=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {key}: value {raw!r} is not valid YAML ({e.__class__.__name__})") from e
    return key.strip(), value


def build(tree: dict | None, overrides: dict[str, Any] | None = None, source: str = PARAMS_FILE,
          override_source: str | None = None) -> Config:
    """Validate a params tree plus dotted `overrides` into a `Config`.

    Errors name `source`, or `override_source` (the CLI: `--set`) when the bad key came from
    `overrides`.
    """
    tree = dict(tree or {})
    for key, value in (overrides or {}).items():
        set_dotted(tree, key, value)

    def where(key: str) -> str:
        from_override = any(key == k or key.startswith(k + ".") or k.startswith(key + ".") for k in overrides or {})
        return override_source if override_source and from_override else source

    bad = strict_numbers(tree, Config, "")
    if bad:
        raise ConfigError(f"{where(bad.split(' = ', 1)[0])}: {bad}")
    try:
        return Config.model_validate(tree)
    except ValidationError as e:
        err = first_error(e.errors(), Config)
        raise ConfigError(describe(err, where(".".join(str(p) for p in err["loc"])), Config)) from None


def load(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Read `path` (default `./params.yaml` if present, else defaults) and apply `overrides`."""
    if path is None:
        path = Path(PARAMS_FILE)
        if not path.exists():
            return build({}, overrides, source="defaults", override_source="--set")
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found; pass --params PATH or create {PARAMS_FILE}")
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: not valid YAML; fix the syntax") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (data:, plan:, ...), got {type(tree).__name__}")
    return build(tree, overrides, source=str(path), override_source="--set")
