-- verifyd embedded schema, version 6: the per-session version behind `ETag` / `If-Match`
-- (issue 16). The data is TEXT, so key order already survives; an absolute expiry is kind 4,
-- whose moment is `expires_at` itself (the store never slides it).
ALTER TABLE sessions ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
