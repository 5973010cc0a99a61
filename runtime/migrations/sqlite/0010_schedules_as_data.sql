-- Schedules made through the API (`POST /v1/schedules`), beside the ones a
-- flow's `schedule` statements declare. A deploy replaces only the declared
-- ones of its flows (`declared = 1`); API-made ones survive it, and move to
-- the flow's new head unless pinned to a version (`version`). `key` names
-- what a schedule belongs to (a customer, a model): lists by key and by flow
-- are index range scans, paged by id (the primary key ends every index of a
-- table WITHOUT ROWID).
ALTER TABLE schedules ADD COLUMN declared INTEGER NOT NULL DEFAULT 1;
ALTER TABLE schedules ADD COLUMN key TEXT;
ALTER TABLE schedules ADD COLUMN version TEXT;
ALTER TABLE schedules ADD COLUMN created_at INTEGER;
CREATE INDEX schedules_key ON schedules (tenant, key) WHERE key IS NOT NULL;
CREATE INDEX schedules_flow ON schedules (tenant, flow);
-- The claims a start releases (`release_claims`): found without reading
-- every schedule, so a restart with a million schedules is ready at once.
CREATE INDEX schedules_claimed ON schedules (claimed_until) WHERE claimed_until > 0;
