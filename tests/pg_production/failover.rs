//! Failover of the PostgreSQL primary under traffic.
