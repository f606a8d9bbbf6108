"""The tamper-evident audit log: sealing events into a hash chain and verifying it."""
