-- verifyd schema, version 6: what Django's whole-session save needs (issue 16). A per-session
-- version for optimistic concurrency (`ETag` / `If-Match`), absolute expiry moments, and the
-- order of keys in the data, which `jsonb` does not keep.

-- Grows whenever the data or the expiry policy changes (the trigger below does it, so every
-- statement that writes a session, in any migration, keeps it true).
ALTER TABLE sessions ADD COLUMN version BIGINT NOT NULL DEFAULT 1;

-- The data's keys in the order the client gave them. `jsonb` sorts keys by length then bytes;
-- reads put the keys back in this order. Kept consistent with `data` by the trigger below.
ALTER TABLE sessions ADD COLUMN data_order TEXT[] NOT NULL DEFAULT '{}';

-- Kind 4 is an absolute expiry (`Expiry::At`): the session dies at `expiry_at` (already capped
-- by `session.max_lifetime` when written), however it is used.
ALTER TABLE sessions ADD COLUMN expiry_at TIMESTAMPTZ NULL;
ALTER TABLE sessions DROP CONSTRAINT sessions_expiry_kind_check;
ALTER TABLE sessions ADD CONSTRAINT sessions_expiry_kind_check
    CHECK (expiry_kind BETWEEN 0 AND 4 AND (expiry_kind = 4) = (expiry_at IS NOT NULL));

-- Existing rows: their keys in jsonb's order, the best that is known.
UPDATE sessions SET data_order = ARRAY(SELECT jsonb_object_keys(data));

-- One place for the bookkeeping every session write needs, so that statements written before
-- this migration (the check's approval patch, per-name writes) stay correct without changes:
-- an absolute expiry never slides; the version moves when data or policy changed; the key
-- order drops removed keys and appends new ones (in jsonb's order when several arrive at once).
CREATE FUNCTION verifyd_sessions_bookkeeping() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    IF NEW.expiry_kind = 4 THEN
        NEW.expires_at := NEW.expiry_at;
    ELSE
        NEW.expiry_at := NULL;
    END IF;
    IF TG_OP = 'UPDATE' AND (NEW.data IS DISTINCT FROM OLD.data
            OR NEW.expiry_kind IS DISTINCT FROM OLD.expiry_kind
            OR NEW.idle_secs IS DISTINCT FROM OLD.idle_secs
            OR NEW.expiry_at IS DISTINCT FROM OLD.expiry_at) THEN
        NEW.version := OLD.version + 1;
    END IF;
    IF TG_OP = 'INSERT' OR NEW.data IS DISTINCT FROM OLD.data
            OR NEW.data_order IS DISTINCT FROM OLD.data_order THEN
        NEW.data_order := ARRAY(
            SELECT k FROM unnest(NEW.data_order) WITH ORDINALITY AS o (k, n)
            WHERE NEW.data ? k ORDER BY n
        ) || ARRAY(
            SELECT k FROM jsonb_object_keys(NEW.data) AS j (k)
            WHERE NOT (k = ANY (NEW.data_order))
        );
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER sessions_bookkeeping
    BEFORE INSERT OR UPDATE ON sessions
    FOR EACH ROW EXECUTE FUNCTION verifyd_sessions_bookkeeping();
