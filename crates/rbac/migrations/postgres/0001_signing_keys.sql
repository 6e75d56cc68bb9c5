-- Keys that sign bearer tokens. The private key is PKCS#8 DER; production deployments should keep
-- this slice's database encrypted at rest (or move signing to a KMS).
CREATE TABLE signing_keys (
    kid         TEXT    NOT NULL PRIMARY KEY,
    private_key BYTEA   NOT NULL,
    public_x    TEXT    NOT NULL,   -- base64url raw Ed25519 public key (JWK "x")
    create_time BIGINT  NOT NULL,   -- microseconds since the Unix epoch, UTC
    retire_time BIGINT              -- set when rotated out; verifies until its tokens expire
);
