-- The shared event tables of a slice that publishes or follows events (pm_runtime::outbox and
-- pm_runtime::follower). IF NOT EXISTS: Scheduling created `outbox` and `outbox_staged` in its own
-- migrations (0002, 0003) and `follower_cursors` in 0010, before these were shared.

-- The transactional outbox: events in sequence order, never updated. A consumer resumes after the
-- last sequence it saw and may deduplicate on id.
CREATE TABLE IF NOT EXISTS outbox (
    seq   INTEGER NOT NULL PRIMARY KEY,  -- strictly increasing, gapless, in the sequencer's order
    id    TEXT    NOT NULL UNIQUE,       -- the event's UUID
    time  INTEGER NOT NULL,              -- microseconds since the Unix epoch, UTC
    body  BLOB    NOT NULL               -- the event (protobuf, without its sequence)
);

-- Events staged by writers in their own transactions, until the sequencer (under the slice's writer
-- lock) moves the committed ones into `outbox` with the next sequences. A crash leaves them here.
CREATE TABLE IF NOT EXISTS outbox_staged (
    pos   INTEGER PRIMARY KEY AUTOINCREMENT,
    id    TEXT    NOT NULL UNIQUE,
    time  INTEGER NOT NULL,
    body  BLOB    NOT NULL
);

-- Each follower's place in the stream it follows: the events after `after_seq` have not been
-- applied. Moved in the transaction that writes the effects of the events before it.
CREATE TABLE IF NOT EXISTS follower_cursors (
    follower  TEXT    NOT NULL PRIMARY KEY,
    after_seq INTEGER NOT NULL
);
