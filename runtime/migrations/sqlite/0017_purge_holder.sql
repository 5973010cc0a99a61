-- A purge is held by the process carrying it out, which renews its lease
-- while it works: a process that starts takes over only a purge whose holder
-- stopped (its lease ran out), never one a live process is doing, and a
-- purge deletes only while its holder still holds it. A purge pending from
-- before has no holder and an ended lease: the next process takes it over.
ALTER TABLE purges ADD COLUMN owner TEXT;
ALTER TABLE purges ADD COLUMN lease_until INTEGER NOT NULL DEFAULT 0;
