"""Tables and live status lines for the ``pdsno`` commands.

Only a terminal gets rich output. When stdout is a pipe or a file a table is plain columns separated by
two spaces (no box drawing, no colour, no control codes), the same text scripts and tests have always
parsed; a status line goes to stderr, and only when stderr is a terminal. ``NO_COLOR`` set to anything
but the empty string (https://no-color.org) turns colour off, not the layout. ``--json`` output never
comes here.

rich is imported inside the functions that draw, never when this module is imported: ``pdsno discover``
imports it, and its start-up time is part of what the discovery benchmark measures.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING, Protocol

import click

if TYPE_CHECKING:
    from rich.console import Console

# Colours for the words that carry a verdict; anything else is printed as it is.
STYLES: dict[str, str] = {
    **dict.fromkeys(("EXECUTED", "up", "active", "ok", "running", "installed", "yes"), "green"),
    **dict.fromkeys(("PENDING", "QUEUED", "APPROVED", "EXECUTING", "building", "inactive"), "yellow"),
    **dict.fromkeys(("DENIED", "EXPIRED", "FAILED", "ROLLED_BACK", "DEGRADED", "degraded"), "red"),
    **dict.fromkeys(("down", "DEAD", "MISSING", "failed", "leftovers", "NO"), "red"),
}


def colour_off(environ: Mapping[str, str] | None = None) -> bool:
    """NO_COLOR is set to a non-empty value."""
    return bool((os.environ if environ is None else environ).get("NO_COLOR"))


def is_terminal(stream: IO[str] | None) -> bool:
    """``stream`` is an interactive terminal that can take control codes (not TERM=dumb)."""
    if stream is None or os.environ.get("TERM") == "dumb":
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False


def stdout_is_terminal() -> bool:
    return is_terminal(sys.stdout)


def console(file: IO[str] | None = None, *, stderr: bool = False, width: int | None = None) -> Console:
    """A rich console for a stream already known to be a terminal (or forced to be one, in tests)."""
    from rich.console import Console

    return Console(
        file=file,
        stderr=stderr,
        force_terminal=True,
        no_color=colour_off(),
        highlight=False,
        markup=False,
        emoji=False,
        width=width,
    )


def _cell(value: object) -> str:
    return "-" if value is None or value == "" else str(value)


def plain_table(
    headers: Sequence[str], rows: Iterable[Sequence[object]], *, right: Collection[int] = ()
) -> list[str]:
    """The lines of a table as plain columns: left-aligned (right-aligned for the ``right`` columns),
    two spaces apart, no trailing blanks."""
    cells = [list(headers), *([_cell(c) for c in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return [
        "  ".join(
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in cells
    ]


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    title: str | None = None,
    right: Collection[int] = (),
    file: IO[str] | None = None,
    terminal: bool | None = None,
    width: int | None = None,
) -> None:
    """Print a table to ``file`` (stdout): a rich table on a terminal, plain columns elsewhere.

    ``terminal`` overrides the detection; ``title`` is a line above the table; ``None`` and empty cells
    print as ``-``.
    """
    out = file if file is not None else sys.stdout
    data = [[_cell(c) for c in row] for row in rows]
    if not (is_terminal(out) if terminal is None else terminal):
        if title:
            click.echo(title, file=out)
        for line in plain_table(headers, data, right=right):
            click.echo(line, file=out)
        return
    from rich import box
    from rich.table import Table
    from rich.text import Text

    drawn = Table(
        title=Text(title, style="bold") if title else None,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        header_style="bold",
        pad_edge=False,
    )
    for i, header in enumerate(headers):
        drawn.add_column(header, justify="right" if i in right else "left", overflow="fold")
    for row in data:
        drawn.add_row(*(Text(c, style=STYLES.get(c, "")) for c in row))
    console(out, width=width).print(drawn)


def lines(parts: Iterable[tuple[str, str | None]], *, file: IO[str] | None = None) -> None:
    """Print one line on a rich console made of (text, style) parts (a style of None: unstyled)."""
    from rich.text import Text

    text = Text()
    for part, style in parts:
        text.append(part, style=style or "")
    console(file).print(text)


class Status(Protocol):
    def update(self, text: str) -> None: ...


class _Silent:
    def update(self, text: str) -> None:
        return None


class _Live:
    def __init__(self, status: object) -> None:
        self._status = status

    def update(self, text: str) -> None:
        from rich.text import Text

        self._status.update(Text(text))  # type: ignore[attr-defined]


@contextmanager
def status(
    text: str,
    *,
    enabled: bool = True,
    file: IO[str] | None = None,
    terminal: bool | None = None,
    poll: Callable[[float], str] | None = None,
    interval: float = 0.25,
) -> Iterator[Status]:
    """A status line with a spinner on stderr while the block runs, gone when it ends.

    Shown only when ``enabled`` (callers pass ``not as_json``) and stderr (``file``) is a terminal;
    otherwise the object's ``update`` does nothing. With ``poll`` a thread sets the line to
    ``poll(seconds since start)`` every ``interval``, for work that reports no progress of its own.
    """
    out = file if file is not None else sys.stderr
    if not enabled or not (is_terminal(out) if terminal is None else terminal):
        yield _Silent()
        return
    from rich.text import Text

    started = time.monotonic()
    with console(out).status(Text(text), spinner="dots") as shown:
        live = _Live(shown)
        stop = threading.Event()
        watcher: threading.Thread | None = None
        if poll is not None:
            ticker = poll

            def tick() -> None:
                while not stop.wait(interval):
                    live.update(ticker(time.monotonic() - started))

            watcher = threading.Thread(target=tick, name="pdsno-status", daemon=True)
            watcher.start()
        try:
            yield live
        finally:
            stop.set()
            if watcher is not None:
                watcher.join(timeout=1.0)
