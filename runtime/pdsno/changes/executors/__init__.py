"""Change executors, one per way of touching a device (reference-design §5 "LC: execute")."""
