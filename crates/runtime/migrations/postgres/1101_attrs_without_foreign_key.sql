-- resource_attrs is the docstore's own index of its resources' attributes: only the docstore writes
-- it, always in the statement or transaction that writes the resource, and resources are never
-- deleted (a delete is soft). The foreign key guarded nothing the code does not, yet checked (and
-- row-locked) the resource once per attribute row: about a quarter of a create's cost in this
-- store (pgbench: one resource with five attributes, 32 clients, ~3,700 → ~4,900 per second).
ALTER TABLE resource_attrs DROP CONSTRAINT IF EXISTS resource_attrs_name_fkey;
