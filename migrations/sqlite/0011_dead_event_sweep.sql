-- verifyd embedded schema, version 11: as migrations/postgres/0011_dead_event_sweep.sql, an index
-- of dead events by the time they died, so each bounded batch of the sweeper's deletion of old
-- dead events reads only the rows it removes.
CREATE INDEX outbox_dead ON outbox (dead_at) WHERE dead_at IS NOT NULL;
