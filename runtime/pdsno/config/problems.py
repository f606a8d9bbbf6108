"""Validation problems as an operator reads them: the dotted key, a plain reason, a "did you mean" hint
and, for a value set in the environment, the variable that set it."""

from __future__ import annotations

import difflib
import types
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Final, NoReturn, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from pdsno.config.schema import ControllerConfig, _Problems
from pdsno.errors import ConfigError, ReasonCode

# --------------------------------------------------------------------------------------------------
# schema walking (environment overrides, suggestions)


def _unwrap(annotation: Any) -> list[Any]:
    """The member types of an annotation, Annotated and Optional/Union unwrapped, NoneType kept."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _unwrap(get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        members: list[Any] = []
        for arg in get_args(annotation):
            members.extend(_unwrap(arg))
        return members
    return [annotation]


def _submodel(annotation: Any) -> type[BaseModel] | None:
    for member in _unwrap(annotation):
        if isinstance(member, type) and issubclass(member, BaseModel):
            return member
    return None


def _model_at(path: Sequence[str | int]) -> type[BaseModel] | None:
    model: type[BaseModel] | None = ControllerConfig
    for part in path:
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            return None
        model = _submodel(model.model_fields[part].annotation)
    return model


def _suggest(name: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    if close:
        return f" (did you mean {close[0]!r}?)"
    return f"; valid keys here: {', '.join(choices)}"


_SENSITIVE: Final = ("dsn", "password")


def dotted_key(loc: Sequence[str | int]) -> str:
    """A validation error location as the dotted key an operator writes (``rest.tls.cert``)."""
    out = ""
    for part in loc:
        if not out:
            out = str(part)
        else:
            out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "nothing (null)"
    return f"a {type(value).__name__}"


def _reason(err: ErrorDetails, key: str) -> str:
    kind = err["type"]
    value = err.get("input")
    if kind == "missing":
        return "required key is missing"
    if kind == "extra_forbidden":
        loc = err["loc"]
        model = _model_at(loc[:-1])
        name = str(loc[-1])
        return "unknown key" + (_suggest(name, tuple(model.model_fields)) if model else "")
    if kind == "invalid_key":
        return "keys must be strings"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"must be a mapping (a YAML section), got {_kind(value)}"
    msg = err["msg"]
    if kind == "value_error":
        msg = msg.removeprefix("Value error, ")
    msg = msg[:1].lower() + msg[1:]
    if kind == "string_type" and isinstance(value, bool | int | float):
        msg += "; quote the value in YAML"
    if isinstance(value, str | int | float | bool) and not any(s in key for s in _SENSITIVE):
        shown = repr(value)
        msg += f" (got {shown if len(shown) <= 60 else shown[:57] + '...'})"
    return msg


def _problems_of(exc: ValidationError, origins: Mapping[str, str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        error = (err.get("ctx") or {}).get("error")
        if isinstance(error, _Problems):
            items = [(dotted_key((*loc, *rel.split("."))), reason) for rel, reason in error.problems]
        else:
            key = dotted_key(loc)
            items = [(key, _reason(err, key))]
        for key, reason in items:
            problem: dict[str, Any] = {"key": key, "reason": reason}
            var = origins.get(key)
            if var is not None:
                problem["reason"] = f"{reason} (set by environment variable {var})"
                problem["env"] = var
            out.append(problem)
    return out


def _raise(source: str, problems: list[dict[str, Any]]) -> NoReturn:
    first = problems[0]
    message = f"{source}: {first['key'] or '(top level)'}: {first['reason']}"
    if len(problems) > 1:
        more = len(problems) - 1
        message += f" (and {more} more problem{'s' if more > 1 else ''})"
    raise ConfigError(message, code=ReasonCode.CONFIG_INVALID, file=source, errors=problems)
