-- A failed run may be retried (`POST /v1/runs/{id}/retry`) for a while
-- (`--retry-window`), longer than other finished runs stay (`--sweep-after`):
-- the sweeper reads failed runs through their own index, in the order they
-- failed, so neither scan passes over rows it must leave.
DROP INDEX runs_finished;
CREATE INDEX runs_finished ON runs (updated_at) WHERE status IN ('succeeded', 'cancelled');
CREATE INDEX runs_failed ON runs (updated_at) WHERE status = 'failed';
