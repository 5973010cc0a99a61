-- The engine's store keeps live runs: a finished run's rows leave it once the
-- history holds its final event (`retention::Sweeper`), found through this
-- index in the order they finished.
CREATE INDEX runs_finished ON runs (updated_at) WHERE status NOT IN ('created', 'running');
-- What is left of a swept run whose id a start may name again (a client's
-- chosen id, a schedule's fire, a child) or that kept its fan-out results:
-- a start of that id answers with the run the history holds instead of
-- starting it again, and a purge finds its tenant's leftovers. Deleted when
-- the history's retention deletes the run.
CREATE TABLE swept_runs (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    finished_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX swept_runs_tenant ON swept_runs (tenant, finished_at);
-- How long the history keeps a tenant's finished runs, in milliseconds;
-- NULL takes the server's `--history-retention`.
ALTER TABLE tenants ADD COLUMN history_retention_ms INTEGER;
