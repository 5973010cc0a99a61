-- The fire time of the newest run a schedule started by itself (not by a
-- backfill): what `eflow schedule list` shows as its last fire. `last_fire`
-- is the watermark of fire times handled (started or skipped), moved on deploy
-- and on resume, so it could not say that.
ALTER TABLE schedules ADD COLUMN last_start INTEGER;
