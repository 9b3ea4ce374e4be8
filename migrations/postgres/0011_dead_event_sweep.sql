-- verifyd schema, version 11: the sweeper deletes events that have been dead for longer than
-- `events.keep_dead`, oldest death first, a bounded batch per statement. Without an index each
-- batch would read the whole outbox; this one holds dead rows only, so delivering, retrying and
-- recording pending events never touch it.
CREATE INDEX outbox_dead_idx ON outbox (dead_at) WHERE dead_at IS NOT NULL;
