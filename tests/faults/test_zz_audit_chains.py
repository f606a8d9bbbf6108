"""Last in the fault suite: after every fault, each controller's audit chain is intact."""

from __future__ import annotations

import subprocess

from tests.runtime.hierarchy import PDSNO, World


def test_every_audit_chain_verifies(world: World) -> None:
    for host, proc in world.procs.items():
        done = subprocess.run([str(PDSNO), "audit", "verify", "--config", str(proc.config)],
                              capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
        assert done.returncode == 0, f"{host}: {done.stdout}{done.stderr}"
