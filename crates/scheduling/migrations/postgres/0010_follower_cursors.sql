-- The waitlist worker became a follower of the outbox (pm_runtime::follower), whose cursors live in
-- one table per slice, keyed by follower. Its place moves there unchanged.
CREATE TABLE follower_cursors (
    follower  TEXT   NOT NULL PRIMARY KEY,
    after_seq BIGINT NOT NULL
);
INSERT INTO follower_cursors (follower, after_seq) SELECT 'waitlist', after_seq FROM waitlist_cursor;
DROP TABLE waitlist_cursor;
