"""MQTT transport: topic names, the controller's broker connection with its durable outbox, and the broker
deployment files (configuration, password file, ACL)."""
