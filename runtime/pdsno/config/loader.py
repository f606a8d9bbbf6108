"""Reading a configuration file: strict YAML, then the schema with environment overrides applied."""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from pdsno.config.env import _apply_env
from pdsno.config.problems import _kind, _problems_of, _raise
from pdsno.config.schema import ControllerConfig
from pdsno.errors import ConfigError, ReasonCode

# YAML


class StrictLoader(yaml.SafeLoader):
    """Safe loader that refuses duplicate keys (the last one would silently win)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[Hashable] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):
                continue
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {key!r}",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def yaml_error(source: str, exc: yaml.YAMLError) -> ConfigError:
    """A YAML syntax error as a one-line ConfigError naming the file, line and column."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        line, column = exc.problem_mark.line + 1, exc.problem_mark.column + 1
        problem = exc.problem or "syntax error"
        reason = f"invalid YAML: {problem}"
        return ConfigError(
            f"{source}: line {line}, column {column}: {reason}",
            file=source,
            errors=[{"key": "", "reason": reason, "line": line, "column": column}],
        )
    reason = f"invalid YAML: {exc}"
    return ConfigError(f"{source}: {reason}", file=source, errors=[{"key": "", "reason": reason}])


# --------------------------------------------------------------------------------------------------
# entry points


def parse_config(
    data: Any,
    *,
    source: str = "<config>",
    environ: Mapping[str, str] | None = None,
    base_dir: str | Path | None = None,
) -> ControllerConfig:
    """Validate an already parsed document (what ``yaml.safe_load`` returned) plus environment overrides.

    ``source`` names the document in messages; ``base_dir`` anchors relative paths; ``environ`` defaults to
    ``os.environ`` (pass ``{}`` to ignore the environment). Raises :class:`ConfigError`.
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        reason = f"the top level must be a mapping of sections, got {_kind(data)}"
        _raise(source, [{"key": "", "reason": reason}])
    document = dict(data)
    origins, problems = _apply_env(document, os.environ if environ is None else environ)
    context = {"base_dir": Path(base_dir)} if base_dir is not None else {}
    try:
        config = ControllerConfig.model_validate(document, context=context)
    except ValidationError as exc:
        problems.extend(_problems_of(exc, origins))
        _raise(source, problems)
    if problems:
        _raise(source, problems)
    return config


def _not_found(source: str, reason: str) -> ConfigError:
    return ConfigError(
        f"{source}: {reason}",
        code=ReasonCode.CONFIG_NOT_FOUND,
        file=source,
        errors=[{"key": "", "reason": reason}],
    )


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> ControllerConfig:
    """Read, validate and return the controller configuration in ``path``.

    ``environ`` (default ``os.environ``) supplies the ``PDSNO_<SECTION>__<KEY>`` overrides.
    Raises :class:`ConfigError` (``CONFIG_NOT_FOUND`` or ``CONFIG_INVALID``) with a one-line message.
    """
    file = Path(path)
    source = str(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise _not_found(source, "no such file") from None
    except IsADirectoryError:
        raise _not_found(source, "is a directory, not a file") from None
    except PermissionError:
        raise _not_found(source, "permission denied") from None
    except UnicodeDecodeError as exc:
        reason = f"not UTF-8 text (bad byte at offset {exc.start})"
        raise ConfigError(
            f"{source}: {reason}", file=source, errors=[{"key": "", "reason": reason}]
        ) from None
    except OSError as exc:
        raise _not_found(source, f"cannot read: {exc.strerror or exc}") from None
    try:
        data = yaml.load(text, Loader=StrictLoader)  # noqa: S506 - StrictLoader is a SafeLoader
    except yaml.YAMLError as exc:
        raise yaml_error(source, exc) from None
    if data is None:
        _raise(source, [{"key": "", "reason": "the file is empty; it needs at least a controller section"}])
    config = parse_config(data, source=source, environ=environ, base_dir=file.absolute().parent)
    config._source = file.absolute()
    return config
