-- verifyd schema, version 4: ALTCHA challenges already used for a send. A challenge is valid
-- until `expires_at` (from its salt); until then its row makes a second use fail — on every
-- daemon sharing this database — and after it the sweeper may delete the row, since the expiry
-- alone refuses the challenge from then on. `id` is the SHA-256 of the challenge hash.
CREATE TABLE spent_challenges (
    id         BYTEA       PRIMARY KEY,
    expires_at TIMESTAMPTZ NOT NULL
);

CREATE INDEX spent_challenges_expires_at_idx ON spent_challenges (expires_at);
