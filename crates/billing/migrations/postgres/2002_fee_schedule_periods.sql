-- When each fee schedule version is in force, typed, so that overlaps are refused by the database:
-- two versions of one schedule, or of two schedules of the same scope (the same unit, program,
-- contract, payer, or the organization), never overlap in time. Days are counted from 0001-01-01
-- (day 1); [from_day, until_day) is half-open, NULL until_day is open-ended. The versions
-- themselves (their entries) live in the generic store; this row is written in the same transaction.
-- CI pre-creates btree_gist once (see occupancy); IF NOT EXISTS makes this a no-op then.
CREATE EXTENSION IF NOT EXISTS btree_gist WITH SCHEMA public;

CREATE TABLE fee_schedule_periods (
    version      TEXT    NOT NULL PRIMARY KEY,
    schedule     TEXT    NOT NULL,
    scope_key    TEXT    NOT NULL,
    from_day     INTEGER NOT NULL,
    until_day    INTEGER,
    CHECK (until_day IS NULL OR from_day < until_day),
    CONSTRAINT fee_schedule_periods_overlap EXCLUDE USING gist
        (scope_key public.gist_text_ops WITH =, int4range(from_day, until_day, '[)') WITH &&)
);
CREATE INDEX fee_schedule_periods_by_scope ON fee_schedule_periods (scope_key, from_day);
