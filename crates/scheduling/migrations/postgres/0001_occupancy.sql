-- The double-booking guard: one row per holder (provider, patient, room) of each appointment or hold,
-- over [start_us, end_us) in microseconds since the Unix epoch, UTC, buffers included.
--
-- btree_gist gives GiST an `=` on text, so an exclusion constraint can say "same holder and
-- overlapping span". It lives in `public`, not in this slice's schema (test slices are schemas dropped
-- with CASCADE, which would take the extension along), and its operator class is named
-- schema-qualified because slice connections set search_path to their own schema only.
-- CI pre-creates it once (concurrent CREATE EXTENSION calls race); IF NOT EXISTS makes this a no-op.
CREATE EXTENSION IF NOT EXISTS btree_gist WITH SCHEMA public;

CREATE TABLE occupancy (
    appointment TEXT   NOT NULL,
    kind        TEXT   NOT NULL CHECK (kind IN ('provider', 'patient', 'room')),
    holder      TEXT   NOT NULL,
    start_us    BIGINT NOT NULL,
    end_us      BIGINT NOT NULL,
    -- A hold's lapse (microseconds); NULL for a booking. Slot search ignores lapsed holds; a booking
    -- first marks them expired and deletes their rows (they would still trip the constraint).
    expire_us   BIGINT,
    PRIMARY KEY (appointment, kind, holder),
    CHECK (start_us < end_us),
    -- One constraint per kind (partial, so each row enters one index only): a violation's constraint
    -- name tells which kind of holder conflicted, without parsing the error detail (which quotes the
    -- holder's name). int8range is immutable and exact; to_timestamp() could not be indexed.
    CONSTRAINT occupancy_provider_overlap EXCLUDE USING gist
        (holder public.gist_text_ops WITH =, int8range(start_us, end_us, '[)') WITH &&)
        WHERE (kind = 'provider'),
    CONSTRAINT occupancy_patient_overlap EXCLUDE USING gist
        (holder public.gist_text_ops WITH =, int8range(start_us, end_us, '[)') WITH &&)
        WHERE (kind = 'patient'),
    CONSTRAINT occupancy_room_overlap EXCLUDE USING gist
        (holder public.gist_text_ops WITH =, int8range(start_us, end_us, '[)') WITH &&)
        WHERE (kind = 'room')
);

-- Busy-time lookups and the pre-insert overlap check ask for spans with start_us < until AND
-- end_us > from. Keyed on end_us, the range scan skips the holder's past (which only grows:
-- finished visits keep their rows) instead of walking all of it as a start_us key would.
CREATE INDEX occupancy_by_holder ON occupancy (kind, holder, end_us);
