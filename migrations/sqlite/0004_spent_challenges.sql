-- verifyd schema, version 4: ALTCHA challenges already used for a send. A challenge is valid
-- until `expires_at` (from its salt); until then its row makes a second use fail, and after it
-- the sweeper may delete the row, since the expiry alone refuses the challenge from then on.
-- `id` is the SHA-256 of the challenge hash. Times are Unix milliseconds, as in 0001.
CREATE TABLE spent_challenges (
    id         BLOB    PRIMARY KEY,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE INDEX spent_challenges_expires_at_idx ON spent_challenges (expires_at);
