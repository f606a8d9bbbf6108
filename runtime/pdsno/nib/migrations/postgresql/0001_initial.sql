-- PDSNO NIB schema 1 (PostgreSQL 15).

CREATE TABLE devices (
    device_id        TEXT PRIMARY KEY,
    mac_address      TEXT NOT NULL UNIQUE,
    ip_address       TEXT,
    hostname         TEXT,
    vendor           TEXT,
    device_type      TEXT NOT NULL CHECK (device_type IN ('router','switch','server','endpoint','unknown')),
    firmware_version TEXT,
    region           TEXT,
    local_controller TEXT,
    status           TEXT NOT NULL CHECK (status IN ('active','inactive','unreachable','quarantined','degraded')),
    critical         BOOLEAN NOT NULL DEFAULT false,
    protected        BOOLEAN NOT NULL DEFAULT false,
    suspicious       BOOLEAN NOT NULL DEFAULT false,
    temp_scan_id     TEXT,
    discovery_method TEXT,
    first_seen       TIMESTAMPTZ,
    last_seen        TIMESTAMPTZ,
    missed_cycles    INTEGER NOT NULL DEFAULT 0,
    uptime_seconds   BIGINT,
    snmp_info        JSONB NOT NULL DEFAULT '{}',
    protocol_caps    JSONB NOT NULL DEFAULT '[]',
    custom_tags      JSONB NOT NULL DEFAULT '{}',
    version          INTEGER NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL
);
CREATE INDEX devices_ip ON devices (ip_address);
CREATE INDEX devices_lc ON devices (local_controller, status);
CREATE INDEX devices_region ON devices (region, status);
CREATE INDEX devices_last_seen ON devices (last_seen);

CREATE TABLE device_addresses (
    device_id  TEXT NOT NULL REFERENCES devices (device_id) ON DELETE CASCADE,
    ip_address TEXT NOT NULL,
    PRIMARY KEY (device_id, ip_address)
);
CREATE INDEX device_addresses_ip ON device_addresses (ip_address);

CREATE TABLE device_interfaces (
    device_id   TEXT NOT NULL REFERENCES devices (device_id) ON DELETE CASCADE,
    if_index    INTEGER NOT NULL,
    name        TEXT NOT NULL,
    mac_address TEXT,
    admin_up    BOOLEAN,
    oper_up     BOOLEAN,
    speed_bps   BIGINT,
    PRIMARY KEY (device_id, if_index)
);

CREATE TABLE controllers (
    controller_id TEXT PRIMARY KEY,
    role          TEXT NOT NULL CHECK (role IN ('global','regional','local')),
    region        TEXT,
    parent_id     TEXT,
    temp_id       TEXT,
    public_key    TEXT,
    certificate   JSONB NOT NULL DEFAULT '{}',
    validated_by  TEXT,
    status        TEXT NOT NULL
                  CHECK (status IN ('pending_validation','active','suspended','revoked','expired')),
    rest_url      TEXT,
    admitted_at   TIMESTAMPTZ,
    expires_at    TIMESTAMPTZ,
    last_seen     TIMESTAMPTZ,
    version       INTEGER NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL
);
CREATE INDEX controllers_region ON controllers (region, role, status);

CREATE TABLE config_proposals (
    proposal_id        TEXT PRIMARY KEY,
    config_payload     JSONB NOT NULL,
    config_hash        TEXT NOT NULL,
    category           TEXT NOT NULL CHECK (category IN ('LOW','MEDIUM','HIGH','EMERGENCY')),
    status             TEXT NOT NULL CHECK (status IN ('PENDING','QUEUED','APPROVED','DENIED','EXPIRED',
                           'EXECUTING','EXECUTED','FAILED','ROLLING_BACK','ROLLED_BACK','DEGRADED')),
    origin             TEXT NOT NULL,
    proposed_by        TEXT NOT NULL,
    approved_by        TEXT,
    target_devices     JSONB NOT NULL,
    impact_scope       TEXT NOT NULL CHECK (impact_scope IN ('local','regional','global')),
    rollback_payload   JSONB,
    execution_token_id TEXT,
    policy_version     TEXT,
    reason             TEXT,
    proposed_at        TIMESTAMPTZ,
    approved_at        TIMESTAMPTZ,
    executed_at        TIMESTAMPTZ,
    expires_at         TIMESTAMPTZ,
    version            INTEGER NOT NULL,
    created_at         TIMESTAMPTZ NOT NULL,
    updated_at         TIMESTAMPTZ NOT NULL
);
CREATE INDEX config_proposals_status ON config_proposals (status, updated_at);
CREATE INDEX config_proposals_hash ON config_proposals (config_hash);

