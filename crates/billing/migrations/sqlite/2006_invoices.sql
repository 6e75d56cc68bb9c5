-- Employer invoices, in typed tables. A member-month of a per-member-per-month contract is a charge
-- like any other (source 'member_month'), so that payments, the roll-up and aging treat invoiced
-- money as they treat claimed money. A charge is invoiced once: `charges.invoice` names its
-- invoice, set in the transaction that writes the invoice (compare-and-set from '').
--
-- SQLite cannot alter a CHECK constraint: `charges` is rebuilt with the wider one. Migrations run
-- inside a transaction, where `PRAGMA foreign_keys = OFF` does nothing, so the rows are kept aside,
-- the table dropped and created again under its own name, and the rows put back, with the foreign
-- keys deferred to the commit: dropping `charges` leaves `ledger_entries` pointing at nothing for a
-- moment, and putting every row back satisfies each reference again before the commit checks them.
-- `ledger_entries` itself (its CHECKs and append-only triggers) is not touched.
PRAGMA defer_foreign_keys = ON;

CREATE TABLE charges_before_2006 AS SELECT * FROM charges;
DROP TABLE charges;

CREATE TABLE charges (
    name                 TEXT    NOT NULL PRIMARY KEY,
    organization         TEXT    NOT NULL,
    source               TEXT    NOT NULL CHECK (source IN ('encounter', 'manual', 'correction', 'care_time', 'member_month')),
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
    update_us            BIGINT  NOT NULL,
    claim                TEXT    NOT NULL DEFAULT '',
    invoice              TEXT    NOT NULL DEFAULT ''
);

INSERT INTO charges (name, organization, source, encounter, line_number, patient, unit, provider,
                     payer, billing_entity, contract, code, modifiers, units, diagnoses,
                     service_date, place_of_service, unit_price_cents, amount_cents,
                     fee_schedule_version, state, hold_reason, related_charge, profile, create_us,
                     update_us, claim)
SELECT name, organization, source, encounter, line_number, patient, unit, provider, payer,
       billing_entity, contract, code, modifiers, units, diagnoses, service_date, place_of_service,
       unit_price_cents, amount_cents, fee_schedule_version, state, hold_reason, related_charge,
       profile, create_us, update_us, claim
FROM charges_before_2006;
DROP TABLE charges_before_2006;

-- The indexes of 2001 and 2004, as they were.
CREATE UNIQUE INDEX charges_one_per_encounter_line ON charges (encounter, line_number)
    WHERE source = 'encounter';
CREATE INDEX charges_by_organization ON charges (organization, create_us);
CREATE INDEX charges_by_unit ON charges (unit, service_date);
CREATE INDEX charges_by_patient ON charges (patient, service_date);
CREATE INDEX charges_by_payer ON charges (organization, payer, service_date);
CREATE INDEX charges_by_entity ON charges (organization, billing_entity, service_date);
CREATE INDEX charges_by_code ON charges (organization, code, service_date);
CREATE INDEX charges_unclaimed ON charges (organization, claim, state);
CREATE INDEX charges_uninvoiced ON charges (organization, contract, invoice, service_date);

-- One invoice per contract and local calendar month, at most (the unique key). State text: open,
-- partially_paid, paid. The balance is never stored: it is the sum of the lines' charges' ledger
-- entries. `units` is the contract's units when issued, ':'-joined (where the invoice sits for
-- access). Instants are microseconds since the Unix epoch, UTC.
CREATE TABLE invoices (
    name           TEXT   NOT NULL PRIMARY KEY,
    organization   TEXT   NOT NULL,
    contract       TEXT   NOT NULL,
    payer          TEXT   NOT NULL,
    billing_entity TEXT   NOT NULL,
    month          TEXT   NOT NULL,
    basis          TEXT   NOT NULL CHECK (basis IN ('per_visit', 'per_member_per_month')),
    units          TEXT   NOT NULL,
    state          TEXT   NOT NULL CHECK (state IN ('open', 'partially_paid', 'paid')),
    total_cents    BIGINT NOT NULL CHECK (total_cents > 0),
    issue_us       BIGINT NOT NULL,
    update_us      BIGINT NOT NULL
);
CREATE UNIQUE INDEX invoices_one_per_contract_month ON invoices (organization, contract, month);
CREATE INDEX invoices_by_organization ON invoices (organization, issue_us);

-- The lines: each a charge (a visit's line, or a member-month). `month` is set for a member-month.
CREATE TABLE invoice_lines (
    invoice      TEXT    NOT NULL REFERENCES invoices (name),
    line_number  INTEGER NOT NULL,
    charge       TEXT    NOT NULL REFERENCES charges (name),
    patient      TEXT    NOT NULL,
    unit         TEXT    NOT NULL,
    service_date TEXT    NOT NULL,
    code         TEXT    NOT NULL,
    month        TEXT    NOT NULL,
    amount_cents BIGINT  NOT NULL CHECK (amount_cents > 0),
    PRIMARY KEY (invoice, line_number)
);
CREATE UNIQUE INDEX invoice_lines_one_per_charge ON invoice_lines (charge);
