-- verifyd embedded schema, version 7: what a `same_code` resend needs to send a live code
-- again without the code being stored. Rows of older versions have neither value: their code is
-- never resent, the next send draws a new one.
-- The random value the code was derived from under the MAC key (crate::code::CodeNonce);
-- useless without that key.
ALTER TABLE verifications ADD COLUMN code_nonce BLOB;
-- The code_mac that nonce belongs to: a later send that replaces the code (a new verification,
-- a new_code resend) leaves it behind, and the stale nonce is then never used.
ALTER TABLE verifications ADD COLUMN nonce_mac BLOB;
-- Milliseconds since the epoch past which resends no longer extend this code's lifetime.
ALTER TABLE verifications ADD COLUMN keep_until INTEGER;
