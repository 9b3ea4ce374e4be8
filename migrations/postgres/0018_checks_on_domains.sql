-- verifyd schema, version 18: the row checks of the tables a send or a check writes move onto
-- domains (issue 13). PostgreSQL 15 reads and plans a table's CHECK constraints again for every
-- statement that writes to it: about 13,000 instructions a constraint and a statement, so a
-- limits-on send paid about 100,000 for four columns being non-negative and a state being 0 to 2
-- (bench/instructions, dropping them). A domain's checks are planned once per connection and kept
-- in its type cache; each statement only links them in. Same rules, same error class
-- (check_violation), cheaper.
--
-- The columns change type without a rewrite: a domain with no constraint yet is the same bytes.
-- Adding the check to the domain afterwards scans the tables that use it once (the old checks
-- already held them to the same rule). The tables stay locked until this commits: 50 ms with
-- bench/run's 144,000 codes.
-- The sessions table keeps its checks: one spans two columns, and a send writes a session only
-- when it creates or slides one.
--
-- Wire and PL/pgSQL: a domain's column is sent with its base type (integer, smallint), and
-- assigning one to a variable of the base type needs nothing, so neither the daemon nor the
-- functions change.

CREATE DOMAIN verifyd_count AS INTEGER;
CREATE DOMAIN verifyd_state AS SMALLINT;

ALTER TABLE verifications
    ALTER COLUMN state TYPE verifyd_state,
    ALTER COLUMN attempts TYPE verifyd_count;
ALTER TABLE number_counters
    ALTER COLUMN short_n TYPE verifyd_count,
    ALTER COLUMN day_n TYPE verifyd_count;
ALTER TABLE quota_counters ALTER COLUMN count TYPE verifyd_count;
ALTER TABLE quota_shards ALTER COLUMN count TYPE verifyd_count;
ALTER TABLE pumping
    ALTER COLUMN sends TYPE verifyd_count,
    ALTER COLUMN approvals TYPE verifyd_count;
ALTER TABLE pumping_shards
    ALTER COLUMN sends TYPE verifyd_count,
    ALTER COLUMN approvals TYPE verifyd_count;

-- The rules of versions 1, 2, 8 and 14, stated once each.
ALTER DOMAIN verifyd_count ADD CONSTRAINT verifyd_count_not_negative CHECK (VALUE >= 0);
ALTER DOMAIN verifyd_state ADD CONSTRAINT verifyd_state_known CHECK (VALUE BETWEEN 0 AND 2);

ALTER TABLE verifications
    DROP CONSTRAINT verifications_state_check,
    DROP CONSTRAINT verifications_attempts_check;
ALTER TABLE number_counters
    DROP CONSTRAINT number_counters_short_n_check,
    DROP CONSTRAINT number_counters_day_n_check;
ALTER TABLE quota_counters DROP CONSTRAINT quota_counters_count_check;
ALTER TABLE quota_shards DROP CONSTRAINT quota_shards_count_check;
ALTER TABLE pumping
    DROP CONSTRAINT pumping_sends_check,
    DROP CONSTRAINT pumping_approvals_check;
ALTER TABLE pumping_shards
    DROP CONSTRAINT pumping_shards_sends_check,
    DROP CONSTRAINT pumping_shards_approvals_check;
