-- Segment windows: a window of all of a shadow's traffic has segment ''; the window of the
-- requests with one value of one segment key has segment 'key=value' (window.SegmentOf).
-- They roll up, expire and merge like the others; readers of all traffic select segment ''.
ALTER TABLE aggregator_windows ADD COLUMN segment text NOT NULL DEFAULT '';
ALTER TABLE aggregator_windows DROP CONSTRAINT aggregator_windows_pkey;
ALTER TABLE aggregator_windows ADD PRIMARY KEY (experiment, segment, shadow, width_seconds, window_start);

ALTER TABLE aggregator_dirty ADD COLUMN segment text NOT NULL DEFAULT '';
ALTER TABLE aggregator_dirty DROP CONSTRAINT aggregator_dirty_pkey;
ALTER TABLE aggregator_dirty ADD PRIMARY KEY (experiment, segment, shadow, width_seconds, window_start);
