-- The processes of a cluster, each as it last said it was alive: an engine
-- takes its fair share of the shards from how many engines are alive
-- (SQLite's migration 0013).
CREATE TABLE members (
    id TEXT COLLATE "C" PRIMARY KEY,
    -- The roles it runs, comma-separated: api, engine, scheduler, history.
    roles TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
