//! The line-protocol reader proven against the real `influxd` (1.6.7): hand-written bodies (every
//! escape, quote, number, boolean, timestamp and precision rule of docs/line-protocol.md, and
//! the lines of InfluxDB's own refusals) and a few hundred generated lines from a fixed seed,
//! each sent straight to influxd (database `a_<precision>`) and through the gateway's `/write`
//! (database `b_<precision>`, acknowledged once InfluxDB stored it). Both must accept and refuse
//! the same lines, with the same words, and store the same points: every series, field type and
//! row of the two databases is compared (times left out for lines without a timestamp, which the
//! two paths stamp at different instants).
//!
//! Runtime: influxd is asked line by line (it is the oracle); the gateway gets the lines influxd
//! refused one by one (nothing is written, so they are quick) and those it accepted in batches.

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::support::{ConsumerToml, Gateway, Influxd, RawResponse, request, urlencode};

const TOKEN: &str = "lp-token-0123456789abcdef";

/// Lines the gateway gets in one request when influxd took each of them alone.
const BATCH: usize = 64;

/// `/write`'s precisions: the database suffix and the `precision=` sent (`None`: left out).
/// 1.6.7 reads `us` and every spelling it does not know as nanoseconds.
const PRECISIONS: [(&str, Option<&str>); 10] = [
    ("none", None),
    ("n", Some("n")),
    ("ns", Some("ns")),
    ("u", Some("u")),
    ("us", Some("us")),
    ("ms", Some("ms")),
    ("s", Some("s")),
    ("m", Some("m")),
    ("h", Some("h")),
    ("xyz", Some("xyz")),
];

/// Bodies sent at every precision: timestamps, their range and their absence.
const TIMESTAMPS: &[&str] = &[
    "m f=1 1",
    "m f=1 -1",
    "m f=1 0",
    "m f=1 -0",
    "m f=1 01",
    "m f=1",
    "m f=1 ",
    "m f=1 2562047",
    "m f=1 2562048",
    "m f=1 -2562047",
    "m f=1 153722867",
    "m f=1 153722868",
    "m f=1 9223372036",
    "m f=1 9223372037",
    "m f=1 -9223372036",
    "m f=1 -9223372037",
    "m f=1 9223372036854",
    "m f=1 9223372036855",
    "m f=1 9223372036854775",
    "m f=1 9223372036854776",
    "m f=1 -9223372036854776",
    "m f=1 9223372036854775806",
    "m f=1 9223372036854775807",
    "m f=1 9223372036854775808",
    "m f=1 -9223372036854775806",
    "m f=1 -9223372036854775807",
    "m f=1 -9223372036854775808",
    "m f=1 -9223372036854775809",
    "m f=1 99999999999999999999",
    "m f=1 1x",
    "m f=1 1.5",
    "m f=1 +1",
    "m f=1 --1",
    "m f=1 -",
    "m f=1 1 x",
    "m f=1 1 2",
    "m f=1 1\t",
    "m f=1\t1",
    "m f=1 1\r",
];

