//! Pathological JSON bodies: bodies that are not UTF-8, deep nesting, bodies that are not one
//! object, what clients wrap JSON in, huge keys and a body of tiny objects, refused without
//! cost; odd but valid JSON stored exactly; and what Python and .NET clients send beyond JSON
//! (NaN, Infinity, numbers beyond a float, lone surrogates, a byte order mark) accepted.

use std::collections::BTreeMap;

use serde_json::json;

use crate::support::{Gateway, Influxd, send_raw};

use super::{
    COMMIT, Case, Expected, MIB, REGISTER, after_each, case, check_all, only_row, peak_rss_kib,
    post_raw, register, start,
};

/// InfluxDB and a gateway that take bodies of 2 MiB and string fields of 1 MiB, so the cases
/// below reach the JSON reader rather than a size limit.
fn start_for_big_json() -> (Influxd, Gateway) {
    start(
        &format!("max_body_bytes = {}\n", 2 * MIB),
        &format!(
            "[limits]\nmax_string_bytes = {MIB}\nmax_run_bytes = {}\n",
            2 * MIB
        ),
    )
}

/// `inner` wrapped in `depth` pairs of `open` and `close`.
fn deep(open: &str, inner: &str, close: &str, depth: usize) -> Vec<u8> {
    format!("{}{inner}{}", open.repeat(depth), close.repeat(depth)).into_bytes()
}

