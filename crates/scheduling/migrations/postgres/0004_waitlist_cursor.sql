-- The waitlist worker's place in the outbox: the cancellations after `after_seq` have not been
-- offered to the waitlist yet. Offers are made from the outbox, after the cancellation committed,
-- so a crash between a cancellation and its offer delays the offer instead of losing it. It starts
-- at the outbox's head: cancellations before this migration were offered by the cancelling call.
CREATE TABLE waitlist_cursor (
    id        INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    after_seq BIGINT  NOT NULL
);
INSERT INTO waitlist_cursor (id, after_seq) SELECT 1, COALESCE(MAX(seq), 0) FROM outbox;
