//! The integration tests, built as one test binary (`it`): each module below covers one area
//! of the gateway through the real binary (`CARGO_BIN_EXE_metrics-consumer`), most of them with
//! a real throwaway `influxd` on loopback, and `support` holds what they share. One binary
//! rather than one per file, so the shared helpers are compiled and linked once.

mod support;

mod answered;
mod auth;
mod bounds;
mod check_influxdb;
mod cli;
mod clients;
mod coalesce;
mod commits;
mod delivery;
mod durability;
mod examples;
mod gateway;
mod harness_selftest;
mod hostile;
mod influx_api;
mod influx_trouble;
mod limits;
mod line_protocol;
mod links;
mod metrics;
mod replay;
mod report;
mod retention;
mod schema;
mod service;
mod spool_shares;
mod tidy;
mod tls;
mod verdicts;
mod write_api;