/// Bodies sent at nanosecond precision: one line each unless they say otherwise.
const CORPUS: &[&str] = &[
    // Plain points and types.
    "m f=1 1",
    r#"m,t=a f=1i,g=-0i,h=true,s="x" 5"#,
    "m,b=1,a=2 f=1 1",
    "m,a=1,A=2,_=3,0=4 f=1 1",
    // Escapes in the measurement.
    r"m\,x\ y f=1 2",
    r"m\=x f=1 3",
    r#"m\"x f=1 4"#,
    r"m\x f=1 5",
    r"m\\x f=1 6",
    r"m\\,t=a f=1 7",
    r"m\\ f=1 8",
    r"m\\\ x f=1 9",
    r"m\ f=1 10",
    r"m\  f=1 11",
    "m= f=1 12",
    r#"m" f=1 13"#,
    "m=x,t=a f=1 14",
    r"\,m f=1 15",
    r"\ m f=1 16",
    r"\#m f=1 17",
    "m# f=1 18",
    "#m f=1 19",
    r"m\ x,t=a f=1 20",
    r"m\ f=1,g=2",
    r"m\\\\x f=1 21",
    // Tag keys and values.
    r"m,t\,k\=k\ k=v\,v\=v\ v f=1 1",
    r#"m,t\"=v\" f=1 1"#,
    r#"m,t"=v" f=1 1"#,
    r"m,t\x=v\y f=1 1",
    r"m,t=v\\ f=1 1",
    r"m,t=v\\\ x f=1 1",
    r"m,t=\  f=1 1",
    r"m,t=\\ f=1 1",
    r"m,t=a\ f=1 1",
    r"m,t=a\,u=b f=1 1",
    r"m,\ =a f=1 1",
    r"m,\==a f=1 1",
    r"m,t==a f=1 1",
    r"m,t=a= f=1 1",
    "m,t=a,t=b f=1 1",
    "m,t=a,t=a f=1 1",
    "m,u=a,t=b,u=c f=1 1",
    r"m,t=a,t\ =b f=1 1",
    "m,t= f=1 1",
    "m,t=a,u= f=1 1",
    "m,t f=1 1",
    "m,=a f=1 1",
    "m,t=a=b f=1 1",
    "m, f=1 1",
    "m,t=a, f=1 1",
    "m,t=a,,u=b f=1 1",
    "m,t=a",
    "m,time=a f=1 1",
    "m,Time=a f=1 1",
    r"m,ti\me=a f=1 1",
    "m,t=time f=1 1",
    "m,f=a f=1 1",
    "m,f=a f=1i 1",
    // Field keys.
    r"m f\,k\=k\ k=1 1",
    r"m f\x=1 1",
    r#"m f\"=1 1"#,
    r#"m f"=1 1"#,
    r"m a\\\=b=1 1",
    r"m \ f=1 1",
    r"m f\ =1 1",
    r"m \,=1 1",
    "m =1 1",
    "m f=1,=2 1",
    "m f 1",
    "m 1",
    "m ",
    "m,t=a ",
    "m",
    "m\tf=1 1",
    "m f=1, 1",
    "m ,f=1 1",
    "m f=1,,g=2 1",
    "m f=,g=1 1",
    "m f= 1",
    "m f=",
    "m f==1 1",
    "m f=1=2 1",
    // Duplicate fields, `time` as a field.
    "m f=1,g=2,f=3 1",
    "m f=1,f=1 1",
    "m f=1i,f=2i 1",
    r#"m f="a",f="b" 1"#,
    "m f=t,f=F 1",
    "m f=1,f=2i 1",
    r#"m f="a",f=1 1"#,
    "m f=true,f=1i 1",
    r#"m\ z f=t,g=1,f=1i,f="s" 1"#,
    "m time=1,f=2 1",
    "m f=2,time=1 1",
    "m time=1 1",
    r#"m time="x" 1"#,
    "m time=1,time=2 1",
    "m Time=1 1",
    r"m ti\me=1 1",
    // String values.
    r#"m s="a\"b\\c\nd\,e" 1"#,
    r#"m s="a\\" 1"#,
    r#"m s="a\tb" 1"#,
    r#"m s="" 1"#,
    "m s=\"\n\" 1",
    "m s=\"a\nb\nc\" 1",
    "m s=\"a\r\nb\" 1",
    r#"m s="a""b" 1"#,
    r#"m s="x"y 1"#,
    r#"m s="a b,c=d" 1"#,
    r#"m f=1,g="a=b,c" 1"#,
    r#"m s="\\\"" 1"#,
    r#"m s="\\\\" 1"#,
    r#"m s="\" 1"#,
    r#"m s="a\" 1"#,
    r#"m s=" 1"#,
    r#"m s="a 1"#,
    r#"m s=a" 1"#,
    r#"m a=\"x" 1"#,
    r#"m s="é日本🚀" 1"#,
    "m s=\"tab\there\" 1",
    r#"m s="x",t="y" 1"#,
    r#"m s="x" ,t=1 1"#,
    // Floats.
    "m a=1,b=1.5,c=-1.5,d=1e3,e=1E-3,f=.5,g=5.,h=-.5 1",
    "m f=1e+3 1",
    "m f=1E+3 1",
    "m f=0.1e1 1",
    "m f=1.e1 1",
    "m f=.1e1 1",
    "m f=-.1e-1 1",
    "m f=1e-400 1",
    "m f=2e-324 1",
    "m f=4.9e-324 1",
    "m f=1.7976931348623157e308 1",
    "m f=1.7976931348623159e308 1",
    "m f=1.8e308 1",
    "m f=123456789012345678901234567890 1",
    "m f=1234567890123456789012345 1",
    "m f=179769313486231570000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000 1",
    "m f=-0 1",
    "m f=-0.0 1",
    "m f=00 1",
    "m f=007.5 1",
    "m f=0.30000000000000004 1",
    "m f=1e 1",
    "m f=1ee3 1",
    "m f=5.e 1",
    "m f=1e400 1",
    "m f=-1e400 1",
    "m f=1e3.5 1",
    "m f=1.1.1 1",
    "m f=- 1",
    "m f=. 1",
    "m f=-. 1",
    "m f=.e1 1",
    "m f=0x10 1",
    "m f=1_000 1",
    "m f=+1 1",
    "m f=+.5 1",
    "m f=+1i 1",
    "m f=e1 1",
    "m f=1-2 1",
    "m f=1e-+3 1",
    "m f=1\\ 2 1",
    r"m a=1\,b=2 1",
    // Integers, unsigned.
    "m f=9223372036854775807i 1",
    "m f=-9223372036854775808i 1",
    "m f=9223372036854775808i 1",
    "m f=-9223372036854775809i 1",
    "m f=01i 1",
    "m f=-0i 1",
    "m f=1.5i 1",
    "m f=1e3i 1",
    "m f=-i 1",
    "m f=i 1",
    "m f=1ii 1",
    "m f=1i0 1",
    "m f=1I 1",
    "m f=1u 1",
    "m f=0u 1",
    "m f=18446744073709551615u 1",
    "m f=-1u 1",
    "m f=1iu 1",
    "m f=1ui 1",
    // Booleans in every spelling, and not quite.
    "m b1=t,b2=T,b3=true,b4=True,b5=TRUE,b6=f,b7=F,b8=false,b9=False,b10=FALSE 1",
    "m b=tRUE 1",
    "m b=tRue 1",
    "m b=yes 1",
    "m b=truex 1",
    "m b=tr 1",
    "m b=FAlse 1",
    "m b=0b 1",
    "m b=t1 1",
    // Not finite.
    "m f=NaN 1",
    "m f=nan 1",
    "m f=-NaN 1",
    "m f=-Inf 1",
    "m f=Inf 1",
    "m f=inf 1",
    "m f=Infinity 1",
    "m f=-inf 1",
    "m f=N 1",
    "m f=n 1",
    "m f=Na 1",
    // Whitespace and line ends.
    " m f=1 1",
    "\tm f=1 1",
    "\0m f=1 1",
    "m  f=1  1",
    "m \tf=1 \t1",
    "m f=1 1  ",
    "m f=1 1\t ",
    "m f=1  ",
    "m f=1\t",
    "m f=1\r\n",
    "m f=1 1\r\n",
    "m s=\"x\"\r\n",
    "m b=t\r\n",
    "m f=1 1\r\nm f=2 2\r\n",
    "m f=1\0 1",
    "m f=1 1\0",
    "m\0f=1 1",
    // Comments and blank lines, several lines to a body.
    "# a comment\nm f=1 1",
    "  # indented comment\nm f=1 2",
    "#m f=1 1",
    "m f=1 1\n\n\nm f=2 2\n",
    "\n\n",
    "m f=1 1\n# x \"\nm f=2 2",
    "m f=1 1\nbad\nm f=3 3",
    "m s=\"a\nb\" 1\nm f=2 2",
    "m s=\"a\n# not a comment\" 1",
    "m f=1 1\nm f=2i 2",
    "m f=1 1\nm g=2,g=3i 2\nm f=4 3",
    "m g=2,g=3i 2\nm f=4 3",
    "m f=1 1\nm,time=x f=2 2\nm f=4 3",
    "m f=1 1\nm f=1 1",
    "m,t=a f=1 1\nm,t=b g=2i 1",
    // Unicode.
    "mé,tä=vö fü=1 1",
    "日本,タグ=値 フィールド=1i 1",
    "🚀 🔥=\"💧\" 1",
    "m,t=\u{200b} f=1 1",
    "\u{feff}m f=1 1",
];

