"""``PDSNO_<SECTION>__<KEY>`` environment overrides of the configuration file.

pydantic-settings reads each variable into the nested document it stands for; this module first checks
the name against the schema (so a typo is refused with a "did you mean", not ignored) and records which
variable set which key, so that a bad value is reported with the variable that set it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Optional

from pydantic import BaseModel, create_model
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict, SettingsError

from pdsno.config.problems import _submodel, _suggest, _unwrap
from pdsno.config.schema import ControllerConfig

ENV_PREFIX: Final = "PDSNO_"
CONFIG_ENV_VAR: Final = "PDSNO_CONFIG"
"""Names the configuration file (read by the CLI); never treated as an override."""


def _allows_none(annotation: Any) -> bool:
    return type(None) in _unwrap(annotation)


_NULLS: Final = frozenset({"", "~", "null", "Null", "NULL"})


class _EnvLayer(BaseSettings):
    """How pydantic-settings names and nests overrides: ``PDSNO_`` then the dotted key with ``__``."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__", case_sensitive=False)


# The sections of the schema as optional fields: the layer is only read from, never validated (the file's
# document, overrides merged in, is validated once by ControllerConfig).
_OVERRIDABLE: Final[dict[str, Any]] = {
    name: (Optional[info.annotation], None)  # noqa: UP045 - the annotation is a runtime value
    for name, info in ControllerConfig.model_fields.items()
}
_Overrides: Final = create_model("_Overrides", __base__=_EnvLayer, **_OVERRIDABLE)


class _MappingEnvSource(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping instead of ``os.environ``."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(_Overrides)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {name.lower(): value for name, value in self._environ.items()}


def _override(var: str, raw: str, annotation: Any) -> dict[str, Any]:
    """One variable as the nested document pydantic-settings reads from it (JSON for lists and mappings).

    An empty value (or ``null``, ``~``) clears an optional key, as in YAML. Raises SettingsError.
    """
    if raw.strip() in _NULLS and _allows_none(annotation):
        parts = var[len(ENV_PREFIX) :].lower().split("__")
        tree: dict[str, Any] = {parts[-1]: None}
        for part in reversed(parts[:-1]):
            tree = {part: tree}
        return tree
    return _MappingEnvSource({var: raw})()


def _merge(into: dict[str, Any], override: Mapping[str, Any], at: str = "") -> str | None:
    """Deep-merge ``override`` into ``into`` in place; the dotted key that is not a mapping in the file, if any."""
    for key, value in override.items():
        here = f"{at}.{key}" if at else key
        if not isinstance(value, Mapping):
            into[key] = value
            continue
        child = into.get(key)
        if child is None:
            child = {}
        elif not isinstance(child, Mapping):
            return here
        child = dict(child)
        into[key] = child
        clash = _merge(child, value, here)
        if clash is not None:
            return clash
    return None


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

        try:
            override = _override(var, environ[var], annotation)
        except SettingsError as exc:
            refuse(dotted, var, f"not a valid value: {exc.__cause__ or exc}")
            continue
        clash = _merge(data, override)
        if clash is not None:
            refuse(dotted, var, f"{clash} in the file is not a mapping")
            continue
        origins[dotted] = var
    return origins, problems
