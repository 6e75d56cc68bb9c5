-- Care-management minutes (CCM/PCM), summed per patient, unit and month (the month in the
-- organization's time zone, 'YYYY-MM'), and the months closed: a closed month takes no more entries
-- and is not billed twice.
CREATE TABLE care_time_entries (
    name                 TEXT    NOT NULL PRIMARY KEY,
    organization         TEXT    NOT NULL,
    patient              TEXT    NOT NULL,
    unit                 TEXT    NOT NULL,
    staff                TEXT    NOT NULL,
    role                 TEXT    NOT NULL CHECK (role IN ('clinical_staff', 'physician')),
    minutes              INTEGER NOT NULL CHECK (minutes BETWEEN 1 AND 1440),
    performed_us         BIGINT  NOT NULL,
    month                TEXT    NOT NULL,
    billing_practitioner TEXT    NOT NULL,
    create_us            BIGINT  NOT NULL
);
CREATE INDEX care_time_entries_by_month ON care_time_entries (patient, unit, month);

CREATE TABLE care_months (
    patient   TEXT   NOT NULL,
    unit      TEXT   NOT NULL,
    month     TEXT   NOT NULL,
    program   TEXT   NOT NULL,
    outcome   TEXT   NOT NULL,
    closed_us BIGINT NOT NULL,
    PRIMARY KEY (patient, unit, month)
);
