-- A failed run may be retried (`POST /v1/runs/{id}/retry`) for a while
-- (`--retry-window`), longer than other finished runs stay (`--sweep-after`):
-- the sweeper reads failed runs through their own index, in the order they
-- failed, so neither scan passes over rows it must leave. A retried run is
-- running again: its `finished_at` is NULL until it ends again.
DROP INDEX runs_finished;
CREATE INDEX runs_finished ON runs (finished_at) WHERE finished_at IS NOT NULL AND status <> 'failed';
CREATE INDEX runs_failed ON runs (finished_at) WHERE finished_at IS NOT NULL AND status = 'failed';
