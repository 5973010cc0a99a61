-- The processes of a cluster, each as it last said it was alive: an engine
-- takes its fair share of the shards from how many engines are alive.
CREATE TABLE members (
    id TEXT PRIMARY KEY,
    -- The roles it runs, comma-separated: api, engine, scheduler, history.
    roles TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
