"""One-line messages for a params tree that does not validate: what `pipeline.params_file.build` raises.

`strict_numbers` finds the values pydantic would coerce silently (true as 1, 2.5 as 2);
`describe` turns a pydantic error into `source: key = value: what is wrong`, suggesting the
closest key for a misspelt one. Pure functions over the pydantic models they are given.
"""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any, Literal

from pydantic import BaseModel


def _valid_keys(model: type[BaseModel]) -> list[str]:
    return list(model.model_fields)


def _model_at(root: type[BaseModel], loc: tuple) -> type[BaseModel]:
    """The pydantic model class under `root` that holds the field at `loc[:-1]`."""
    model = root
    for part in loc[:-1]:
        ann = model.model_fields[part].annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
        else:
            break
    return model


def describe(err: dict, source: str, root: type[BaseModel]) -> str:
    """One line for a pydantic error `err` on a tree of `root`: the key, the value and the fix."""
    loc = tuple(p for p in err["loc"] if isinstance(p, str))
    key = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        valid = _valid_keys(_model_at(root, loc))
        close = difflib.get_close_matches(loc[-1], valid, n=1)
        hint = f" (did you mean {'.'.join(loc[:-1] + (close[0],))!r}?)" if close else ""
        return f"{source}: unknown key {key!r}{hint}; valid keys here: {', '.join(valid)}"
    msg = err["msg"].removeprefix("Value error, ")
    if isinstance(err.get("input"), dict):  # a check across a section's fields: name the section only
        return f"{source}: {key}: {msg}"
    return f"{source}: {key} = {err.get('input')!r}: {msg}"


def _annotation_types(ann: Any) -> set:
    """The plain types an annotation admits (Optional/Union/Literal/list unwrapped one level)."""
    origin = typing.get_origin(ann)
    if origin in (typing.Union, types.UnionType):
        return set().union(*(_annotation_types(a) for a in typing.get_args(ann)))
    if origin is Literal:
        return {type(v) for v in typing.get_args(ann)}
    return {origin or ann}


def strict_numbers(tree: dict, model: type[BaseModel], prefix: str) -> str | None:
    """The first `key = value` where a number field got true/false, or an int field a float
    (pydantic would read them as 1/0 and 2), as `dotted.key = value`; None if there is none."""
    for name, value in tree.items():
        field = model.model_fields.get(name)
        if field is None:
            continue
        kinds, key = _annotation_types(field.annotation), f"{prefix}{name}"
        sub = next((k for k in kinds if isinstance(k, type) and issubclass(k, BaseModel)), None)
        if sub is not None and isinstance(value, dict):
            found = strict_numbers(value, sub, key + ".")
            if found:
                return found
        elif isinstance(value, bool) and bool not in kinds and kinds & {int, float}:
            return f"{key} = {value!r}: expected a number, not true/false"
        elif isinstance(value, float) and int in kinds and float not in kinds:
            return f"{key} = {value!r}: expected an integer"
    return None
