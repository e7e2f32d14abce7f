//! `metrics-consumer --check-influxdb`: what the gateway's configuration finds at InfluxDB,
//! told a line each for a person setting it up. Creates nothing, stores nothing.

use crate::delivery::sink::Sink;
use crate::{StartError, config};

/// `--check-influxdb`: contacts InfluxDB and prints, a line each, whether it answers, whether
/// the credentials may write to the database or bucket (an empty write: nothing is stored),
/// how long its retention policy keeps points, and (v1) how many values the `uuid` tag holds.
/// Creates nothing. An error when writes cannot work, after printing InfluxDB's reason.
pub fn run(c: &config::Influxdb) -> Result<(), StartError> {
    use crate::delivery::influx::{Influx, WriteCheck};
    use crate::delivery::sink::SinkError;
    let (target, who) = match c.api {
        config::Api::V1 => (
            format!("database {:?}", c.database),
            match c.username.as_str() {
                "" => "without credentials".to_string(),
                user => format!("as user {user:?}"),
            },
        ),
        config::Api::V2 => (
            format!("bucket {:?} of org {:?}", c.bucket, c.org),
            "with the token".to_string(),
        ),
        config::Api::V3 => (
            format!("database {:?}", c.database),
            "with the token".to_string(),
        ),
    };
    let api = match c.api {
        config::Api::V1 => "v1",
        config::Api::V2 => "v2",
        config::Api::V3 => "v3",
    };
    println!("# InfluxDB at {} (api {api}), {target}, {who}", c.url);
    let influx = Influx::new(c);
    if let Err(e) = influx.ping() {
        println!("FAILED: InfluxDB does not answer /ping at influxdb.url: {e}");
        return Err(StartError::InfluxdbCheck);
    }
    println!("ok: InfluxDB answers");
    match influx.check_write() {
        Ok(WriteCheck::Taken) => {
            println!("ok: may write to the {target} (an empty write: nothing was stored)")
        }
        Ok(WriteCheck::BodyRefused(words)) => println!(
            "ok: may write to the {target} (an empty write, which InfluxDB checked and then refused as empty: {words:?}; nothing was stored)"
        ),
        Err(e) => {
            let advice = match &e {
                SinkError::Misconfigured { status: 401, .. } => {
                    " -- the credentials are wrong (influxdb.username/password or token)"
                }
                SinkError::Misconfigured {
                    status: 403,
                    by_influxdb: true,
                    ..
                } => {
                    " -- the credentials are valid but may not write there: grant WRITE (v1: GRANT WRITE ON <db> TO <user>) or give the token write permission"
                }
                SinkError::Misconfigured {
                    status: 404,
                    by_influxdb: true,
                    ..
                } if c.create_database => {
                    " -- it does not exist; the gateway tries CREATE DATABASE at start (influxdb.create_database), which takes an admin user"
                }
                SinkError::Misconfigured {
                    status: 404,
                    by_influxdb: true,
                    ..
                } => " -- it does not exist: create it, or fix its name",
                _ => "",
            };
            println!("FAILED: cannot write to the {target} {who}: {e}{advice}");
            return Err(StartError::InfluxdbCheck);
        }
    }
    match influx.retention() {
        Ok(Some(r)) => println!(
            "ok: points are kept {} (retention policy {:?}): a run whose startedAt is older is refused with 400",
            r.keeps(),
            r.policy
        ),
        Ok(None) if c.api == config::Api::V3 => {
            println!("note: InfluxDB 3 does not tell its retention over this API")
        }
        Ok(None) => println!("ok: points are kept for ever"),
        Err(e) => println!(
            "note: cannot read the retention policy ({e}); runs older than it keeps are not refused at the request"
        ),
    }
    match influx.uuid_values() {
        Ok(Some(counts)) => {
            let most = counts.iter().map(|(_, n)| *n).max().unwrap_or(0);
            let each: Vec<String> = counts.iter().map(|(m, n)| format!("{m} {n}")).collect();
            println!(
                "ok: the uuid tag holds about {most} values (one per run; {}); InfluxDB 1.x refuses new values beyond its max-values-per-tag, 100000 unless its configuration says otherwise, which it does not tell",
                if each.is_empty() {
                    "none yet".to_string()
                } else {
                    each.join(", ")
                }
            )
        }
        Ok(None) => {}
        Err(e) => println!("note: cannot count the uuid tag's values: {e}"),
    }
    Ok(())
}
