-- Coordination of benefits and per-line adjudication.
--
-- A claim's place in the payer order: 'P' (primary, the default for every claim before) or 'S' (a
-- secondary claim made once the primary's 835 was posted), and the claim whose adjudication a
-- secondary carries. State text gains 'replaced' (a claim a corrected claim replaced).
ALTER TABLE claims ADD COLUMN payer_sequence TEXT NOT NULL DEFAULT 'P';
ALTER TABLE claims ADD COLUMN prior_claim TEXT NOT NULL DEFAULT '';
CREATE INDEX claims_by_prior ON claims (prior_claim);

-- What a payer's 835 decided for one claim line: paid, and when. line_number 0 holds the claim
-- level (its CAS adjustments, paid 0).
CREATE TABLE claim_line_adjudications (
    claim             TEXT    NOT NULL REFERENCES claims (name),
    line_number       INTEGER NOT NULL CHECK (line_number >= 0),
    remittance        BIGINT  NOT NULL REFERENCES remittances (id),
    paid_cents        BIGINT  NOT NULL,
    adjudication_date TEXT    NOT NULL,
    PRIMARY KEY (claim, line_number, remittance)
);

-- Each CAS adjustment of a claim line (or of the claim, line_number 0), in the 835's order.
CREATE TABLE claim_line_adjustments (
    claim        TEXT    NOT NULL REFERENCES claims (name),
    line_number  INTEGER NOT NULL CHECK (line_number >= 0),
    remittance   BIGINT  NOT NULL REFERENCES remittances (id),
    seq          INTEGER NOT NULL,
    group_code   TEXT    NOT NULL,
    reason_code  TEXT    NOT NULL,
    amount_cents BIGINT  NOT NULL,
    PRIMARY KEY (claim, line_number, remittance, seq)
);
