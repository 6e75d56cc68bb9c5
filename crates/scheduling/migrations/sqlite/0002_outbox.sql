-- The transactional outbox: every appointment change and completed encounter, written in the
-- transaction of the change itself, read by StreamEvents / WatchCalendar after a sequence. Rows are
-- never updated; a consumer resumes after the last sequence it saw and deduplicates on id.
-- SQLite: the slice's single writer assigns sequences in commit order.
CREATE TABLE outbox (
    seq   INTEGER NOT NULL PRIMARY KEY,  -- strictly increasing in commit order
    id    TEXT    NOT NULL UNIQUE,       -- the event's UUID
    time  INTEGER NOT NULL,              -- microseconds since the Unix epoch, UTC
    body  BLOB    NOT NULL               -- the SchedulingEvent (protobuf, without seq)
);
