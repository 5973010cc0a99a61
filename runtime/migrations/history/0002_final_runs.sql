-- The history is the record of finished runs: the engine's store lets a
-- run go once the history holds its final event, so the history keeps what
-- the run's view needs (its bundle, schedule and final state).
ALTER TABLE h_runs ADD COLUMN bundle TEXT;
ALTER TABLE h_runs ADD COLUMN schedule TEXT;
ALTER TABLE h_runs ADD COLUMN state BLOB;
-- Retention deletes a tenant's runs that finished before a time, oldest first.
CREATE INDEX h_runs_finished ON h_runs (tenant, updated_at)
    WHERE status IN ('succeeded', 'failed', 'cancelled');