/// One body and what came of it on each side.
struct Outcome {
    body: String,
    precision: &'static str,
    influxd: RawResponse,
    gateway: Option<RawResponse>,
}

#[test]
fn the_gateway_accepts_refuses_and_stores_lines_as_influxdb_does() {
    let influx = Influxd::start();
    let gw = Gateway::start(
        &ConsumerToml::new(&influx.url, "runs")
            .rest(&format!(
                "[auth]\n[[auth.token]]\nname = \"lp\"\ntoken = \"{TOKEN}\"\ndatabases = [\"b_*\"]\nmax_series = 1000000\n"
            ))
            .toml(),
    );
    let start_ns = now_ns();
    let mut bodies: Vec<(usize, String)> = Vec::new();
    for (p, (_, _)) in PRECISIONS.iter().enumerate() {
        bodies.extend(TIMESTAMPS.iter().map(|b| (p, (*b).to_string())));
    }
    bodies.extend(CORPUS.iter().map(|b| (2, (*b).to_string())));
    let generated = generate(0x5eed_1f0c, 400);
    bodies.extend(
        generated
            .iter()
            .enumerate()
            .map(|(i, b)| (i % PRECISIONS.len(), b.clone())),
    );
    // Each body's lines that name the measurement `m` get one of their own, so that no two
    // bodies meet in a series or a field's type.
    let bodies: Vec<(usize, String)> = bodies
        .into_iter()
        .enumerate()
        .map(|(n, (p, body))| (p, own_measurement(&body, n)))
        .collect();

    for (name, _) in PRECISIONS {
        influx.create_database(&format!("a_{name}"));
        influx.create_database(&format!("b_{name}"));
    }
    let mut outcomes: Vec<Outcome> = bodies
        .iter()
        .map(|(p, body)| {
            let (name, precision) = PRECISIONS[*p];
            Outcome {
                body: body.clone(),
                precision: name,
                influxd: request(
                    influx.addr(),
                    "POST",
                    &path(&format!("a_{name}"), precision),
                    &[],
                    Some(body),
                ),
                gateway: None,
            }
        })
        .collect();

    // Through the gateway: what influxd refused alone, and bodies of more than one line, one
    // request each; what it took, in batches (one by one again if a batch is not taken whole).
    let auth = format!("Token {TOKEN}");
    let send = |p: usize, body: &str| {
        let (name, precision) = PRECISIONS[p];
        request(
            gw.addr,
            "POST",
            &path(&format!("b_{name}"), precision),
            &[("Authorization", &auth)],
            Some(body),
        )
    };
    let mut batches: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, o) in outcomes.iter_mut().enumerate() {
        let single = !o.body.contains('\n') && !o.body.contains('\\');
        if o.influxd.status == 204 && single {
            batches.entry(bodies[i].0).or_default().push(i);
        } else {
            o.gateway = Some(send(bodies[i].0, &o.body));
        }
    }
    for (p, members) in batches {
        for chunk in members.chunks(BATCH) {
            let body: String = chunk
                .iter()
                .map(|&i| format!("{}\n", bodies[i].1))
                .collect();
            let r = send(p, &body);
            for &i in chunk {
                outcomes[i].gateway = Some(if r.status == 204 {
                    r.clone()
                } else {
                    send(p, &bodies[i].1)
                });
            }
        }
    }
    let end_ns = now_ns();

    let mut disagreements: Vec<String> = outcomes.iter().filter_map(disagreement).collect();
    let now = start_ns - 3_600_000_000_000..end_ns + 60_000_000_000;
    for (name, _) in PRECISIONS {
        let a = stored(&influx, &format!("a_{name}"), &now);
        let b = stored(&influx, &format!("b_{name}"), &now);
        let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
        for key in keys {
            // A point refused for a field of two types leaves in the database it was sent to
            // the field types InfluxDB met before the conflict, and its series: never a row.
            let residue = !key.starts_with("rows")
                && outcomes.iter().any(|o| {
                    o.influxd.body.contains("field type conflict")
                        && o.body
                            .split('\n')
                            .any(|line| key.ends_with(&format!(" of {:?}", measurement_of(line))))
                });
            if a.get(key) != b.get(key) && !residue {
                disagreements.push(format!(
                    "precision {name}, {key}:\n  straight to influxd: {:?}\n  through the gateway: {:?}",
                    a.get(key),
                    b.get(key)
                ));
            }
        }
    }
    let refused = outcomes.iter().filter(|o| o.influxd.status != 204).count();
    assert!(
        disagreements.is_empty(),
        "{} of {} bodies ({refused} refused by influxd) disagree:\n{}",
        disagreements.len(),
        outcomes.len(),
        disagreements.join("\n")
    );
    // The corpus exercises both sides of the reader.
    assert!(
        refused > 150 && outcomes.len() - refused > 250,
        "{refused} refused of {}",
        outcomes.len()
    );
}

