"""``pdsno_json``: every task result of a playbook run, written once as one JSON object on stdout.

``{"results": [{"host", "task", "status", "changed", "diff", "msg"}...], "stats": {host: {...}}}``,
``status`` one of ok, changed, failed, skipped, unreachable. Ansible loads this file by path (see the
package docstring); it runs inside ansible-playbook, so it imports Ansible, which pdsno itself does not.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from ansible.plugins.callback import CallbackBase  # type: ignore[import-untyped]

DOCUMENTATION = """
    name: pdsno_json
    type: stdout
    short_description: one JSON object with every task result, for the pdsno ansible executor
    description: Collects each task's status, diff and message per host and prints them at the end.
"""

_MSG_MAX = 2000


class CallbackModule(CallbackBase):  # type: ignore[misc]
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "stdout"
    CALLBACK_NAME = "pdsno_json"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.results: list[dict[str, Any]] = []

    def _record(self, result: Any, status: str) -> None:
        outcome: dict[str, Any] = result._result
        changed = bool(outcome.get("changed"))
        diffs = outcome.get("diff")
        if "results" in outcome:  # a loop: the items carry the diffs
            diffs = [
                d for item in outcome["results"] if isinstance(item, dict) for d in _as_list(item.get("diff"))
            ]
        msg = outcome.get("msg") or outcome.get("stderr") or ""
        self.results.append(
            {
                "host": result._host.get_name(),
                "task": result._task.get_name(),
                "status": "changed" if status == "ok" and changed else status,
                "changed": changed,
                "diff": _as_list(diffs),
                "msg": str(msg)[:_MSG_MAX],
            }
        )

    def v2_runner_on_ok(self, result: Any) -> None:
        self._record(result, "ok")

    def v2_runner_on_failed(self, result: Any, ignore_errors: bool = False) -> None:
        self._record(result, "ok" if ignore_errors else "failed")

    def v2_runner_on_skipped(self, result: Any) -> None:
        self._record(result, "skipped")

    def v2_runner_on_unreachable(self, result: Any) -> None:
        self._record(result, "unreachable")

    def v2_playbook_on_stats(self, stats: Any) -> None:
        summary = {host: stats.summarize(host) for host in sorted(stats.processed)}
        sys.stdout.write(json.dumps({"results": self.results, "stats": summary}, default=str) + "\n")
        sys.stdout.flush()


def _as_list(diff: Any) -> list[Any]:
    if not diff:
        return []
    return list(diff) if isinstance(diff, list) else [diff]
