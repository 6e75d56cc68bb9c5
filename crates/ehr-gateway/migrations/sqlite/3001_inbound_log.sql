-- The EHR gateway's slice: every inbound HL7 message it acknowledged (persisted before its ACK is
-- written), and the patient cross-references (source, identifier system, value -> Org patient).
-- Instants are microseconds since the Unix epoch, UTC.
CREATE TABLE inbound_messages (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    source        TEXT    NOT NULL,
    control_id    TEXT    NOT NULL,
    received_us   BIGINT  NOT NULL,
    message_type  TEXT    NOT NULL,
    trigger_event TEXT    NOT NULL,
    raw           TEXT    NOT NULL,
    state         TEXT    NOT NULL CHECK (state IN ('received', 'applied', 'rejected', 'dead')),
    attempts      INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_us BIGINT NOT NULL DEFAULT 0,
    last_error    TEXT    NOT NULL DEFAULT '',
    ack_code      TEXT    NOT NULL CHECK (ack_code IN ('AA', 'AE', 'AR')),
    UNIQUE (source, control_id)
);
CREATE INDEX inbound_messages_pending ON inbound_messages (state, id);

CREATE TABLE patient_xrefs (
    source            TEXT NOT NULL,
    identifier_system TEXT NOT NULL,
    identifier_value  TEXT NOT NULL,
    patient           TEXT NOT NULL,
    PRIMARY KEY (source, identifier_system, identifier_value)
);
