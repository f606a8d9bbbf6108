"""``python -m pdsno.discovery [OPTIONS]``: the ``pdsno discover`` command on its own."""

from __future__ import annotations

from pdsno.cli.discover import discover
from pdsno.cli.main import invoke


def main() -> None:
    invoke(discover, prog_name="pdsno discover")


if __name__ == "__main__":
    main()
