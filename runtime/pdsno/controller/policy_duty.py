"""The policy down the tree (reference-design §6, decisions C5).

The GC holds the policy: version 1 is its configuration's ``policy`` section; ``PUT /api/v1/policy``
makes the next. It publishes every version signed (Ed25519, like heartbeats) and **retained** on
``pdsno/policy/global``, so a controller that starts later still gets it. Each RC checks the GC's
signature, keeps a newer version and publishes it again, signed by itself, on
``pdsno/policy/<region>`` for its local controllers, which know their RC's key but not the GC's.
A version is kept only if it is newer than the one held: a retained copy read again, or a replay,
changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError

from pdsno.admission.credentials import identity_key_id
from pdsno.config import PolicyContent
from pdsno.errors import PdsnoError, ReasonCode
from pdsno.messaging.envelope import BROADCAST, MessageRejected, MessageType
from pdsno.messaging.keys import SigningKey
from pdsno.messaging.messages import PolicyUpdate
from pdsno.messaging.sign import seal
from pdsno.messaging.verify import Verifier
from pdsno.nib.models import Decision, EventDraft, Policy, PolicyScope
from pdsno.nib.store import NIBStore
from pdsno.security.keys import Ed25519Signer

log = logging.getLogger(__name__)

POLICY_ID = "pdsno-policy"

Publish = Callable[[str, bytes], Awaitable[None]]


class PolicyHolder:
    """The policy in force at one controller: the newest version it holds, or its configuration's."""

    def __init__(self, store: NIBStore, fallback: PolicyContent) -> None:
        self._store = store
        self._fallback = fallback
        self.version: str | None = None
        self.content: PolicyContent = fallback

    async def load(self) -> None:
        held = await self._store.get_active_policy(PolicyScope.GLOBAL)
        if held is not None:
            self.version, self.content = held.policy_version, PolicyContent.model_validate(held.content)

    def is_newer(self, version: str) -> bool:
        return self.version is None or _number(version) > _number(self.version)

    async def keep(self, update: PolicyUpdate, *, actor: str) -> bool:
        """Store ``update`` if it is newer than the version held; False if it was not."""
        if not self.is_newer(update.policy_version):
            return False
        content = PolicyContent.model_validate(update.content)
        policy = Policy(
            # one row per version: the table keeps superseded versions (retention sweeps them)
            policy_id=f"{update.policy_id}-v{update.policy_version}",
            policy_version=update.policy_version,
            scope=PolicyScope.GLOBAL,
            content=content.model_dump(mode="json"),
            distributed_by=update.distributed_by,
            valid_from=update.valid_from,
        )
        stored = await self._store.distribute_policy(
            policy,
            events=[EventDraft(event_type="POLICY_APPLIED", actor=actor, subject=update.policy_id,
                               decision=Decision.APPROVED,
                               payload={"policy_version": update.policy_version, "from": update.distributed_by})],
        )  # fmt: skip
        if not stored.success:
            raise PdsnoError(stored.message, code=stored.error or ReasonCode.CONFLICT)
        self.version, self.content = update.policy_version, content
        return True

    def as_update(self, distributed_by: str) -> PolicyUpdate:
        assert self.version is not None
        return policy_update(self.version, self.content, distributed_by)

    def view(self) -> dict[str, Any]:
        return {
            "policy_id": POLICY_ID,
            "policy_version": self.version,
            "content": self.content.model_dump(mode="json"),
        }


def policy_update(version: str, content: PolicyContent, distributed_by: str) -> PolicyUpdate:
    return PolicyUpdate(policy_id=POLICY_ID, policy_version=version, scope=PolicyScope.GLOBAL,
                        content=content.model_dump(mode="json"), distributed_by=distributed_by)  # fmt: skip


def _number(version: str) -> int:
    return int(version) if version.isdigit() else -1


class PolicyPublisher:
    """Signs and publishes (retained) the policy a controller holds, on its own policy topic."""

    def __init__(self, holder: PolicyHolder, *, me: Ed25519Signer, topic: str, publish: Publish) -> None:
        self._holder = holder
        self._me = me
        self._topic = topic
        self._publish = publish

    async def publish(self) -> None:
        if self._holder.version is None:
            return
        key = SigningKey.from_ed25519(
            identity_key_id(self._me.signer_id), self._me.signer_id, self._me.private_key
        )
        envelope = seal(MessageType.POLICY_UPDATE, self._holder.as_update(self._me.signer_id),
                        sender_id=self._me.signer_id, recipient_id=BROADCAST, key=key)  # fmt: skip
        await self._publish(self._topic, envelope.to_bytes())


class GlobalPolicy:
    """The GC: the first version from its configuration, later ones from ``PUT /api/v1/policy``."""

    def __init__(self, holder: PolicyHolder, publisher: PolicyPublisher, *, me: str) -> None:
        self.holder = holder
        self._publisher = publisher
        self._me = me

    async def start(self) -> None:
        await self.holder.load()
        if self.holder.version is None:
            await self.holder.keep(policy_update("1", self.holder.content, self._me), actor=self._me)
        await self._publisher.publish()

    async def put(
        self, content: dict[str, Any], *, actor: str, expected_version: str | None, check: bool = False
    ) -> bool:
        """Make ``content`` the next version and distribute it; False if it equals the current one.
        With ``check``, refuse it or answer whether it would change anything, and write nothing."""
        if expected_version is not None and expected_version != self.holder.version:
            raise PdsnoError(
                f"the policy is at version {self.holder.version}, not {expected_version}",
                code=ReasonCode.POLICY_VERSION_MISMATCH,
                current_version=self.holder.version,
            )
        try:
            wanted = PolicyContent.model_validate(content)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise PdsnoError(f"policy {where}: {first['msg']}", code=ReasonCode.INVALID_REQUEST) from None
        if wanted == self.holder.content:
            return False
        if check:
            return True
        version = str(_number(self.holder.version or "0") + 1)
        await self.holder.keep(policy_update(version, wanted, self._me), actor=actor)
        await self._publisher.publish()
        return True


class PolicyFollower:
    """An RC or LC: keep what its parent publishes; an RC passes it on to its local controllers."""

    def __init__(
        self,
        holder: PolicyHolder,
        *,
        me: str,
        parent_id: str,
        verifier: Verifier,
        relay: PolicyPublisher | None = None,
    ) -> None:
        self.holder = holder
        self._me = me
        self._parent = parent_id
        self._verifier = verifier
        self._relay = relay

    async def start(self) -> None:
        await self.holder.load()
        if self._relay is not None:
            await self._relay.publish()

    async def on_mqtt(self, topic: str, payload: bytes) -> None:
        try:
            envelope = await self._verifier.verify(
                payload, transport="mqtt", source=topic, retained_state=True
            )
        except MessageRejected:
            return  # audited by the verifier
        if envelope.sender_id != self._parent or envelope.message_type is not MessageType.POLICY_UPDATE:
            log.warning("ignored a policy message not from the parent", extra={"sender": envelope.sender_id})
            return
        update = envelope.payload_as(PolicyUpdate)
        try:
            kept = await self.holder.keep(update, actor=self._me)
        except ValidationError as exc:
            log.error("refused a policy that does not validate", extra={"error": str(exc)})
            return
        if kept:
            log.info("policy applied", extra={"policy_version": update.policy_version})
            if self._relay is not None:
                await self._relay.publish()
