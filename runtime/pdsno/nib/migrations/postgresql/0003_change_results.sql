-- Schema 3: how a change ended on each device, and when its execution token was spent, kept with the
-- proposal at every tier (the GC's copy is what operators read).
ALTER TABLE config_proposals ADD COLUMN device_results JSONB;
ALTER TABLE config_proposals ADD COLUMN token_consumed_at TIMESTAMPTZ;
