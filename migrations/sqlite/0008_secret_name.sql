-- verifyd embedded schema, version 8: the server secret's row takes the name it has on
-- PostgreSQL (crate::store::SECRET_NAME), so that both stores name their state alike.
UPDATE verifyd_meta SET name = 'code_mac_key' WHERE name = 'server_secret';
