-- How many runs a flow's version has (the console's flow page): a range of
-- this index, bounded, whatever the flow's other versions hold. The run
-- list filtered by version reads it in page order too.
CREATE INDEX h_runs_version ON h_runs (tenant, flow, version, created_at DESC, id DESC);
