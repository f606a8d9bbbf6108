"""``PDSNO_<SECTION>__<KEY>`` environment overrides of the configuration file."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel

from pdsno.config.problems import _submodel, _suggest, _unwrap
from pdsno.config.schema import ControllerConfig

ENV_PREFIX: Final = "PDSNO_"
CONFIG_ENV_VAR: Final = "PDSNO_CONFIG"
"""Names the configuration file (read by the CLI); never treated as an override."""


def _is_textual(annotation: Any) -> bool:
    """True if every non-None member of the annotation takes text (str, Path, enum or string Literal)."""
    members = [m for m in _unwrap(annotation) if m is not type(None)]
    for member in members:
        if get_origin(member) is Literal:
            if not all(isinstance(arg, str) for arg in get_args(member)):
                return False
        elif not (isinstance(member, type) and issubclass(member, str | Path)):
            return False
    return bool(members)


def _allows_none(annotation: Any) -> bool:
    return type(None) in _unwrap(annotation)


def _env_scalar(raw: str, annotation: Any) -> Any:
    """Turn an environment value into what the YAML file would have held for that key."""
    if _is_textual(annotation):
        if raw.strip() in ("", "~", "null", "Null", "NULL") and _allows_none(annotation):
            return None
        return raw
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return raw


_SECTIONS: Final = tuple(ControllerConfig.model_fields)


def _apply_env(
    data: dict[str, Any], environ: Mapping[str, str]
) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """Apply ``PDSNO_*`` overrides to ``data`` in place; return {dotted key: variable} and the problems."""
    origins: dict[str, str] = {}
    problems: list[dict[str, Any]] = []

    def refuse(key: str, var: str, reason: str) -> None:
        problems.append({"key": key, "reason": f"{reason} (environment variable {var})", "env": var})

    for var in sorted(environ):
        if not var.startswith(ENV_PREFIX) or var == CONFIG_ENV_VAR:
            continue
        rest = var[len(ENV_PREFIX) :]
        if "__" not in rest:
            lowered = rest.lower()
            section = next((s for s in _SECTIONS if lowered == s or lowered.startswith(s + "_")), None)
            if section is not None:
                hint = f"{ENV_PREFIX}{section.upper()}__{rest[len(section) + 1 :] or 'KEY'}"
                refuse(lowered, var, f"not a valid override name; levels are separated by '__', e.g. {hint}")
            continue  # some other PDSNO_* variable, not ours
        parts = rest.lower().split("__")
        dotted = ".".join(parts)
        if not all(parts):
            refuse(dotted, var, "not a valid override name (empty level between '__')")
            continue

        model: type[BaseModel] | None = ControllerConfig
        annotation: Any = None
        walked: list[str] = []
        ok = True
        for index, part in enumerate(parts):
            if model is None:
                refuse(dotted, var, f"{'.'.join(walked)} is a value, not a section")
                ok = False
                break
            if part not in model.model_fields:
                where = f"in section {'.'.join(walked)}" if walked else "at the top level"
                hint = _suggest(part, tuple(model.model_fields))
                refuse(dotted, var, f"unknown key {part!r} {where}{hint}")
                ok = False
                break
            annotation = model.model_fields[part].annotation
            walked.append(part)
            model = _submodel(annotation)
            if index == len(parts) - 1 and model is not None:
                refuse(dotted, var, f"{dotted} is a section; override its keys one by one")
                ok = False
        if not ok:
            continue

        node: dict[str, Any] = data
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = {}
            elif isinstance(child, Mapping):
                child = dict(child)
            else:
                refuse(dotted, var, f"{'.'.join(parts[: depth + 1])} in the file is not a mapping")
                ok = False
                break
            node[part] = child
            node = child
        if not ok:
            continue
        node[parts[-1]] = _env_scalar(environ[var], annotation)
        origins[dotted] = var
    return origins, problems
