-- Staged audit records (pm-authz's audit module: `stage`, `seal`).
--
-- A PHI write stages its record here in its own transaction: one INSERT, with no read of the chain's
-- head. The sealer (under the file's single writer) moves the committed records into audit_events
-- and audit_patients, oldest id first, hashing them exactly as an append does, and deletes them from
-- here in the same transaction; readers of the trail seal first.
--
-- No append-only trigger against DELETE: the sealer deletes from this table. A record waits here
-- only until it is sealed, unchained: whoever can write the file could remove one without a trace
-- in that window, which is at most the sealing interval (the audit writer seals every 200 ms and
-- before each batch of reads it writes; every reader of the trail seals first). UPDATE is never
-- needed, so it is refused like on the chain's tables.
CREATE TABLE audit_staged (
    id   INTEGER PRIMARY KEY AUTOINCREMENT,  -- insertion order, never reused: oldest sealed first
    body TEXT    NOT NULL                    -- the record (the AuditEvent's fields) as a JSON object
);

CREATE TRIGGER audit_staged_no_update BEFORE UPDATE ON audit_staged
BEGIN SELECT RAISE(ABORT, 'staged audit records are not updated'); END;
