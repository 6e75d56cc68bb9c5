-- The HIPAA audit trail (pm-authz's audit module), shared by every service slice that serves PHI.
-- Versions 1000 and up: shared sets live beside each service's own migrations (1-999).
--
-- audit_events is a hash chain: seq is the gapless position (1, 2, 3, ...), prev_hash the hash of
-- seq - 1 (64 zeros for seq 1) and hash = SHA-256 over prev_hash and the canonical encoding of the
-- record (see audit.rs). Rows are only ever inserted; appenders serialize on a transaction-scoped
-- advisory lock.
CREATE TABLE audit_events (
    seq             BIGINT  NOT NULL PRIMARY KEY,  -- position in the chain
    id              TEXT    NOT NULL UNIQUE,       -- UUIDv7
    time            BIGINT  NOT NULL,              -- microseconds since the Unix epoch, UTC
    service         TEXT    NOT NULL,              -- the service that served the call (observer)
    method          TEXT    NOT NULL,              -- full gRPC method
    principal       TEXT    NOT NULL,              -- who: the authenticated principal
    on_behalf_of    TEXT,                          -- the principal the caller acts for, if any
    calling_service TEXT,                          -- the peer service (SPIFFE id), if any
    resources       TEXT    NOT NULL,              -- JSON array of resource names
    patients        TEXT    NOT NULL,              -- JSON array of patient resource names
    source          TEXT,                          -- the peer's network address
    purpose         TEXT,                          -- purpose of use (HL7 v3 PurposeOfUse code)
    outcome         TEXT    NOT NULL,              -- success | denied | failed
    status_code     INTEGER NOT NULL,              -- gRPC status code
    prev_hash       TEXT    NOT NULL,
    hash            TEXT    NOT NULL
);

-- "Who accessed patient X between T1 and T2": one row per (event, patient), in time order.
CREATE TABLE audit_patients (
    patient TEXT COLLATE "C" NOT NULL,
    time    BIGINT NOT NULL,    -- the event's time (copied; checked by the verifier)
    seq     BIGINT NOT NULL,    -- the event (no foreign key: the verifier checks the pairing)
    PRIMARY KEY (patient, time, seq)
);
CREATE INDEX audit_patients_by_seq ON audit_patients (seq);

-- Signed statements "the chain's record seq has hash H" (Ed25519 over the checkpoint message).
CREATE TABLE audit_checkpoints (
    seq       BIGINT NOT NULL PRIMARY KEY,
    hash      TEXT   NOT NULL,
    signature TEXT   NOT NULL,  -- hex of the 64-byte Ed25519 signature
    key_id    TEXT   NOT NULL,
    time      BIGINT NOT NULL
);

-- Append-only at the database level: UPDATE, DELETE and TRUNCATE raise. A superuser or the tables'
-- owner can still `ALTER TABLE ... DISABLE TRIGGER` (the tamper tests do, to play an attacker with
-- those rights); the hash chain and the signed checkpoints are what catch that. Retention clean-up
-- (HIPAA keeps 6 years) must be an explicit administrative step that disables the triggers.
CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit records are append-only (% on %)', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_patients_append_only BEFORE UPDATE OR DELETE ON audit_patients
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_patients_no_truncate BEFORE TRUNCATE ON audit_patients
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
