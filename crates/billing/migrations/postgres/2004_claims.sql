-- Claims and what comes back for them, in typed tables. A charge is claimed once: `charges.claim`
-- names its claim, set in the transaction that writes the claim (compare-and-set from '').
ALTER TABLE charges ADD COLUMN claim TEXT NOT NULL DEFAULT '';
CREATE INDEX charges_unclaimed ON charges (organization, claim, state);

-- One claim: lines of one billing entity × payer × patient × date of service (and one provider and
-- place of service). State text: draft, ready, submitted, accepted, rejected, paid, partially_paid,
-- denied, void. `problems` is the scrubber's findings as JSON; lists are ':'-joined.
CREATE TABLE claims (
    name               TEXT    NOT NULL PRIMARY KEY,
    organization       TEXT    NOT NULL,
    billing_entity     TEXT    NOT NULL,
    payer              TEXT    NOT NULL,
    patient            TEXT    NOT NULL,
    service_date       TEXT    NOT NULL,
    provider           TEXT    NOT NULL,
    place_of_service   TEXT    NOT NULL,
    unit               TEXT    NOT NULL,
    state              TEXT    NOT NULL,
    frequency_code     INTEGER NOT NULL,
    original_claim     TEXT    NOT NULL,
    payer_claim_number TEXT    NOT NULL,
    total_cents        BIGINT  NOT NULL CHECK (total_cents >= 0),
    diagnoses          TEXT    NOT NULL,
    problems           TEXT    NOT NULL,
    split_with         TEXT    NOT NULL,
    batch              TEXT    NOT NULL,
    submit_us          BIGINT  NOT NULL,
    create_us          BIGINT  NOT NULL,
    update_us          BIGINT  NOT NULL
);
CREATE INDEX claims_by_organization ON claims (organization, create_us);
CREATE INDEX claims_by_state ON claims (organization, state, billing_entity);

CREATE TABLE claim_lines (
    claim              TEXT    NOT NULL REFERENCES claims (name),
    line_number        INTEGER NOT NULL,
    charge             TEXT    NOT NULL,
    code               TEXT    NOT NULL,
    modifiers          TEXT    NOT NULL,
    units              INTEGER NOT NULL CHECK (units > 0),
    amount_cents       BIGINT  NOT NULL CHECK (amount_cents >= 0),
    diagnosis_pointers TEXT    NOT NULL,
    routed_by          TEXT    NOT NULL,
    PRIMARY KEY (claim, line_number)
);
CREATE INDEX claim_lines_by_charge ON claim_lines (charge);

-- Every state a claim entered, in order.
CREATE TABLE claim_events (
    claim  TEXT    NOT NULL REFERENCES claims (name),
    seq    INTEGER NOT NULL,
    state  TEXT    NOT NULL,
    reason TEXT    NOT NULL,
    at_us  BIGINT  NOT NULL,
    PRIMARY KEY (claim, seq)
);

-- Every 837P file written. Its key is the interchange control number (ISA13): allocated by the
-- database, so it never repeats, whatever replicas export at once.
CREATE TABLE claim_batches (
    control_number BIGSERIAL PRIMARY KEY,
    organization   TEXT    NOT NULL,
    billing_entity TEXT    NOT NULL,
    file_name      TEXT    NOT NULL,
    content        TEXT    NOT NULL,
    claim_count    INTEGER NOT NULL,
    create_us      BIGINT  NOT NULL
);
CREATE INDEX claim_batches_by_organization ON claim_batches (organization, control_number);

-- Every 835 posted, once: a second import of the same payer's trace number posts nothing.
CREATE TABLE remittances (
    id           BIGSERIAL PRIMARY KEY,
    organization TEXT   NOT NULL,
    payer_id     TEXT   NOT NULL,
    trace_number TEXT   NOT NULL,
    total_cents  BIGINT NOT NULL,
    import_us    BIGINT NOT NULL,
    UNIQUE (organization, payer_id, trace_number)
);

-- Payments of a remittance that matched no claim: a work queue for a person.
CREATE TABLE unmatched_payments (
    id           BIGSERIAL PRIMARY KEY,
    organization TEXT   NOT NULL,
    remittance   BIGINT NOT NULL REFERENCES remittances (id),
    claim_number TEXT   NOT NULL,
    paid_cents   BIGINT NOT NULL,
    reason       TEXT   NOT NULL,
    create_us    BIGINT NOT NULL
);
