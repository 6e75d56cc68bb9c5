-- Revenue by the dimensions reports group on, kept in the transaction of every ledger entry (so it
-- always equals the sum of the ledger): one row per organization × unit × payer × billing entity ×
-- provider × code × month of service (local, 'YYYY-MM'). Summary reports read these rows instead of
-- scanning every entry; drill-down reads the charges behind a cell.
CREATE TABLE revenue_rollup (
    organization   TEXT   NOT NULL,
    unit           TEXT   NOT NULL,
    payer          TEXT   NOT NULL,
    billing_entity TEXT   NOT NULL,
    provider       TEXT   NOT NULL,
    code           TEXT   NOT NULL,
    month          TEXT   NOT NULL,
    charged_cents  BIGINT NOT NULL DEFAULT 0,
    reversed_cents BIGINT NOT NULL DEFAULT 0,
    paid_cents     BIGINT NOT NULL DEFAULT 0,
    adjusted_cents BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (organization, unit, payer, billing_entity, provider, code, month)
);
CREATE INDEX revenue_rollup_by_month ON revenue_rollup (organization, month);

-- Entries posted before this table existed.
INSERT INTO revenue_rollup (organization, unit, payer, billing_entity, provider, code, month,
                            charged_cents, reversed_cents, paid_cents, adjusted_cents)
SELECT c.organization, c.unit, c.payer, c.billing_entity, c.provider, c.code,
       substr(c.service_date, 1, 7),
       SUM(CASE WHEN l.kind = 'charge' THEN l.amount_cents ELSE 0 END),
       SUM(CASE WHEN l.kind = 'reversal' THEN l.amount_cents ELSE 0 END),
       SUM(CASE WHEN l.kind = 'payment' THEN l.amount_cents ELSE 0 END),
       SUM(CASE WHEN l.kind IN ('adjustment', 'write_off') THEN l.amount_cents ELSE 0 END)
FROM ledger_entries l JOIN charges c ON c.name = l.charge
GROUP BY c.organization, c.unit, c.payer, c.billing_entity, c.provider, c.code,
         substr(c.service_date, 1, 7);
