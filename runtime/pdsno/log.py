"""Structured logs: one JSON object a line, ``{timestamp, level, controller_id, module, message, ...}``."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from pdsno.canonical import format_ts

_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self, controller_id: str | None) -> None:
        super().__init__()
        self._controller_id = controller_id

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": format_ts(datetime.fromtimestamp(record.created, UTC)),
            "level": record.levelname,
            "controller_id": self._controller_id,
            "module": record.name,
            "message": record.getMessage(),
        }
        # Anything passed with ``extra=`` travels as a field of its own, never inside the message.
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure_logging(level: str = "INFO", fmt: str = "json", controller_id: str | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(controller_id))
    else:
        prefix = f"{controller_id} " if controller_id else ""
        handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s {prefix}%(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
