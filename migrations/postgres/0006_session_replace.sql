-- verifyd schema, version 6: what Django's whole-session save needs (issue 16). A per-session
-- version for optimistic concurrency (`ETag` / `If-Match`), absolute expiry moments, and the
-- order of keys in the data, which `jsonb` does not keep.

-- Grows whenever the data or the expiry policy changes (the trigger below does it, so every
-- statement that writes a session, in any migration, keeps it true).
ALTER TABLE sessions ADD COLUMN version BIGINT NOT NULL DEFAULT 1;

-- The data as the client wrote it, key order included at every depth: `jsonb` sorts keys (by
-- length, then bytes). Reads prefer this column; `data` stays for the operators statements use
-- (`||`, `-`, `?`). The trigger below keeps the two equal as values.
ALTER TABLE sessions ADD COLUMN data_json JSON NULL;

-- Kind 4 is an absolute expiry (`Expiry::At`): the session dies at `expiry_at` (already capped
-- by `session.max_lifetime` when written), however it is used.
ALTER TABLE sessions ADD COLUMN expiry_at TIMESTAMPTZ NULL;
ALTER TABLE sessions DROP CONSTRAINT sessions_expiry_kind_check;
ALTER TABLE sessions ADD CONSTRAINT sessions_expiry_kind_check
    CHECK (expiry_kind BETWEEN 0 AND 4 AND (expiry_kind = 4) = (expiry_at IS NOT NULL));

-- Existing rows: jsonb's order is the best that is known.
UPDATE sessions SET data_json = data::json;

-- One place for the bookkeeping every session write needs, so that statements written before
-- this migration (the check's approval patch, per-name writes) stay correct without changes:
-- an absolute expiry never slides; the version moves when data or policy changed; a statement
-- that changed `data` without writing `data_json` gets it rebuilt: kept keys in their old
-- places with their old text when unchanged, new keys after them (in jsonb's order).
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
    IF TG_OP = 'INSERT' THEN
        IF NEW.data_json IS NULL THEN
            NEW.data_json := NEW.data::json;
        END IF;
    ELSIF NEW.data IS DISTINCT FROM OLD.data
            AND NEW.data_json::text IS NOT DISTINCT FROM OLD.data_json::text THEN
        NEW.data_json := COALESCE((
            SELECT json_object_agg(k, v ORDER BY grp, n)
            FROM (
                SELECT o.k, 0 AS grp, o.n,
                       CASE WHEN OLD.data -> o.k = NEW.data -> o.k THEN OLD.data_json -> o.k
                            ELSE (NEW.data -> o.k)::json END AS v
                FROM json_object_keys(OLD.data_json) WITH ORDINALITY AS o (k, n)
                WHERE NEW.data ? o.k
                UNION ALL
                SELECT j.k, 1, j.n, (NEW.data -> j.k)::json
                FROM jsonb_object_keys(NEW.data) WITH ORDINALITY AS j (k, n)
                WHERE NOT (OLD.data ? j.k)
            ) AS merged
        ), '{}'::json);
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER sessions_bookkeeping
    BEFORE INSERT OR UPDATE ON sessions
    FOR EACH ROW EXECUTE FUNCTION verifyd_sessions_bookkeeping();
