-- The outputs of fan-out children, beside the parent's state: a child's
-- completion writes one row here in the commit that counts it in the parent,
-- so the parent's state stays small whatever the fan-out's width. A joined
-- list is read back in input order. Deleted with the run's tenant.
CREATE TABLE fanout_results (
    run TEXT NOT NULL,
    node TEXT NOT NULL,
    idx INTEGER NOT NULL,
    output BLOB NOT NULL,
    PRIMARY KEY (run, node, idx)
) WITHOUT ROWID;
