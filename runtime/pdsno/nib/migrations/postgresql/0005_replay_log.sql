-- Schema 5: the replay cache leaves the NIB for an append-only log in the controller's data directory
-- (pdsno.messaging.replay): a transaction per batch of messages cost most of a signed request.
DROP TABLE replay_cache;
