-- The generic resource store (pm-runtime's docstore module), created in every service's slice.
CREATE TABLE resources (
    name        TEXT COLLATE "C" NOT NULL PRIMARY KEY,  -- bytewise order, as on SQLite
    collection  TEXT COLLATE "C" NOT NULL,
    revision    BIGINT NOT NULL,
    create_time BIGINT NOT NULL,   -- microseconds since the Unix epoch, UTC
    update_time BIGINT NOT NULL,
    delete_time BIGINT,            -- set by a soft delete
    body        BYTEA  NOT NULL    -- protobuf encoding of the resource
);
CREATE INDEX resources_by_collection ON resources (collection, name);
CREATE INDEX resources_by_collection_time ON resources (collection, create_time, name);

-- Filterable and lookup attributes of each resource (kept in step with its body).
CREATE TABLE resource_attrs (
    name  TEXT COLLATE "C" NOT NULL REFERENCES resources (name),
    attr  TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (name, attr, value)
);
CREATE INDEX resource_attrs_lookup ON resource_attrs (attr, value, name);

-- request_id of creating and state-changing calls, with the response first given.
CREATE TABLE idempotency_keys (
    method       TEXT   NOT NULL,
    request_id   TEXT   NOT NULL,
    request_hash TEXT   NOT NULL,
    response     BYTEA  NOT NULL,
    create_time  BIGINT NOT NULL,
    PRIMARY KEY (method, request_id)
);
