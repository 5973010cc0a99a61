-- Bulk actions: a durable job over a run query (`POST /v1/bulk`), kept
-- beside the runs it selects. The runner reads a page of the query after
-- `cursor`, stores its run ids (`page`), acts on each run, then stores the
-- cursor and the counts in one transaction; `runner` names the runner holding the job, so a runner
-- replaced by another writes nothing more.
CREATE TABLE h_bulk_jobs (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    action TEXT NOT NULL,
    -- The selector, JSON (`{"runs": {...}}`).
    selector TEXT NOT NULL,
    reason TEXT,
    -- Runs acted on per second, at most.
    rate INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    -- The selection is frozen at creation: runs created before this.
    frozen_before INTEGER NOT NULL,
    -- running, paused, cancelled, done.
    state TEXT NOT NULL,
    cursor TEXT,
    -- The page in hand: its runs' ids (JSON), stored before any is acted
    -- on, and the cursor after it. A page left here by a crash is done
    -- again from these ids, not read again (its runs' statuses changed).
    page TEXT,
    page_next TEXT,
    selected INTEGER NOT NULL DEFAULT 0,
    acted INTEGER NOT NULL DEFAULT 0,
    skipped INTEGER NOT NULL DEFAULT 0,
    errors INTEGER NOT NULL DEFAULT 0,
    -- Skipped runs by reason (the API error's code), JSON.
    skipped_by TEXT NOT NULL DEFAULT '{}',
    last_error TEXT,
    updated_at INTEGER NOT NULL,
    finished_at INTEGER,
    runner TEXT
) WITHOUT ROWID;
-- A tenant's jobs, newest first (`GET /v1/bulk`), and all of them for the admin.
CREATE INDEX h_bulk_jobs_tenant ON h_bulk_jobs (tenant, created_at DESC, id DESC);
CREATE INDEX h_bulk_jobs_all ON h_bulk_jobs (created_at DESC, id DESC);
-- The jobs a runner has to do.
CREATE INDEX h_bulk_jobs_running ON h_bulk_jobs (created_at, id) WHERE state = 'running';
