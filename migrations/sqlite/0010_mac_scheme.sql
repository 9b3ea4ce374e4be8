-- verifyd embedded schema, version 10: code MACs name no session any more (crate::code::CodeKey::mac,
-- docs/codes.md), as in migrations/postgres/0010_one_round_trip.sql. Which scheme a row's
-- `code_mac` follows: 1 over the session id (versions 1 to 9), 2 over the phone and code only.
-- Rows of scheme 1 cannot be compared by this version: a check answers them as expired without
-- using an attempt, and the next send replaces their code. Every write of a code sets 2.
ALTER TABLE verifications ADD COLUMN mac_scheme INTEGER NOT NULL DEFAULT 1;
