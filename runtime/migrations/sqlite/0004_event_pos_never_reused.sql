-- `events.pos` was an INTEGER PRIMARY KEY, which SQLite reuses: once the events
-- at the end of the log were deleted (a tenant purged), new events took their
-- positions, and the history, whose cursor was already past them, skipped them.
-- AUTOINCREMENT never hands out a position twice. The table is rebuilt once;
-- the sequence starts after the highest position in use.
CREATE TABLE events_new (
    pos INTEGER PRIMARY KEY AUTOINCREMENT,
    run TEXT NOT NULL,
    seq INTEGER NOT NULL,
    id TEXT NOT NULL,
    at INTEGER NOT NULL,
    status TEXT NOT NULL,
    body BLOB NOT NULL
);
INSERT INTO events_new (pos, run, seq, id, at, status, body)
    SELECT pos, run, seq, id, at, status, body FROM events ORDER BY pos;
DROP TABLE events;
ALTER TABLE events_new RENAME TO events;
CREATE UNIQUE INDEX events_run_seq ON events (run, seq);
