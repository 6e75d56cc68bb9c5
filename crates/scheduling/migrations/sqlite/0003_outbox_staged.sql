-- Writers no longer choose sequences. A change stages its event here in its own transaction, and
-- the sequencer (under the slice's writer lock) moves committed events into `outbox`, giving them
-- the next sequences in staging order. A crash leaves staged events here; the next sequencer run
-- moves them. Nothing is lost. (PostgreSQL is why: there, staging needs no lock.)
CREATE TABLE outbox_staged (
    pos   INTEGER PRIMARY KEY AUTOINCREMENT,
    id    TEXT    NOT NULL UNIQUE,       -- the event's UUID
    time  INTEGER NOT NULL,              -- microseconds since the Unix epoch, UTC
    body  BLOB    NOT NULL               -- the SchedulingEvent (protobuf, without seq)
);
