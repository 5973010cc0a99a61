-- The egress rules an admin set for a tenant, as a JSON array of strings
-- (`["10.0.0.0/8", "*.internal"]`): what its `http` bindings may reach besides
-- the public internet and the server's own rules. On the tenant's row, so a
-- purge removes them with it.
ALTER TABLE tenants ADD COLUMN allow_egress TEXT NOT NULL DEFAULT '[]';
