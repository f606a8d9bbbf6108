"""What the commands that act for a controller share: the --config option, its identity."""

from __future__ import annotations

from pathlib import Path

import click

from pdsno.config import ControllerConfig, load_config
from pdsno.security.keys import Ed25519Signer, load_or_create_private_key, load_private_key

config_option = click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="PDSNO_CONFIG",
    required=True,
    help="Controller configuration file (or set PDSNO_CONFIG).",
)


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
