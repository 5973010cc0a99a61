-- The history service's own store: every run and event, indexed for the
-- questions people ask. Written only by the history consumer; the engine never
-- reads it.

CREATE TABLE h_runs (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    flow TEXT NOT NULL,
    version TEXT NOT NULL,
    status TEXT NOT NULL,
    parent TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    error_code TEXT,
    failed_step TEXT
) WITHOUT ROWID;
-- Every list is newest first within a tenant; each filter has an index that
-- keeps that order, so a page reads only its rows.
CREATE INDEX h_runs_tenant ON h_runs (tenant, created_at DESC, id DESC);
CREATE INDEX h_runs_flow ON h_runs (tenant, flow, created_at DESC, id DESC);
CREATE INDEX h_runs_status ON h_runs (tenant, status, created_at DESC, id DESC);
CREATE INDEX h_runs_error ON h_runs (tenant, error_code, created_at DESC, id DESC) WHERE error_code IS NOT NULL;
CREATE INDEX h_runs_step ON h_runs (tenant, failed_step, created_at DESC, id DESC) WHERE failed_step IS NOT NULL;
CREATE INDEX h_runs_all ON h_runs (created_at DESC, id DESC);

CREATE TABLE h_events (
    pos INTEGER PRIMARY KEY,
    run TEXT NOT NULL,
    seq INTEGER NOT NULL,
    tenant TEXT NOT NULL,
    at INTEGER NOT NULL,
    kind TEXT NOT NULL,
    step TEXT,
    status TEXT NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX h_events_run ON h_events (run, seq);
CREATE INDEX h_events_tenant ON h_events (tenant, at);

-- How far the consumer has read the engine's event log.
CREATE TABLE h_cursor (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    pos INTEGER NOT NULL
);
INSERT INTO h_cursor (id, pos) VALUES (0, 0);