/// A register whose one field `f` has `value` (JSON text) as its value.
fn field(value: &str) -> String {
    format!(r#"{{"host":"lg","measurement":{{"fields":{{"f":{value}}}}}}}"#)
}

/// Bodies the JSON reader must refuse, and the code of each (415 for `unsupported_charset`,
/// else 400).
fn refused_json_cases() -> Vec<Case> {
    let refused: Vec<(&str, Vec<u8>, &'static str)> = vec![
        (
            "invalid UTF-8 inside a string",
            b"{\"host\":\"lg-\xff\xfe\"}".to_vec(),
            "unsupported_charset",
        ),
        (
            "invalid UTF-8 in a key",
            b"{\"ho\xc3st\":\"lg\"}".to_vec(),
            "unsupported_charset",
        ),
        (
            "an overlong encoding of '/'",
            b"{\"host\":\"\xc0\xaf\"}".to_vec(),
            "unsupported_charset",
        ),
        (
            "an encoded surrogate",
            b"{\"host\":\"\xed\xa0\x80\"}".to_vec(),
            "unsupported_charset",
        ),
        (
            "Latin-1 text",
            b"{\"host\":\"caf\xe9\"}".to_vec(),
            "unsupported_charset",
        ),
        (
            "UTF-16 with a byte order mark",
            b"\xff\xfe{\x00}\x00".to_vec(),
            "unsupported_charset",
        ),
        (
            "UTF-16 without a byte order mark",
            b"{\x00\"\x00h\x00\"\x00:\x001\x00}\x00".to_vec(),
            "unsupported_charset",
        ),
        (
            "UTF-32 with a byte order mark",
            b"\x00\x00\xfe\xff\x00\x00\x00{\x00\x00\x00}".to_vec(),
            "unsupported_charset",
        ),
        ("form data", b"host=lg&mode=x".to_vec(), "invalid_json"),
        (
            "JSONP",
            b"callback({\"host\":\"lg\"});".to_vec(),
            "invalid_json",
        ),
        (
            "Python's str() of a dict",
            b"{'host': 'lg', 'ok': True}".to_vec(),
            "invalid_json",
        ),
        (
            "NDJSON",
            b"{\"host\":\"a\"}\n{\"host\":\"b\"}\n".to_vec(),
            "invalid_json",
        ),
        (
            "a string holding a string",
            br#""\"lg\"""#.to_vec(),
            "not_an_object",
        ),
        (
            "gzip data without Content-Encoding",
            b"\x1f\x8b\x08\x00\x00\x00\x00\x00".to_vec(),
            "invalid_content_encoding",
        ),
        (
            "arrays nested 100 000 deep",
            deep("[", "", "]", 100_000),
            "invalid_json",
        ),
        (
            "objects nested 100 000 deep",
            deep("{\"a\":", "1", "}", 100_000),
            "invalid_json",
        ),
        (
            "100 000 unclosed brackets",
            "[".repeat(100_000).into_bytes(),
            "invalid_json",
        ),
        (
            "a field nested 100 000 deep",
            field(&String::from_utf8(deep("[", "", "]", 100_000)).unwrap()).into_bytes(),
            "invalid_json",
        ),
        ("a hex number", field("0x10").into_bytes(), "invalid_json"),
        ("a leading zero", field("01").into_bytes(), "invalid_json"),
        (
            "nan in lower case",
            field("nan").into_bytes(),
            "invalid_json",
        ),
        ("inf", field("inf").into_bytes(), "invalid_json"),
        (
            "startedAt 2^64+1",
            br#"{"startedAt":18446744073709551617}"#.to_vec(),
            "invalid_time",
        ),
        ("null", b"null".to_vec(), "not_an_object"),
        ("a string", br#""string""#.to_vec(), "not_an_object"),
        ("an empty array", b"[]".to_vec(), "not_an_object"),
        ("0", b"0".to_vec(), "not_an_object"),
        ("true", b"true".to_vec(), "not_an_object"),
        ("two objects", b"{}{}".to_vec(), "invalid_json"),
        ("trailing garbage", b"{} x".to_vec(), "invalid_json"),
        ("a NUL after the object", b"{}\0".to_vec(), "invalid_json"),
        ("only whitespace", b" \r\n\t ".to_vec(), "empty_body"),
        ("empty", Vec::new(), "empty_body"),
        (
            "a string field one byte over max_string_bytes",
            field(&format!("\"{}\"", "s".repeat(MIB + 1))).into_bytes(),
            "string_too_long",
        ),
        (
            "a 1 MiB tag value",
            format!(r#"{{"tags":{{"t":"{}"}}}}"#, "v".repeat(MIB)).into_bytes(),
            "invalid_tag",
        ),
    ];
    refused
        .into_iter()
        .map(|(name, body, code)| {
            let status = if code == "unsupported_charset" {
                415
            } else {
                400
            };
            case(name, post_raw(REGISTER, &body), status, code)
        })
        .collect()
}

#[test]
fn pathological_json_is_refused() {
    let (influx, mut gw) = start_for_big_json();
    let cases = refused_json_cases();
    let answers = check_all(gw.addr, &cases);
    // Each refusal of what clients wrap JSON in says what was seen.
    for (name, seen) in [
        (
            "UTF-16 with a byte order mark",
            "UTF-16 (little-endian) byte order mark",
        ),
        ("UTF-16 without a byte order mark", "looks like UTF-16"),
        ("Latin-1 text", "not UTF-8: byte 0xe9"),
        ("form data", "form data"),
        ("JSONP", "(JSONP)"),
        ("Python's str() of a dict", "single quotes"),
        ("NDJSON", "more than one JSON value"),
    ] {
        let at = cases.iter().position(|c| c.name == name).expect(name);
        let error = answers[at].json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(error.contains(seen), "{name}: {error}");
    }
    after_each(&mut gw, &influx, &Expected::default());
}

/// What Python's json.dumps, .NET and other clients send beyond strict JSON is accepted:
/// numbers a float cannot hold are left out like null (and counted in the answer), a lone
/// surrogate escape is U+FFFD, a UTF-8 byte order mark and a double-encoded body are taken off.
#[test]
fn what_clients_send_beyond_json_is_accepted() {
    let (influx, mut gw) = start_for_big_json();
    let mut expected = Expected::default();
    let huge = format!("1{}", "0".repeat(MIB - 100));
    let accepted: Vec<(&str, Vec<u8>, u64)> = vec![
        (
            "non-finite",
            br#"{"host":"non-finite","startedAt":NaN,"tags":{"t":Infinity},"ignored":[NaN,{"x":-Infinity}],
               "measurement":{"fields":{"a":NaN,"b":Infinity,"c":-Infinity,"d":+Infinity,"e":1e400,"f":-1e400,"ok":1.5}}}"#.to_vec(),
            10,
        ),
        ("huge-integer", field(&huge).replace(r#""lg""#, r#""huge-integer""#).into_bytes(), 1),
        ("surrogate", br#"{"host":"surrogate","measurement":{"fields":{"s":"a\udc80b"}}}"#.to_vec(), 0),
        ("bom", b"\xef\xbb\xbf{\"host\":\"bom\",\"measurement\":{\"fields\":{\"n\":1}}}".to_vec(), 0),
        (
            "double-encoded",
            serde_json::to_vec(&json!({"host": "double-encoded", "measurement": {"fields": {"n": 2}}}).to_string()).unwrap(),
            0,
        ),
    ];
    let mut uuids = BTreeMap::new();
    for (host, body, non_finite) in &accepted {
        let answer = send_raw(gw.addr, &post_raw(REGISTER, body));
        assert_eq!(answer.status, 200, "{host}: {}", answer.body);
        let reply = answer.json();
        assert_eq!(
            reply["non_finite_numbers"].as_u64().unwrap_or(0),
            *non_finite,
            "{host}: {reply}"
        );
        let uuid = reply["uuid"].as_str().unwrap().to_string();
        expected.register(&uuid, host, &[]);
        uuids.insert(*host, uuid);
    }
    let beat = |host: &str| only_row(&influx, "load_testing", &uuids[host]);
    let row = beat("non-finite");
    assert_eq!(row["ok"].as_f64(), Some(1.5));
    for gone in ["a", "b", "c", "d", "e", "f", "t"] {
        assert!(
            row.get(gone).is_none_or(|v| v.is_null()),
            "{gone} must be left out: {row:?}"
        );
    }
    assert_eq!(beat("surrogate")["s"].as_str(), Some("a\u{fffd}b"));
    assert_eq!(beat("bom")["n"].as_f64(), Some(1.0));
    assert_eq!(beat("double-encoded")["n"].as_f64(), Some(2.0));
    assert!(beat("huge-integer").get("f").is_none_or(|v| v.is_null()));
    after_each(&mut gw, &influx, &expected);
}

#[test]
fn odd_but_valid_json_is_stored_exactly() {
    let (influx, mut gw) = start_for_big_json();
    // Valid JSON, however odd, is accepted and stored exactly.
    let mut expected = Expected::default();
    let exact = "s".repeat(MIB);
    let quotes = "\"\\".repeat(MIB / 4);
    let accepted: Vec<(&str, String)> = vec![
        (
            "nested-100",
            format!(
                r#"{{"host":"nested-100","ignored":{}}}"#,
                String::from_utf8(deep("[", "", "]", 100)).unwrap()
            ),
        ),
        (
            "numbers",
            r#"{"host":"numbers","measurement":{"fields":{"big":18446744073709551617,"huge":1e308,"tiny":5e-324,"negzero":-0.0,"neg":-18446744073709551617}}}"#.into(),
        ),
        (
            "duplicates",
            r#"{"host":"dup-a","host":"duplicates","measurement":{"fields":{"x":1,"x":2}}}"#.into(),
        ),
        (
            "exact-limit",
            json!({"host": "exact-limit", "measurement": {"fields": {"s": exact}}}).to_string(),
        ),
        (
            "quotes",
            json!({"host": "quotes", "measurement": {"fields": {"s": quotes}}}).to_string(),
        ),
        (
            "long-fraction",
            format!(
                r#"{{"host":"long-fraction","measurement":{{"fields":{{"f":0.{}1}}}}}}"#,
                "0".repeat(MIB)
            ),
        ),
    ];
    let mut uuids = BTreeMap::new();
    for (host, body) in &accepted {
        let answer = send_raw(gw.addr, &post_raw(REGISTER, body.as_bytes()));
        assert_eq!(answer.status, 200, "{host}: {}", answer.body);
        let uuid = answer.json()["uuid"].as_str().unwrap().to_string();
        expected.register(&uuid, host, &[]);
        uuids.insert(*host, uuid);
    }
    let beat = |host: &str| only_row(&influx, "load_testing", &uuids[host]);
    let numbers = beat("numbers");
    assert_eq!(numbers["big"].as_f64(), Some(18446744073709551617.0));
    assert_eq!(numbers["neg"].as_f64(), Some(-18446744073709551617.0));
    assert_eq!(numbers["huge"].as_f64(), Some(1e308));
    assert_eq!(numbers["tiny"].as_f64(), Some(5e-324));
    assert_eq!(numbers["negzero"].as_f64(), Some(0.0));
    let duplicates = beat("duplicates");
    assert_eq!(
        (duplicates["host"].as_str(), duplicates["x"].as_f64()),
        (Some("duplicates"), Some(2.0)),
        "the last of duplicate keys wins, as in every mainstream JSON parser"
    );
    let stored = beat("exact-limit");
    assert_eq!(
        stored["s"].as_str().map(str::len),
        Some(MIB),
        "a string field of exactly max_string_bytes is stored whole"
    );
    assert_eq!(stored["s"].as_str(), Some(exact.as_str()));
    assert_eq!(beat("quotes")["s"].as_str(), Some(quotes.as_str()));
    assert_eq!(
        beat("long-fraction")["f"].as_f64(),
        Some(0.0),
        "a fraction below the smallest float is 0"
    );
    after_each(&mut gw, &influx, &expected);
}

/// An error names the key at fault, but a key can be as long as the body: the answer must
/// not carry a megabyte of the client's own input back (values are already quoted short).
#[test]
fn errors_name_a_huge_key_without_echoing_it_whole() {
    let (influx, mut gw) = start(&format!("max_body_bytes = {}\n", 2 * MIB), "");
    let key = "k".repeat(MIB);
    let run = register(gw.addr, &json!({"host": "echo"}));
    let mut expected = Expected::default();
    expected.register(&run, "echo", &[]);
    let bodies = [
        (
            "a 1 MiB field key",
            REGISTER,
            json!({"measurement": {"fields": {&key: 1}}}),
            "invalid_field",
        ),
        (
            "a 1 MiB tag key",
            REGISTER,
            json!({"tags": {&key: "v"}}),
            "invalid_tag",
        ),
        (
            "a 1 MiB measurement tag key",
            REGISTER,
            json!({"measurement": {"tags": {&key: "v"}}}),
            "invalid_tag",
        ),
        (
            "a 1 MiB field key on commit",
            COMMIT,
            json!({"uuid": run, "measurement": {"fields": {&key: 1}}}),
            "invalid_field",
        ),
        (
            "a 1 MiB startedAt",
            REGISTER,
            json!({"startedAt": key}),
            "invalid_time",
        ),
        ("a 1 MiB uuid", COMMIT, json!({"uuid": key}), "invalid_uuid"),
    ];
    let cases: Vec<Case> = bodies
        .iter()
        .map(|(name, path, body, code)| {
            case(
                *name,
                post_raw(path, body.to_string().as_bytes()),
                400,
                code,
            )
        })
        .collect();
    check_all(gw.addr, &cases);
    after_each(&mut gw, &influx, &expected);
}

/// A body within `server.max_body_bytes` must cost memory in proportion to its size. Parsed
/// into a JSON tree, each 8-byte `{"a":1}` becomes a map node of several hundred bytes, so
/// 1 MiB of them under a key the gateway ignores would take tens of MiB per request, and
/// every connection can send one at the same time.
#[test]
fn a_body_of_tiny_objects_does_not_multiply_into_memory() {
    let (influx, mut gw) = start("", "");
    let before = gw.rss_kib();
    let prefix = r#"{"host":"tiny-objects","ignored":["#;
    let count = (MIB - prefix.len() - 2) / 8;
    let body = format!("{prefix}{}]}}", vec![r#"{"a":1}"#; count].join(","));
    assert!(body.len() <= MIB);
    let answer = send_raw(gw.addr, &post_raw(REGISTER, body.as_bytes()));
    assert!(
        matches!(answer.status, 200 | 400 | 413),
        "{}: {}",
        answer.status,
        answer.body
    );
    println!(
        "a {}-byte body of {count} tiny objects: {}, RSS {before} -> {} KiB, peak {} KiB",
        body.len(),
        answer.status,
        gw.rss_kib(),
        peak_rss_kib(&gw)
    );
    let mut expected = Expected::default();
    if answer.status == 200 {
        let uuid = answer.json()["uuid"].as_str().unwrap().to_string();
        expected.register(&uuid, "tiny-objects", &[]);
    }
    let peak = peak_rss_kib(&gw);
    assert!(
        peak < before + 32 * 1024,
        "one 1 MiB request must not cost tens of MiB: resident memory went from {before} KiB to a peak of {peak} KiB"
    );
    after_each(&mut gw, &influx, &expected);
}