/// Where the two answers to one body differ: the status, or the words of a refusal; `None`
/// when they agree.
fn disagreement(o: &Outcome) -> Option<String> {
    let g = o.gateway.as_ref()?;
    let (i, gw) = (&o.influxd, g);
    let words = |r: &RawResponse| {
        if r.status == 204 {
            String::new()
        } else {
            r.json()["error"].as_str().unwrap_or(&r.body).to_string()
        }
    };
    let (iw, gww) = (words(i), words(gw));
    let same = i.status == gw.status && iw == gww;
    (!same).then(|| {
        format!(
            "{:?} (precision {}):\n  influxd: {} {iw}\n  gateway: {} {gww}",
            o.body, o.precision, i.status, gw.status
        )
    })
}

/// `/write?db=DB` with `precision=` when given.
fn path(db: &str, precision: Option<&str>) -> String {
    match precision {
        Some(p) => format!("/write?db={db}&precision={p}"),
        None => format!("/write?db={db}"),
    }
}

/// The time now, in nanoseconds since the Unix epoch.
pub fn now_ns() -> i64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// `body` with each line that starts with the measurement `m` (then `,`, space or tab)
/// naming `m_<n>` instead.
fn own_measurement(body: &str, n: usize) -> String {
    body.split('\n')
        .map(|line| match line.strip_prefix('m') {
            Some(rest) if rest.starts_with([',', ' ', '\t']) => format!("m_{n}{rest}"),
            _ => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// What `db` holds, per measurement (`fields of "m"`, `tags of "m"`, `rows of "m"`): its field
/// keys with their types, its tag keys, and its rows (every column not null, as JSON; the time
/// replaced by `now` when it falls in `now`, i.e. a line sent without a timestamp), sorted.
fn stored(influx: &Influxd, db: &str, now: &Range<i64>) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (q, what) in [
        ("SHOW FIELD KEYS", "fields"),
        ("SHOW TAG KEYS", "tags"),
        ("SELECT * FROM /.*/", "rows"),
    ] {
        let v = query(influx, db, q);
        for series in v["results"][0]["series"].as_array().into_iter().flatten() {
            let name = series["name"].as_str().unwrap_or_default();
            let columns: Vec<&str> = series["columns"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| c.as_str().unwrap_or_default())
                .collect();
            let mut rows: Vec<String> = series["values"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|values| {
                    let mut cells = Vec::new();
                    for (column, value) in
                        columns.iter().zip(values.as_array().into_iter().flatten())
                    {
                        if value.is_null() {
                            continue;
                        }
                        let at_now = *column == "time"
                            && what == "rows"
                            && value.as_i64().is_some_and(|t| now.contains(&t));
                        let value = if at_now {
                            "now".to_string()
                        } else {
                            value.to_string()
                        };
                        cells.push(format!("{column}={value}"));
                    }
                    cells.join(" ")
                })
                .collect();
            rows.sort();
            out.insert(format!("{what} of {name:?}"), rows.join("; "));
        }
    }
    out
}

/// The measurement a line names, unescaped (`\,`, `\ `, `\=`, `\"`).
fn measurement_of(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | ',' => break,
            '\\' => match chars.next() {
                Some(e @ (',' | ' ' | '=' | '"')) => out.push(e),
                Some(e) => {
                    out.push('\\');
                    out.push(e);
                }
                None => out.push('\\'),
            },
            c => out.push(c),
        }
    }
    out
}

