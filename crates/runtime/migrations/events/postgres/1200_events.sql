-- The shared event tables of a slice that publishes or follows events (pm_runtime::outbox and
-- pm_runtime::follower). IF NOT EXISTS: Scheduling created `outbox` and `outbox_staged` in its own
-- migrations (0002, 0003) and `follower_cursors` in 0010, before these were shared.

-- The transactional outbox: events in sequence order, never updated. A consumer resumes after the
-- last sequence it saw and may deduplicate on id.
CREATE TABLE IF NOT EXISTS outbox (
    seq   BIGINT NOT NULL PRIMARY KEY,   -- strictly increasing, gapless, in the sequencer's order
    id    TEXT   NOT NULL UNIQUE,        -- the event's UUID
    time  BIGINT NOT NULL,               -- microseconds since the Unix epoch, UTC
    body  BYTEA  NOT NULL                -- the event (protobuf, without its sequence)
);

-- Events staged by writers in their own transactions (one insert, no lock), until the sequencer
-- moves the committed ones into `outbox` with the next sequences. A crash leaves them here; the next
-- run moves them.
CREATE TABLE IF NOT EXISTS outbox_staged (
    pos   BIGSERIAL PRIMARY KEY,         -- staging order (not commit order: the sequencer decides)
    id    TEXT   NOT NULL UNIQUE,
    time  BIGINT NOT NULL,
    body  BYTEA  NOT NULL
);

-- Each follower's place in the stream it follows: the events after `after_seq` have not been
-- applied. Moved in the transaction that writes the effects of the events before it.
CREATE TABLE IF NOT EXISTS follower_cursors (
    follower  TEXT   NOT NULL PRIMARY KEY,
    after_seq BIGINT NOT NULL
);
