-- Subflow children count against their tenant's active runs too: the
-- quota's starting point, read at every start of the server, counts every
-- run in progress per tenant and parent. This index holds every column that
-- count reads, in its GROUP BY order, so it is answered from the index alone.
DROP INDEX runs_tenant_active;
CREATE INDEX runs_tenant_active ON runs (tenant, parent, status)
    WHERE status IN ('created', 'running');
