"""The peer REST client against a real HTTP server on loopback: what it retries, and with what body."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from pdsno.errors import ReasonCode
from pdsno.transport.rest_client import PeerClient, PeerError


class Flaky(BaseHTTPRequestHandler):
    """Fails the first request with a 500 (after 'recording' it, as a receiver's replay cache would)."""

    seen: ClassVar[list[bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        status = 500 if not self.seen else (409 if body in self.seen else 202)
        self.seen.append(body)
        answer = b'{"code": "REPLAYED_MESSAGE", "message": "seen"}' if status == 409 else b'{"status": "ok"}'
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    Flaky.seen = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/ew/v1/messages"
    finally:
        httpd.shutdown()
        thread.join(timeout=5)


async def test_a_retry_after_a_server_error_carries_a_freshly_sealed_message(server: str) -> None:
    client = PeerClient(ca_file=None, backoff_s=(0.01,))
    sealed = iter([b'{"n": 1}', b'{"n": 2}'])

    async def seal() -> bytes:
        return next(sealed)

    try:
        assert await client.post(server, seal) == {"status": "ok"}
        assert Flaky.seen == [b'{"n": 1}', b'{"n": 2}']
    finally:
        await client.aclose()


async def test_the_same_bytes_again_are_refused_as_a_replay(server: str) -> None:
    client = PeerClient(ca_file=None, backoff_s=(0.01,))
    try:
        with pytest.raises(PeerError) as refused:
            await client.post(server, b'{"n": 1}')
        assert refused.value.code is ReasonCode.REPLAYED_MESSAGE and refused.value.status == 409
    finally:
        await client.aclose()
