-- The double-booking guard: one row per holder (provider, patient, room) of each appointment or hold,
-- over [start_us, end_us) in microseconds since the Unix epoch, UTC, buffers included.
--
-- SQLite has no exclusion constraints: `occupancy::reserve` checks for an overlap and inserts in the
-- same write transaction, and every write of a slice holds the process-wide writer lock
-- (`Db::write`), so no other writer can slip in between.
CREATE TABLE occupancy (
    appointment TEXT    NOT NULL,
    kind        TEXT    NOT NULL CHECK (kind IN ('provider', 'patient', 'room')),
    holder      TEXT    NOT NULL,
    start_us    INTEGER NOT NULL,
    end_us      INTEGER NOT NULL,
    -- A hold's lapse (microseconds); NULL for a booking. Slot search ignores lapsed holds; a booking
    -- first marks them expired and deletes their rows.
    expire_us   INTEGER,
    PRIMARY KEY (appointment, kind, holder),
    CHECK (start_us < end_us)
);

-- Busy-time lookups and the overlap check ask for spans with start_us < until AND end_us > from.
-- Keyed on end_us, the range scan skips the holder's past (which only grows: finished visits keep
-- their rows) instead of walking all of it as a start_us key would.
CREATE INDEX occupancy_by_holder ON occupancy (kind, holder, end_us);
