"""PDSNO runtime: the controller processes behind the ``pdsno.net`` Ansible collection."""

from __future__ import annotations

from functools import cache


@cache
def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pdsno")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0.0.0+unknown"


def __getattr__(name: str) -> str:
    # Looked up on first use: importlib.metadata costs ~75 ms that a scan's start-up need not pay.
    if name == "__version__":
        return _version()
    raise AttributeError(f"module 'pdsno' has no attribute {name!r}")
