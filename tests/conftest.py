from __future__ import annotations

from collections import Counter

import pytest

pytest_plugins = ["tests.runtime.postgres_server", "tests.runtime.mosquitto_server"]

_CONTRACT = "tests/runtime/test_nib_contract.py"
_BACKENDS = ("sqlite", "postgresql")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One line per NIB backend, so a run shows the contract held on each (not only a row of dots)."""
    tally: dict[str, Counter[str]] = {backend: Counter() for backend in _BACKENDS}
    for outcome in ("passed", "failed", "error", "skipped"):
        for report in terminalreporter.stats.get(outcome, []):
            nodeid = getattr(report, "nodeid", "")
            if not nodeid.startswith(_CONTRACT) or getattr(report, "when", "call") not in ("call", "setup"):
                continue
            if outcome == "passed" and report.when != "call":
                continue
            for backend in _BACKENDS:
                if nodeid.endswith(f"[{backend}]"):
                    tally[backend][outcome] += 1
    if not any(tally.values()):
        return
    terminalreporter.section("NIB contract by backend")
    for backend, counts in tally.items():
        terminalreporter.write_line(
            f"{backend:<11} " + ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items()))
            if counts
            else f"{backend:<11} not run"
        )
