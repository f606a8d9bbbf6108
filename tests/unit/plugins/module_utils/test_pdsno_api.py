"""The NBI client's pure parts: paths, error mapping, option checks, waiting; and a real refused connection."""

import socket
import ssl
from urllib.error import URLError

import pytest

from ansible_collections.pdsno.net.plugins.module_utils.pdsno_api import (
    NOT_THE_API,
    TIMED_OUT,
    TRANSPORT_ERROR,
    PdsnoApiError,
    PdsnoClient,
    base_url,
    build_path,
    error_from_response,
    quote_id,
    tls_failure,
    wait_for,
)


def test_build_path_leaves_out_unset_parameters_and_repeats_lists():
    assert build_path("/devices") == "/api/v1/devices"
    assert build_path("/devices", {"region": None, "status": None}) == "/api/v1/devices"
    path = build_path("/devices", {"type": "router", "region": "zone-a", "limit": 1000, "tags": ["a", "b"]})
    assert path == "/api/v1/devices?limit=1000&region=zone-a&tags=a&tags=b&type=router"


def test_build_path_writes_booleans_as_the_api_reads_them():
    assert build_path("/proposals", {"check": True}) == "/api/v1/proposals?check=true"
    assert build_path("/proposals", {"check": False}) == "/api/v1/proposals?check=false"


@pytest.mark.parametrize(
    "url", ["https://gc:8443", "https://gc:8443/", "https://gc:8443/api/v1", "https://gc:8443/api/v1/"]
)
def test_the_url_may_name_the_api_prefix(url):
    assert base_url(url) == "https://gc:8443"


def test_a_tls_failure_is_told_from_other_connection_errors():
    untrusted = ssl.SSLCertVerificationError(1, "certificate verify failed")
    # urllib wraps the handshake's error in a URLError; open_url may also let it through as it is.
    assert tls_failure(URLError(untrusted)) is untrusted
    assert tls_failure(untrusted) is untrusted
    assert tls_failure(URLError(ConnectionRefusedError(111, "Connection refused"))) is None
    assert tls_failure(OSError("no route to host")) is None


def test_ids_are_one_path_segment():
    assert quote_id("nib-dev-0200") == "nib-dev-0200"
    assert quote_id("../policy") == "..%2Fpolicy"
    assert quote_id("a b?c") == "a%20b%3Fc"


def test_the_gcs_reason_code_and_message_are_kept():
    error = error_from_response(
        409, b'{"code": "FOUR_EYES_VIOLATION", "message": "olga proposed it"}', "POST", "/api/v1/x"
    )
    assert (error.code, error.status) == ("FOUR_EYES_VIOLATION", 409)
    assert error.message == "POST /api/v1/x: HTTP 409 FOUR_EYES_VIOLATION: olga proposed it"
    assert error.as_result() == {"msg": error.message, "code": "FOUR_EYES_VIOLATION", "http_status": 409}


@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        (b"", "HTTP_502", "no response body"),
        (b"<html>bad gateway</html>", "HTTP_502", "<html>bad gateway</html>"),
        (b'{"detail": "Not Found"}', "HTTP_502", "Not Found"),
        (b"[1, 2]", "HTTP_502", "[1, 2]"),
    ],
    ids=["empty", "html", "fastapi-detail", "json-list"],
)
def test_errors_without_a_pdsno_body_still_say_what_happened(body, code, message):
    error = error_from_response(502, body, "GET", "/api/v1/health")
    assert error.code == code
    assert error.message.endswith(f"{message} ({NOT_THE_API})")


@pytest.mark.parametrize(
    ("url", "token", "code"), [("", "t", "INVALID_REQUEST"), ("https://gc", "", "UNAUTHENTICATED")]
)
def test_a_client_needs_a_url_and_a_token(url, token, code):
    with pytest.raises(PdsnoApiError) as caught:
        PdsnoClient(url, token)
    assert caught.value.code == code


def test_a_gc_that_does_not_listen_is_reported_as_unreachable():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # The socket is closed: nothing listens on the port any more.
    client = PdsnoClient(f"http://127.0.0.1:{port}/", "pdsno_x", timeout=5)
    assert client.base_url == f"http://127.0.0.1:{port}"
    with pytest.raises(PdsnoApiError) as caught:
        client.get("/health")
    assert caught.value.code == TRANSPORT_ERROR
    assert caught.value.status is None
    assert "cannot reach the GC" in caught.value.message


def test_wait_for_returns_the_first_result_that_is_done():
    answers = iter(["running", "running", "done"])
    seen = []

    def fetch():
        seen.append(next(answers))
        return seen[-1]

    assert wait_for(fetch, lambda state: state == "done", timeout=10, interval=0.01, what="x") == "done"
    assert seen == ["running", "running", "done"]


def test_wait_for_gives_up_after_the_timeout():
    with pytest.raises(PdsnoApiError) as caught:
        wait_for(lambda: "running", lambda state: False, timeout=0.3, interval=0.1, what="the run")
    assert caught.value.code == TIMED_OUT
    assert "the run" in caught.value.message


def test_wait_for_lets_done_stop_early():
    def done(state):
        raise PdsnoApiError("denied", code="PROPOSAL_DENIED")

    with pytest.raises(PdsnoApiError) as caught:
        wait_for(lambda: "DENIED", done, timeout=10, interval=0.01, what="x")
    assert caught.value.code == "PROPOSAL_DENIED"
