-- The transactional outbox: every appointment change and completed encounter, written in the
-- transaction of the change itself, read by StreamEvents / WatchCalendar after a sequence. Rows are
-- never updated; a consumer resumes after the last sequence it saw and deduplicates on id.
-- PostgreSQL: writers take a transaction-scoped advisory lock before choosing max(seq) + 1, so
-- sequences are assigned in commit order (a reader never sees seq N+1 before seq N commits).
CREATE TABLE outbox (
    seq   BIGINT NOT NULL PRIMARY KEY,
    id    TEXT   NOT NULL UNIQUE,
    time  BIGINT NOT NULL,
    body  BYTEA  NOT NULL
);
