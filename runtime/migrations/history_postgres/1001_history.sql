-- The history service's own store on PostgreSQL: every run and event, indexed
-- for the questions people ask. Written only by the history consumer; the
-- engine never reads it. The schema the SQLite history reaches through its
-- migrations 0001-0002, in one step. Times are BIGINT milliseconds since the
-- Unix epoch; identifiers sort bytewise (COLLATE "C"), as in SQLite.

CREATE TABLE h_runs (
    id TEXT COLLATE "C" PRIMARY KEY,
    tenant TEXT COLLATE "C" NOT NULL,
    flow TEXT COLLATE "C" NOT NULL,
    version TEXT COLLATE "C" NOT NULL,
    status TEXT COLLATE "C" NOT NULL,
    parent TEXT COLLATE "C",
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    error_code TEXT COLLATE "C",
    failed_step TEXT COLLATE "C",
    -- What the run's view needs once the engine's store let it go.
    bundle TEXT COLLATE "C",
    schedule TEXT COLLATE "C",
    -- Its final state: the engine's compact JSON, byte for byte.
    state BYTEA
);
-- Every list is newest first within a tenant; each filter has an index that
-- keeps that order, so a page reads only its rows.
CREATE INDEX h_runs_tenant ON h_runs (tenant, created_at DESC, id DESC);
CREATE INDEX h_runs_flow ON h_runs (tenant, flow, created_at DESC, id DESC);
CREATE INDEX h_runs_status ON h_runs (tenant, status, created_at DESC, id DESC);
CREATE INDEX h_runs_error ON h_runs (tenant, error_code, created_at DESC, id DESC) WHERE error_code IS NOT NULL;
CREATE INDEX h_runs_step ON h_runs (tenant, failed_step, created_at DESC, id DESC) WHERE failed_step IS NOT NULL;
CREATE INDEX h_runs_all ON h_runs (created_at DESC, id DESC);
-- Retention deletes a tenant's runs that finished before a time, oldest first.
CREATE INDEX h_runs_finished ON h_runs (tenant, updated_at)
    WHERE status IN ('succeeded', 'failed', 'cancelled');

CREATE TABLE h_events (
    -- The event's position in the engine's log.
    pos BIGINT PRIMARY KEY,
    run TEXT COLLATE "C" NOT NULL,
    seq BIGINT NOT NULL,
    tenant TEXT COLLATE "C" NOT NULL,
    at BIGINT NOT NULL,
    kind TEXT NOT NULL,
    step TEXT,
    status TEXT NOT NULL,
    body BYTEA NOT NULL
);
CREATE INDEX h_events_run ON h_events (run, seq);
CREATE INDEX h_events_tenant ON h_events (tenant, at);

-- How far the consumer has read the engine's event log.
CREATE TABLE h_cursor (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    pos BIGINT NOT NULL
);
INSERT INTO h_cursor (id, pos) VALUES (0, 0);