CREATE TABLE execution_tokens (
    token_id       TEXT PRIMARY KEY,
    proposal_id    TEXT NOT NULL REFERENCES config_proposals (proposal_id) ON DELETE CASCADE,
    config_hash    TEXT NOT NULL,
    target_devices JSONB NOT NULL,
    approved_by    TEXT NOT NULL,
    issued_at      TIMESTAMPTZ NOT NULL,
    expires_at     TIMESTAMPTZ NOT NULL,
    constraints    JSONB NOT NULL DEFAULT '{}',
    signature      TEXT NOT NULL,
    consumed_at    TIMESTAMPTZ,
    consumed_by    TEXT,
    version        INTEGER NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL
);
CREATE INDEX execution_tokens_proposal ON execution_tokens (proposal_id);

CREATE TABLE policies (
    policy_id      TEXT PRIMARY KEY,
    policy_version TEXT NOT NULL,
    scope          TEXT NOT NULL CHECK (scope IN ('global','regional')),
    target_region  TEXT,
    content        JSONB NOT NULL,
    distributed_by TEXT NOT NULL,
    distributed_at TIMESTAMPTZ,
    valid_from     TIMESTAMPTZ,
    valid_until    TIMESTAMPTZ,
    is_active      BOOLEAN NOT NULL,
    version        INTEGER NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL
);
CREATE UNIQUE INDEX policies_scope_version ON policies (scope, COALESCE(target_region, ''), policy_version);
CREATE UNIQUE INDEX policies_one_active ON policies (scope, COALESCE(target_region, '')) WHERE is_active;

CREATE TABLE locks (
    lock_id            TEXT PRIMARY KEY,
    lock_type          TEXT NOT NULL CHECK (lock_type IN ('DEVICE_LOCK','CONFIG_LOCK','VALIDATION_LOCK')),
    subject_id         TEXT NOT NULL,
    held_by            TEXT NOT NULL,
    acquired_at        TIMESTAMPTZ NOT NULL,
    expires_at         TIMESTAMPTZ NOT NULL,
    status             TEXT NOT NULL CHECK (status IN ('ACTIVE','EXPIRED','RELEASED')),
    associated_request TEXT,
    version            INTEGER NOT NULL,
    created_at         TIMESTAMPTZ NOT NULL,
    updated_at         TIMESTAMPTZ NOT NULL
);
-- Compare-and-set: at most one ACTIVE lock per subject and type.
CREATE UNIQUE INDEX locks_one_active ON locks (lock_type, subject_id) WHERE status = 'ACTIVE';
CREATE INDEX locks_expiry ON locks (status, expires_at);

CREATE TABLE discovery_reports (
    report_id      TEXT PRIMARY KEY,
    lc_id          TEXT NOT NULL,
    region         TEXT NOT NULL,
    scan_start     TIMESTAMPTZ NOT NULL,
    scan_end       TIMESTAMPTZ NOT NULL,
    received_at    TIMESTAMPTZ,
    policy_version TEXT,
    payload        JSONB NOT NULL,
    version        INTEGER NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL
);
CREATE INDEX discovery_reports_lc ON discovery_reports (lc_id, scan_end);

CREATE TABLE events (
    seq        BIGINT PRIMARY KEY,
    event_id   TEXT NOT NULL UNIQUE,
    event_type TEXT NOT NULL,
    actor      TEXT NOT NULL,
    subject    TEXT,
    action     TEXT,
    decision   TEXT NOT NULL CHECK (decision IN ('APPROVED','DENIED','FLAGGED','N/A')),
    timestamp  TIMESTAMPTZ NOT NULL,
    payload    TEXT NOT NULL,
    notes      TEXT,
    prev_hash  TEXT NOT NULL,
    hash       TEXT NOT NULL,
    signer_id  TEXT NOT NULL,
    signature  TEXT NOT NULL
);
CREATE INDEX events_type ON events (event_type, timestamp);
CREATE INDEX events_subject ON events (subject);

-- The log is append-only: the database itself refuses to change or remove an event.
CREATE FUNCTION pdsno_refuse_event_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the event log is append-only' USING ERRCODE = 'integrity_constraint_violation';
END
$$;
CREATE TRIGGER events_refuse_update BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION pdsno_refuse_event_change();
CREATE TRIGGER events_refuse_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION pdsno_refuse_event_change();

-- The chain head as of the last append, so that deleting the newest events is noticed too.
CREATE TABLE audit_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  BIGINT NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');
