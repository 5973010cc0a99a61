-- Every engine process takes a block of 2^32 outbox positions of its own at
-- start (the block's number shifted left by 32), so processes sharing the
-- database never write the same position.
CREATE SEQUENCE outbox_blocks;