/// `q` on `db`, times in nanoseconds; panics on an error.
fn query(influx: &Influxd, db: &str, q: &str) -> Value {
    let path = format!("/query?db={db}&epoch=ns&q={}", urlencode(q));
    let r = request(influx.addr(), "GET", &path, &[], None);
    assert_eq!(r.status, 200, "{q} on {db}: {}", r.body);
    let v = r.json();
    assert!(v["results"][0].get("error").is_none(), "{q} on {db}: {v}");
    v
}

/// `n` lines from `seed`: measurements, tags and field keys built of plain letters, escapes,
/// delimiters and unicode; field values in valid and invalid spellings; timestamps present,
/// absent, negative, at and past the range's ends, or not numbers. Deterministic (xorshift64*).
fn generate(seed: u64, n: usize) -> Vec<String> {
    let mut rng = Rng(seed);
    // Name pieces: each may end a name, so none ends in a lone backslash (a field key with a
    // backslash right before its `=` is the one documented difference).
    const NAME: &[&str] = &[
        "a", "b", "cpu", "x1", r"\,", r"\ ", r"\=", r#"\""#, r"\x", r"\\x", "é", "日本", "-", "_",
        ".", "\"", "#", "🚀",
    ];
    // Only in measurements and tags, never ending a field key.
    const KEY_ONLY: &[&str] = &[r"\\", "=", r"\\\,"];
    const VALUES: &[&str] = &[
        "1",
        "-1",
        "1.5",
        "-1.5",
        ".5",
        "5.",
        "-.5",
        "1e3",
        "1E-3",
        "1e+3",
        "0",
        "-0",
        "00",
        "1i",
        "-1i",
        "0i",
        "01i",
        "9223372036854775807i",
        "9223372036854775808i",
        "1u",
        "0u",
        "1.5i",
        "+1",
        "+1i",
        "t",
        "T",
        "true",
        "True",
        "TRUE",
        "f",
        "F",
        "false",
        "False",
        "FALSE",
        "tRUE",
        "yes",
        "NaN",
        "-Inf",
        "inf",
        "1e400",
        "1e-400",
        "1e",
        "1.1.1",
        "-",
        ".",
        "",
        "\"\"",
        "\"s\"",
        "\"a b\"",
        "\"a,b=c\"",
        r#""a\"b""#,
        r#""a\\b""#,
        r#""a\nb""#,
        "\"a\nb\"",
        r#""é🚀""#,
        "\"unterminated",
        r#""x"y"#,
        "1 ",
    ];
    const TIMES: &[&str] = &[
        "",
        "-1",
        "0",
        "1x",
        "9223372036854775806",
        "9223372036854775807",
        "-9223372036854775806",
        "-9223372036854775807",
        "1.5",
        "-",
        " 1",
        "1 ",
    ];
    let name = |rng: &mut Rng, extra: &[&str]| {
        let mut s = String::new();
        for _ in 0..rng.below(3) + 1 {
            let pick = rng.below(NAME.len() + extra.len());
            s.push_str(
                NAME.get(pick)
                    .copied()
                    .unwrap_or_else(|| extra[pick - NAME.len()]),
            );
        }
        s
    };
    (0..n)
        .map(|i| {
            let mut line = format!("g{i}");
            if rng.below(3) == 0 {
                line.push_str(&name(&mut rng, KEY_ONLY));
            }
            for _ in 0..rng.below(4) {
                line.push(',');
                line.push_str(&name(&mut rng, KEY_ONLY));
                line.push('=');
                line.push_str(&name(&mut rng, KEY_ONLY));
            }
            line.push(' ');
            for f in 0..rng.below(3) + 1 {
                if f > 0 {
                    line.push(',');
                }
                line.push_str(&name(&mut rng, &[]));
                line.push('=');
                line.push_str(VALUES[rng.below(VALUES.len())]);
            }
            // Mostly a timestamp of the line's own, else one of the tricky ones.
            if rng.below(4) > 0 {
                line.push_str(&format!(" {}", 1000 + i));
            } else {
                let t = TIMES[rng.below(TIMES.len())];
                if !t.is_empty() {
                    line.push(' ');
                    line.push_str(t);
                }
            }
            if rng.below(8) == 0 {
                line.push_str("  ");
            }
            line
        })
        .collect()
}

/// xorshift64*: a few lines of deterministic randomness, so the lines are the same each run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        (x >> 33) as usize % n.max(1)
    }
}
