-- verifyd embedded schema, version 3: no new tables. The rules of
-- migrations/postgres/0003_challenge_and_networks.sql (challenges, soft quotas, per-network
-- counters, the session created with a browser's first accepted send) live in
-- crate::store::sqlite and use the `quota_counters` and `sessions` tables of versions 1 and 2.
SELECT 1;
