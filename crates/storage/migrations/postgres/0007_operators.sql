-- Operator accounts of the console (issue #11): people, not store systems (those have API keys
-- in the configuration). In the database so that every replica on one PostgreSQL database sees
-- the same accounts and an account is added or disabled without a restart.
CREATE TABLE operators (
    id            BIGSERIAL PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    role          TEXT NOT NULL CHECK (role IN ('viewer', 'desk', 'operator', 'admin')),
    password_hash TEXT NOT NULL,     -- argon2id PHC string; never the password
    disabled      BOOLEAN NOT NULL DEFAULT FALSE,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);
