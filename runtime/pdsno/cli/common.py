"""What every ``pdsno`` command shares: the --config option, opening the NIB, printing results."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click

from pdsno.config import ControllerConfig, load_config
from pdsno.security.keys import Ed25519Signer, load_or_create_private_key, load_private_key

T = TypeVar("T")

config_option = click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="PDSNO_CONFIG",
    required=True,
    help="Controller configuration file (or set PDSNO_CONFIG).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def load(config_path: Path) -> ControllerConfig:
    return load_config(config_path)


def identity_signer(config: ControllerConfig, *, create: bool = False) -> tuple[Ed25519Signer, bool]:
    """This controller's signer; with ``create`` the key file is generated on first use."""
    path = config.security.identity_key
    if create:
        key, created = load_or_create_private_key(path)
    else:
        key, created = load_private_key(path), False
    return Ed25519Signer(config.controller.id, key), created


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))
