-- Schema 2: what the secure controller fabric keeps (replay cache, message keys, NBI operators).

-- Messages already accepted, so that a replay is refused even after a restart; swept after expiry.
CREATE TABLE replay_cache (
    message_id TEXT PRIMARY KEY,
    sender_id  TEXT NOT NULL,
    seen_at    TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX replay_cache_expiry ON replay_cache (expires_at);

-- Keys that sign East/West messages. Admission issues one HMAC key per direction of a parent-child
-- pair (owner signs, peer verifies); Ed25519 keys (peer NULL) sign broadcasts. Two keys of one
-- owner overlap while a key is rotated; not_after closes the old one.
CREATE TABLE message_keys (
    key_id     TEXT PRIMARY KEY,
    owner_id   TEXT NOT NULL,
    peer_id    TEXT,
    kind       TEXT NOT NULL CHECK (kind IN ('hmac', 'ed25519')),
    material   TEXT NOT NULL,
    not_before TIMESTAMPTZ NOT NULL,
    not_after  TIMESTAMPTZ,
    version    INTEGER NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX message_keys_owner ON message_keys (owner_id, peer_id);

-- Northbound API users. Only a SHA-256 of each bearer token is kept (tokens are 256-bit random).
CREATE TABLE operators (
    operator_id TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    role        TEXT NOT NULL CHECK (role IN ('viewer', 'operator', 'approver', 'admin')),
    token_hash  TEXT NOT NULL UNIQUE,
    disabled    BOOLEAN NOT NULL DEFAULT false,
    version     INTEGER NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);
