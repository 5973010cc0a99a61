-- Tokens are managed by id (listed, revoked, rotated), told apart by the last
-- four characters of their secret, and may expire. A token made before this
-- migration gets an id from its hash (the hash is not the secret) and shows no
-- last four characters: they were never stored.
ALTER TABLE tokens ADD COLUMN id TEXT;
ALTER TABLE tokens ADD COLUMN last4 TEXT NOT NULL DEFAULT '';
ALTER TABLE tokens ADD COLUMN expires_at INTEGER;
UPDATE tokens SET id = 't-' || substr(hash, 1, 16) WHERE id IS NULL;
CREATE UNIQUE INDEX tokens_id ON tokens (id);
