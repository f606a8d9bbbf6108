"""A running controller: its NIB, identity, REST server, MQTT link and the work of its tier."""
