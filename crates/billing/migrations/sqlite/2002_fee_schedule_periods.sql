-- When each fee schedule version is in force, typed (see the PostgreSQL migration). SQLite has no
-- exclusion constraint: the store checks for an overlap before inserting, under the slice's
-- process-wide writer lock, so nothing commits between the check and the insert.
CREATE TABLE fee_schedule_periods (
    version      TEXT    NOT NULL PRIMARY KEY,
    schedule     TEXT    NOT NULL,
    scope_key    TEXT    NOT NULL,
    from_day     INTEGER NOT NULL,
    until_day    INTEGER,
    CHECK (until_day IS NULL OR from_day < until_day)
);
CREATE INDEX fee_schedule_periods_by_scope ON fee_schedule_periods (scope_key, from_day);
