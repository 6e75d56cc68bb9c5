-- Each appointment's time and who and where it is for, typed and indexed, so that a calendar reads
-- the appointments of its window only (`start_us < until AND end_us > from`) instead of every
-- appointment the organization ever had: finished visits stay in the store, so that would grow with
-- every day the clinic runs. [start_us, end_us) is the appointment's own interval (no buffers), in
-- microseconds since the Unix epoch, UTC. Unlike `occupancy`, rows stay for cancelled and expired
-- appointments (a calendar may show them). Written by the store with every write of an appointment,
-- in its transaction; appointments older than this table are back-filled once at startup
-- (`appointment_spans_backfill`).
CREATE TABLE appointment_spans (
    appointment  TEXT    NOT NULL PRIMARY KEY,
    organization TEXT    NOT NULL,
    unit         TEXT    NOT NULL,
    provider     TEXT    NOT NULL,
    location     TEXT    NOT NULL,
    patient      TEXT    NOT NULL,
    start_us     BIGINT  NOT NULL,
    end_us       BIGINT  NOT NULL,
    CHECK (start_us < end_us)
);

-- Keyed on end_us, as occupancy's index is: the range scan for end_us > from starts at the window
-- and skips the scope's past (which only grows), reading the window and what is booked after it.
CREATE INDEX appointment_spans_by_organization ON appointment_spans (organization, end_us);
CREATE INDEX appointment_spans_by_unit ON appointment_spans (unit, end_us);
CREATE INDEX appointment_spans_by_provider ON appointment_spans (provider, end_us);
CREATE INDEX appointment_spans_by_location ON appointment_spans (location, end_us);
CREATE INDEX appointment_spans_by_patient ON appointment_spans (patient, end_us);

-- Whether the appointments written before `appointment_spans` existed have their rows (one row;
-- the store's back-fill sets it once, in the transaction that writes them).
CREATE TABLE appointment_spans_backfill (
    id   INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    done BIGINT  NOT NULL
);
INSERT INTO appointment_spans_backfill (id, done) VALUES (1, 0);
