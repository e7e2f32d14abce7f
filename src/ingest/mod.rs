//! What clients send, turned into what InfluxDB stores: what clients put around their JSON
//! (`body`), bounded and tolerant JSON reading (`json`), the
//! checked records of both client shapes (`payload`), the points each run writes (`points`) and
//! their line-protocol text (`line_protocol`), and the strict reader of line protocol that
//! clients send to the InfluxDB write APIs (`lp_parse`).
//!
//! Nothing under this folder does I/O or reads a clock: bytes and the caller's "now" in, values
//! and text out. That makes every rule here testable with plain data, and the tidy test
//! (`tests/it/tidy.rs`) keeps it so.

pub mod body;
pub mod json;
pub mod line_protocol;
pub mod lp_parse;
pub mod payload;
pub mod points;
#[cfg(test)]
mod roundtrip_tests;
