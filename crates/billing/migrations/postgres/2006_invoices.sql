-- Employer invoices, in typed tables. A member-month of a per-member-per-month contract is a charge
-- like any other (source 'member_month'), so that payments, the roll-up and aging treat invoiced
-- money as they treat claimed money. A charge is invoiced once: `charges.invoice` names its
-- invoice, set in the transaction that writes the invoice (compare-and-set from '').
ALTER TABLE charges DROP CONSTRAINT charges_source_check;
ALTER TABLE charges ADD CONSTRAINT charges_source_check
    CHECK (source IN ('encounter', 'manual', 'correction', 'care_time', 'member_month'));
ALTER TABLE charges ADD COLUMN invoice TEXT NOT NULL DEFAULT '';
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
