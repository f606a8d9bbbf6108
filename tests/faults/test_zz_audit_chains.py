"""Last in the fault suite: after every fault, each controller's audit chain is intact, walked by
`pdsno audit verify` and as each controller reports its own check up the tree."""

from __future__ import annotations

import subprocess
from typing import Any

from tests.runtime.hierarchy import PDSNO, World, gc_api, wait_for


def test_every_audit_chain_verifies(world: World) -> None:
    for host, proc in world.procs.items():
        done = subprocess.run([str(PDSNO), "audit", "verify", "--config", str(proc.config)],
                              capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
        assert done.returncode == 0, f"{host}: {done.stdout}{done.stderr}"


def test_the_gc_shows_every_controllers_own_audit_check(world: World, operator: str) -> None:
    """Each controller checks its chain and says so in its heartbeats; the GC shows its RCs' and, as the
    RCs pass them up, their LCs' (GET /api/v1/controllers, the dashboard's controllers page)."""
    local = {proc.controller_id for host, proc in world.procs.items() if host.startswith("lc-")}

    def reported() -> dict[str, Any]:
        with gc_api(world, operator) as api:
            views = api.get("/api/v1/controllers").json()
        found = {v["controller_id"]: v["audit"] for v in views}
        found.update({c["controller_id"]: c["audit"] for v in views for c in v["children"]})
        return (
            found
            if set(found) >= local | {p.controller_id for p in world.procs.values()} and all(found.values())
            else {}
        )

    audits = wait_for(reported, 60, "every controller's audit status at the GC")
    assert all(a["ok"] and a["head_seq"] > 0 and a["problem"] is None for a in audits.values()), audits
