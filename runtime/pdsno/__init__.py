"""PDSNO runtime: the controller processes behind the ``pdsno.net`` Ansible collection."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pdsno")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
