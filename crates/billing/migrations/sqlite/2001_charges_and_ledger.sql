-- Billing's facts, in typed tables: charges (one row per priced service line) and the money ledger
-- (append-only movements on charges). Amounts are BIGINT cents; dates of service are the local
-- calendar date at the location, as 'YYYY-MM-DD' text (sorts and ranges like a date on both
-- backends); instants are microseconds since the Unix epoch, UTC.
CREATE TABLE charges (
    name                 TEXT    NOT NULL PRIMARY KEY,
    organization         TEXT    NOT NULL,
    source               TEXT    NOT NULL CHECK (source IN ('encounter', 'manual', 'correction', 'care_time')),
    encounter            TEXT,
    line_number          INTEGER,
    patient              TEXT    NOT NULL,
    unit                 TEXT    NOT NULL,
    provider             TEXT    NOT NULL,
    payer                TEXT    NOT NULL,
    billing_entity       TEXT    NOT NULL,
    contract             TEXT    NOT NULL,
    code                 TEXT    NOT NULL,
    modifiers            TEXT    NOT NULL,
    units                INTEGER NOT NULL CHECK (units > 0),
    diagnoses            TEXT    NOT NULL,
    service_date         TEXT    NOT NULL,
    place_of_service     TEXT    NOT NULL,
    unit_price_cents     BIGINT  NOT NULL CHECK (unit_price_cents >= 0),
    amount_cents         BIGINT  NOT NULL CHECK (amount_cents >= 0),
    fee_schedule_version TEXT    NOT NULL,
    state                TEXT    NOT NULL CHECK (state IN ('open', 'held', 'reversed')),
    hold_reason          TEXT    NOT NULL,
    related_charge       TEXT    NOT NULL,
    profile              TEXT    NOT NULL,
    create_us            BIGINT  NOT NULL,
    update_us            BIGINT  NOT NULL
);

-- Exactly once: one charge per line of an encounter, whatever the follower replays.
CREATE UNIQUE INDEX charges_one_per_encounter_line ON charges (encounter, line_number)
    WHERE source = 'encounter';
CREATE INDEX charges_by_organization ON charges (organization, create_us);
CREATE INDEX charges_by_unit ON charges (unit, service_date);
CREATE INDEX charges_by_patient ON charges (patient, service_date);
CREATE INDEX charges_by_payer ON charges (organization, payer, service_date);
CREATE INDEX charges_by_entity ON charges (organization, billing_entity, service_date);
CREATE INDEX charges_by_code ON charges (organization, code, service_date);

-- The ledger: every movement of money on a charge, never updated or deleted (the triggers below
-- refuse it). A charge's balance is the sum of its entries. Charges post positive amounts; every
-- other kind moves money the other way and is negative.
CREATE TABLE ledger_entries (
    sequence     INTEGER PRIMARY KEY AUTOINCREMENT,
    organization TEXT   NOT NULL,
    charge       TEXT   NOT NULL REFERENCES charges (name),
    kind         TEXT   NOT NULL CHECK (kind IN ('charge', 'reversal', 'payment', 'adjustment', 'write_off')),
    amount_cents BIGINT NOT NULL,
    memo         TEXT   NOT NULL,
    post_us      BIGINT NOT NULL,
    CHECK ((kind = 'charge' AND amount_cents > 0) OR (kind <> 'charge' AND amount_cents < 0))
);
CREATE INDEX ledger_entries_by_charge ON ledger_entries (charge, sequence);

CREATE TRIGGER ledger_entries_no_update BEFORE UPDATE ON ledger_entries
BEGIN
    SELECT RAISE(ABORT, 'ledger entries are append-only');
END;
CREATE TRIGGER ledger_entries_no_delete BEFORE DELETE ON ledger_entries
BEGIN
    SELECT RAISE(ABORT, 'ledger entries are append-only');
END;
