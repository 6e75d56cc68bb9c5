-- Writers no longer choose sequences. A change stages its event here in its own transaction (one
-- insert, no lock: before, every writer of the slice queued on one advisory lock until its commit),
-- and the sequencer (one at a time, under its own advisory lock) moves committed events into
-- `outbox`, giving them the next sequences in the order it finds them. A reader of `outbox` never
-- sees seq N+1 before seq N: both are written by one sequencer transaction or N's came first.
-- A crash leaves staged events here; the next sequencer run moves them. Nothing is lost.
CREATE TABLE outbox_staged (
    pos   BIGSERIAL PRIMARY KEY,         -- staging order (not commit order: the sequencer decides)
    id    TEXT   NOT NULL UNIQUE,        -- the event's UUID
    time  BIGINT NOT NULL,               -- microseconds since the Unix epoch, UTC
    body  BYTEA  NOT NULL                -- the SchedulingEvent (protobuf, without seq)
);
