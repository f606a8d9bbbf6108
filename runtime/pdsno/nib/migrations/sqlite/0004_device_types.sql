-- Schema 4: device types firewall, access_point and wireless_controller. SQLite cannot change a CHECK
-- constraint in place: the devices table is built anew and renamed. With foreign keys on (as every
-- connection has them), dropping the old table would cascade to its addresses and interfaces, so those
-- are kept aside in temporary tables and put back.
CREATE TEMP TABLE keep_device_addresses AS SELECT * FROM device_addresses;
CREATE TEMP TABLE keep_device_interfaces AS SELECT * FROM device_interfaces;

CREATE TABLE devices_v4 (
    device_id        TEXT PRIMARY KEY,
    mac_address      TEXT NOT NULL UNIQUE,
    ip_address       TEXT,
    hostname         TEXT,
    vendor           TEXT,
    device_type      TEXT NOT NULL CHECK (device_type IN ('router','switch','firewall','access_point',
                                                          'wireless_controller','server','endpoint','unknown')),
    firmware_version TEXT,
    region           TEXT,
    local_controller TEXT,
    status           TEXT NOT NULL CHECK (status IN ('active','inactive','unreachable','quarantined','degraded')),
    critical         INTEGER NOT NULL DEFAULT 0,
    protected        INTEGER NOT NULL DEFAULT 0,
    suspicious       INTEGER NOT NULL DEFAULT 0,
    temp_scan_id     TEXT,
    discovery_method TEXT,
    first_seen       TIMESTAMPTZ,
    last_seen        TIMESTAMPTZ,
    missed_cycles    INTEGER NOT NULL DEFAULT 0,
    uptime_seconds   INTEGER,
    snmp_info        JSON NOT NULL DEFAULT '{}',
    protocol_caps    JSON NOT NULL DEFAULT '[]',
    custom_tags      JSON NOT NULL DEFAULT '{}',
    version          INTEGER NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL
);
INSERT INTO devices_v4 SELECT * FROM devices;
DROP TABLE devices;
ALTER TABLE devices_v4 RENAME TO devices;
CREATE INDEX devices_ip ON devices (ip_address);
CREATE INDEX devices_lc ON devices (local_controller, status);
CREATE INDEX devices_region ON devices (region, status);
CREATE INDEX devices_last_seen ON devices (last_seen);

INSERT INTO device_addresses SELECT * FROM keep_device_addresses;
INSERT INTO device_interfaces SELECT * FROM keep_device_interfaces;
DROP TABLE keep_device_addresses;
DROP TABLE keep_device_interfaces;
