"""One-line messages for a params tree that does not validate: what `pipeline.params_file.build` raises.

`strict_numbers` finds the values pydantic would coerce silently (true as 1, 2.5 as 2);
`describe` turns a pydantic error into `source: key = value: what is wrong`, suggesting the
closest key for a misspelt one; `first_error` picks the error to describe, a union field's
alternatives joined into one. Pure functions over the pydantic models they are given.
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


def _leaf(root: type[BaseModel], loc: tuple) -> tuple:
    """`loc` up to the first field that is not a section: what pydantic appends after it (the union
    member it tried, `literal['auto']`, `int`; a list index) is not part of the key."""
    model = root
    for i, part in enumerate(loc):
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            return loc[:i]
        ann = field.annotation
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return loc[: i + 1]
        model = ann
    return loc


def first_error(errors: list[dict], root: type[BaseModel]) -> dict:
    """The first pydantic error, with a union field's alternatives in one: pydantic reports a value
    that fits no member of `Literal["auto"] | bool` once per member, under `key.literal['auto']` and
    `key.bool`; this gives `key` and "Input should be 'auto', or a valid boolean ..."."""
    err = errors[0]
    leaf = _leaf(root, tuple(err["loc"]))
    ann = _model_at(root, leaf).model_fields[leaf[-1]].annotation if leaf else None
    alternatives = [e for e in errors if tuple(e["loc"][: len(leaf)]) == leaf and len(e["loc"]) == len(leaf) + 1]
    if typing.get_origin(ann) not in (typing.Union, types.UnionType) or len(alternatives) < 2 or err not in alternatives:
        return err
    msgs = [alternatives[0]["msg"]] + [e["msg"].removeprefix("Input should be ") for e in alternatives[1:]]
    return {**err, "loc": leaf, "msg": ", or ".join(msgs)}


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
