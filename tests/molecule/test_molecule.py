"""Every molecule scenario of the collection (extensions/molecule/*), run as CI runs it: `molecule test`
builds a lab, deploys into it over ssh, checks idempotence and the scenario's verify play, and takes the
lab down. Needs root (the lab's network namespaces)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = sorted(p.parent.name for p in (ROOT / "extensions" / "molecule").glob("*/molecule.yml"))
TIMEOUT_S = 1200

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root")


def test_every_role_has_a_scenario_or_is_covered() -> None:
    roles = {p.name for p in (ROOT / "roles").iterdir() if (p / "tasks" / "main.yml").is_file()}
    # The controller roles need a whole hierarchy: the lab scenario deploys them (and pki and
    # pdsno_service, which the mosquitto scenario exercises too).
    covered_by_lab = {
        "controller",
        "global_controller",
        "regional_controller",
        "local_controller",
        "pki",
        "pdsno_service",
    }
    # An optional add-on with nothing to deploy it beside in the lab inventory: its configuration is
    # rendered and checked by tests/collection/test_prometheus_role.py.
    covered_elsewhere = {"prometheus"}
    assert roles - covered_by_lab - covered_elsewhere <= set(SCENARIOS), (
        roles - covered_by_lab - set(SCENARIOS)
    )
    assert "lab" in SCENARIOS


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_molecule_scenario(scenario: str) -> None:
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
        "NO_COLOR": "1",
    }
    done = subprocess.run(
        [str(Path(sys.executable).with_name("molecule")), "test", "--scenario-name", scenario],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, (
        f"molecule test -s {scenario} failed:\n{done.stdout[-6000:]}\n{done.stderr[-4000:]}"
    )
    for step in ("converge", "idempotence", "verify"):
        if step == "idempotence" or (ROOT / "extensions" / "molecule" / scenario / f"{step}.yml").is_file():
            assert f"{step}: Executed: Successful" in done.stdout + done.stderr, step
