"""How the modules and the ``pdsno`` CLI find and trust the GC, against the real tree: the endpoints the
collection calls, one set of environment variables for both, a certificate problem named as one, and a
URL that already ends in ``/api/v1``."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from pdsno.security.pki import create_ca
from tests.collection.conftest import VENV_BIN, Ansible, Call, RunningGC

# Every route a module or the inventory plugin calls, with the query parameters it relies on. The GC and
# the collection ship together: a route missing here is a regression, so this fails rather than skips.
CALLED = [
    ("get", "/api/v1/controllers", []),
    ("get", "/api/v1/devices", ["region", "status", "vendor", "type", "limit", "offset"]),
    ("get", "/api/v1/devices/{device_id}", []),
    ("post", "/api/v1/discovery", []),
    ("get", "/api/v1/discovery/{request_id}", []),
    ("get", "/api/v1/proposals", ["status", "limit", "offset"]),
    ("post", "/api/v1/proposals", ["check"]),
    ("get", "/api/v1/proposals/{proposal_id}", []),
    ("post", "/api/v1/proposals/{proposal_id}/approve", []),
    ("post", "/api/v1/proposals/{proposal_id}/deny", []),
    ("get", "/api/v1/policy", []),
    ("put", "/api/v1/policy", ["check"]),
    ("get", "/api/v1/audit", ["actor", "event_type", "subject", "since", "until", "after_seq", "limit"]),
]


@pytest.fixture(scope="module")
def wrong_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA that did not sign the GC's certificate."""
    return create_ca(tmp_path_factory.mktemp("other-ca"), common_name="Somebody else's CA").cert


def pdsno(gc: RunningGC, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The console script as an operator runs it, with only the given PDSNO_* variables set."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PDSNO_")}
    return subprocess.run([str(VENV_BIN / "pdsno"), *args], env={**clean, **env}, capture_output=True,
                          text=True, timeout=60, check=False)  # fmt: skip


def test_the_gc_serves_every_route_the_collection_calls(gc: RunningGC) -> None:
    routes = gc.routes()
    for method, path, params in CALLED:
        assert method in routes.get(path, {}), f"the GC does not serve {method.upper()} {path}"
        served = {p["name"] for p in routes[path][method].get("parameters", []) if p["in"] == "query"}
        assert set(params) <= served, f"{method.upper()} {path} lacks {set(params) - served}"


def test_cli_and_modules_read_the_same_variables(ansible: Ansible, gc: RunningGC) -> None:
    env = gc.env("viewer")
    assert set(env) == {"PDSNO_URL", "PDSNO_TOKEN", "PDSNO_CA_PATH"}
    done = pdsno(gc, "change", "list", "--json", **env)
    assert done.returncode == 0, done.stderr
    assert isinstance(json.loads(done.stdout), list) and done.stderr == ""
    # The modules take all three from the same environment (Ansible.run sets exactly gc.env()).
    (found,) = ansible.modules(Call("nib_info", {"gather": ["controllers"]}))
    assert not found["failed"] and found["controllers"], found


def test_the_old_cli_variable_still_works_with_a_warning(gc: RunningGC) -> None:
    env = gc.env("viewer")
    env["PDSNO_CA"] = env.pop("PDSNO_CA_PATH")
    done = pdsno(gc, "change", "list", "--json", **env)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "pdsno: warning: PDSNO_CA is deprecated, set PDSNO_CA_PATH instead"
    # Both set: the new one wins, without a warning.
    done = pdsno(gc, "change", "list", "--json", **env, PDSNO_CA_PATH=env["PDSNO_CA"])
    assert done.returncode == 0 and done.stderr == "", done.stderr


def test_a_ca_that_did_not_sign_the_gcs_certificate_is_a_tls_error(
    ansible: Ansible, gc: RunningGC, wrong_ca: Path
) -> None:
    done = pdsno(gc, "change", "list", **{**gc.env("viewer"), "PDSNO_CA_PATH": str(wrong_ca)})
    assert done.returncode == 1 and "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"pdsno: TLS_ERROR: {gc.url}: the GC's TLS certificate is not trusted ("), line
    assert "PDSNO_CA_PATH" in line and "--ca" in line

    by_option, by_env = ansible.modules(
        Call("nib_info", {"gather": ["controllers"], "ca_path": str(wrong_ca)}),
        Call("nib_info", {"gather": ["controllers"]}, env={"PDSNO_CA_PATH": str(wrong_ca)}),
    )
    for failed in (by_option, by_env):
        assert failed["failed"] and failed["code"] == "TLS_ERROR" and failed["http_status"] is None, failed
        assert "certificate" in failed["msg"] and "ca_path (PDSNO_CA_PATH)" in failed["msg"]


def test_a_url_that_ends_in_the_api_prefix_works(ansible: Ansible, gc: RunningGC) -> None:
    for url in (gc.url + "/api/v1", gc.url + "/api/v1/"):
        done = pdsno(gc, "change", "list", "--json", **{**gc.env("viewer"), "PDSNO_URL": url})
        assert done.returncode == 0, done.stderr
    by_option, by_env = ansible.modules(
        Call("nib_info", {"gather": ["controllers"], "url": gc.url + "/api/v1"}),
        Call("nib_info", {"gather": ["controllers"]}, env={"PDSNO_URL": gc.url + "/api/v1/"}),
    )
    assert not by_option["failed"] and not by_env["failed"], (by_option, by_env)


def test_a_url_that_is_not_the_gcs_gets_a_clear_message(ansible: Ansible, gc: RunningGC) -> None:
    done = pdsno(gc, "change", "list", **{**gc.env("viewer"), "PDSNO_URL": gc.url + "/pdsno"})
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"pdsno: NOT_FOUND: GET {gc.url}/pdsno/api/v1/proposals"), line
    assert "not an answer of the PDSNO API" in line and "PDSNO_URL must be the GC's address" in line

    (failed,) = ansible.modules(Call("nib_info", {"gather": ["controllers"], "url": gc.url + "/pdsno"}))
    assert failed["failed"] and (failed["code"], failed["http_status"]) == ("HTTP_404", 404), failed
    assert "is url the GC's address" in failed["msg"]
