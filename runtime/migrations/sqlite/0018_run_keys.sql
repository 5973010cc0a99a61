-- A run may belong to a key: the model or customer whose lifecycle it is (a
-- start's `key`, or its schedule's). The history groups runs by it into the
-- population; the engine only carries it from the start to the stream.
ALTER TABLE runs ADD COLUMN key TEXT;
