-- resource_attrs is the docstore's own index of its resources' attributes: only the docstore writes
-- it, always in the transaction that writes the resource, and resources are never deleted (a delete
-- is soft). The foreign key guarded nothing the code does not, yet was checked once per attribute
-- row. SQLite cannot drop a constraint: the table is built again without it.
CREATE TABLE resource_attrs_new (
    name  TEXT NOT NULL,
    attr  TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (name, attr, value)
);
INSERT INTO resource_attrs_new (name, attr, value) SELECT name, attr, value FROM resource_attrs;
DROP TABLE resource_attrs;
ALTER TABLE resource_attrs_new RENAME TO resource_attrs;
CREATE INDEX resource_attrs_lookup ON resource_attrs (attr, value, name);
