"""A controller's PostgreSQL NIB restarted as a crash would (``pg_ctl restart -m immediate``) while the
controller keeps its store open: on a server with PostgreSQL's durable defaults every write acknowledged
before the restart is there after it, the first write after it goes through on a fresh connection, and
the audit chain verifies. (With ``synchronous_commit=off`` the same run loses the last few acknowledged
commits; a controller on such a server says so when it starts.)"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pdsno.audit.verify import verify_log
from pdsno.nib.connect import open_nib
from pdsno.nib.models import Device, EventDraft
from pdsno.security.keys import Ed25519Signer
from tests.runtime.postgres_server import PostgresServer

pytestmark = pytest.mark.postgresql
N = 40


@pytest.fixture
def own_server() -> Iterator[PostgresServer]:
    """A server of this test's own, durable: restarting the suite's shared one would cut off other tests'
    pools, and that one trades durability for speed."""
    server = PostgresServer(durable=True)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def signer() -> Ed25519Signer:
    return Ed25519Signer("regional_cntl_zone-a_1", Ed25519PrivateKey.generate())


def _device(n: int) -> Device:
    return Device(mac_address=f"02:00:00:00:{n // 256:02x}:{n % 256:02x}", hostname=f"dev-{n}")


async def test_a_restarted_postgresql_loses_no_acknowledged_write(
    own_server: PostgresServer, signer: Ed25519Signer
) -> None:
    store = await open_nib(
        "postgresql", dsn=own_server.create_database(), signer=signer, create=True, pool_size=2
    )
    try:

        async def write(n: int) -> None:
            found = EventDraft(event_type="DEVICE_DISCOVERED", actor=signer.signer_id, subject=f"dev-{n}")
            (await store.put_device(_device(n), events=[found])).unwrap()

        for n in range(N):
            await write(n)
        own_server.restart()
        for n in range(N, 2 * N):
            await write(n)
        assert await store.count_devices() == 2 * N, f"{2 * N} written, all kept"
        report = await verify_log(store, {signer.signer_id: signer.private_key.public_key()})
        assert report.ok, report.as_dict()
        assert report.checked >= 2 * N
    finally:
        await store.close()


async def test_a_server_that_may_lose_commits_is_named_when_the_store_opens(
    postgres_server: PostgresServer, own_server: PostgresServer, signer: Ed25519Signer
) -> None:
    # The suite's shared server runs with fsync and synchronous_commit off (speed); a controller on such a
    # NIB logs this at start (pdsno.controller.node).
    for server, gaps in ((postgres_server, {"fsync": "off", "synchronous_commit": "off"}), (own_server, {})):
        store = await open_nib("postgresql", dsn=server.create_database(), signer=signer, create=True)
        try:
            assert dict(store.durability_gaps) == gaps
        finally:
            await store.close()
