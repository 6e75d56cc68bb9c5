-- Staged audit records (pm-authz's audit module: `stage`, `seal`).
--
-- A PHI write stages its record here in its own transaction: one INSERT, with no lock and no read of
-- the chain's head, so that the writes of a slice no longer serialize on the chain's advisory lock.
-- The sealer (one at a time, under that lock) moves the committed records into audit_events and
-- audit_patients, oldest id first, hashing them exactly as an append does, and deletes them from
-- here in the same transaction; readers of the trail seal first.
--
-- No append-only trigger against DELETE: the sealer deletes from this table. A record waits here
-- only until it is sealed, unchained: whoever can write the database could remove one without a
-- trace in that window, which is at most the sealing interval (the audit writer seals every 200 ms
-- and before each batch of reads it writes; every reader of the trail seals first). UPDATE is never
-- needed, so it is refused like on the chain's tables.
CREATE TABLE audit_staged (
    id   BIGSERIAL PRIMARY KEY,  -- insertion order: the sealer takes the oldest first
    body TEXT      NOT NULL      -- the record (the AuditEvent's fields) as a JSON object
);

CREATE TRIGGER audit_staged_no_update BEFORE UPDATE ON audit_staged
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
