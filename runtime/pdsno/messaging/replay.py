"""The replay cache: the id of every message accepted, kept until its timestamp leaves the clock window.

The check is a dictionary lookup; the id is appended to a log in the controller's data directory before
the message is acted on, and a restart reads the log back, so a replay stays refused across restarts.
Each id costs one ``write(2)`` into the page cache: a crash of the process loses none (the kernel holds
them), a power cut may lose the last ones, the same promise as the SQLite NIB's own commits (WAL,
``synchronous=NORMAL``). A table in the NIB cost a transaction per batch of messages, most of a signed
request's price beside a bare endpoint (docs/performance.md); this costs a few microseconds.

Files ``replay-<unix time>.log``, one line per message: ``<expires_at, unix seconds> <message_id>`` (an
expiry of 0 takes back an id whose handling failed, :meth:`ReplayLog.forget`). A new
file is started every ``rotate_s``; a file goes once every id in it has expired. Lines a power cut may
have torn are skipped when the log is read back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
from datetime import datetime
from pathlib import Path

from pdsno.errors import NIBError, ReasonCode

ROTATE_S = 60.0
log = logging.getLogger(__name__)
_FILE = re.compile(r"^replay-(\d+)\.log$")


class ReplayLog:
    """Message ids seen within the clock window, kept in ``directory`` (created 0700)."""

    def __init__(self, directory: Path, *, rotate_s: float = ROTATE_S) -> None:
        if rotate_s <= 0:
            raise ValueError("rotate_s must be positive")
        self.directory = directory
        self._rotate_s = rotate_s
        self._seen: dict[str, float] = {}
        self._files: dict[Path, float] = {}  # each file's latest expiry: when it can go
        self._fd = -1
        self._path: Path | None = None
        self._rotate_at = 0.0
        try:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._load(time.time())
        except OSError as exc:
            raise NIBError(f"cannot read the replay log in {directory}: {exc}", path=str(directory)) from None

    @classmethod
    async def open(cls, directory: Path, *, rotate_s: float = ROTATE_S) -> ReplayLog:
        """Read the log back off the event loop (a busy controller's holds up to ten minutes of ids)."""
        return await asyncio.to_thread(cls, directory, rotate_s=rotate_s)

    def __len__(self) -> int:
        return len(self._seen)

    def first_sighting(self, message_id: str, expires_at: datetime) -> bool:
        """True if ``message_id`` was not seen before; it is then in the log when this returns.

        ``message_id`` is an envelope's (a UUID: no blanks, no line breaks).
        """
        if message_id in self._seen:
            return False
        now = time.time()
        if now >= self._rotate_at:
            self._rotate(now)
        expiry = expires_at.timestamp()
        try:
            os.write(self._fd, f"{expiry:.6f} {message_id}\n".encode())
        except OSError as exc:
            # Not remembered, so not accepted: the sender's retry finds the controller able again.
            raise NIBError(
                f"cannot record message {message_id} in the replay log {self._path}: {exc}",
                code=ReasonCode.NIB_UNAVAILABLE,
                path=str(self._path),
            ) from None
        self._seen[message_id] = expiry
        if self._path is not None and expiry > self._files[self._path]:
            self._files[self._path] = expiry
        return True

    def forget(self, message_id: str) -> None:
        """Take back an accepted id whose handling failed, so that the copy delivered again (MQTT
        redelivers what was not acknowledged) is handled, not refused as a replay. Handling that failed
        left nothing behind, so handling a replay of it instead is no worse."""
        if self._seen.pop(message_id, None) is None:
            return
        try:
            os.write(self._fd, f"0 {message_id}\n".encode())
        except OSError as exc:
            # Forgotten here still; after a restart the id would be refused, as it would have been.
            log.warning("could not note a forgotten message id in the replay log", extra={"error": str(exc)})

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _load(self, now: float) -> None:
        for path in sorted(self.directory.iterdir()):
            if not _FILE.match(path.name):
                continue
            latest = 0.0
            for line in path.read_bytes().splitlines():
                expiry_text, _, message_id = line.decode("ascii", "replace").partition(" ")
                try:
                    expiry = float(expiry_text)
                except ValueError:
                    continue
                latest = max(latest, expiry)
                if expiry > now and message_id:
                    self._seen[message_id] = expiry
                else:  # expired, or forgotten after it was written
                    self._seen.pop(message_id, None)
            self._files[path] = latest
        self._rotate(now)

    def _rotate(self, now: float) -> None:
        """A new file; expired ids leave memory and files holding nothing else go."""
        self.close()
        self._seen = {m: expiry for m, expiry in self._seen.items() if expiry > now}
        for path, latest in list(self._files.items()):
            if latest <= now:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                del self._files[path]
        path = self.directory / f"replay-{int(now * 1000)}.log"
        try:
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        except OSError as exc:
            raise NIBError(f"cannot open the replay log {path}: {exc}", path=str(path)) from None
        self._path = path
        self._files.setdefault(path, 0.0)
        self._rotate_at = now + self._rotate_s
