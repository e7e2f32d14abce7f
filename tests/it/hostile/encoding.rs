//! Hostile compressed bodies: a gzip bomb, truncated, corrupt and twice-compressed data, and
//! labels that do not match the body, each refused with its own code and without inflating
//! more than the bound; and every spelling of the codings read, recorded.

use std::io::Write;
use std::time::Instant;

use flate2::Compression;
use flate2::write::{DeflateEncoder, GzEncoder, ZlibEncoder};
use serde_json::json;

use crate::support::send_raw;

use super::{
    Case, Expected, MIB, REGISTER, after_each, case, check, check_all, peak_rss_kib, raw, start,
};

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::best());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut e = ZlibEncoder::new(Vec::new(), Compression::default());
    e.write_all(data).expect("zlib");
    e.finish().expect("zlib")
}

fn raw_deflate(data: &[u8]) -> Vec<u8> {
    let mut e = DeflateEncoder::new(Vec::new(), Compression::default());
    e.write_all(data).expect("deflate");
    e.finish().expect("deflate")
}

/// A POST to register with `Content-Encoding: coding` (none when empty) and `body` as is.
fn encoded(coding: &str, body: &[u8]) -> Vec<u8> {
    let mut extra = format!("Content-Length: {}\r\n", body.len());
    if !coding.is_empty() {
        extra.push_str(&format!("Content-Encoding: {coding}\r\n"));
    }
    raw("POST", REGISTER, &extra, body)
}

/// About 1 MiB that inflates to 1 GiB of zeros: 256 gzip members of 4 MiB each, which a gzip
/// reader must read one after another (RFC 1952 §2.2).
fn bomb() -> Vec<u8> {
    gzip(&vec![0u8; 4 * MIB]).repeat(256)
}

#[test]
fn a_gzip_bomb_is_refused_without_being_inflated() {
    let (influx, mut gw) = start(&format!("max_body_bytes = {}\n", 2 * MIB), "");
    let bomb = bomb();
    assert!(bomb.len() < 2 * MIB, "{} bytes", bomb.len());
    let before = gw.rss_kib();
    let started = Instant::now();
    let answer = check(
        gw.addr,
        &case(
            "a gzip bomb",
            encoded("gzip", &bomb),
            413,
            "inflated_too_large",
        ),
    );
    let took = started.elapsed();
    let peak = peak_rss_kib(&gw);
    println!(
        "a {}-byte gzip bomb of 1 GiB: {} in {took:?}, RSS {before} KiB, peak {peak} KiB",
        bomb.len(),
        answer.status
    );
    assert!(
        answer.json()["error"]
            .as_str()
            .unwrap()
            .contains("16777216 bytes")
    );
    // The bound is 16 MiB, plus the compressed body and its parse: far from a GiB.
    assert!(
        peak < before + 48 * 1024,
        "inflating a bomb cost memory: {before} KiB -> peak {peak} KiB"
    );
    assert!(
        took.as_secs() < 20,
        "{took:?}: the bomb was inflated further than the bound"
    );
    after_each(&mut gw, &influx, &Expected::default());
}

#[test]
fn corrupt_and_mislabelled_compressed_bodies_are_refused() {
    let (influx, mut gw) = start("", "");
    let object = br#"{"host":"lg"}"#;
    let whole = gzip(object);
    let truncated = whole[..whole.len() - 5].to_vec();
    let cases: Vec<Case> = vec![
        case(
            "truncated gzip",
            encoded("gzip", &truncated),
            400,
            "invalid_content_encoding",
        ),
        case(
            "gzip labelled deflate",
            encoded("deflate", &whole),
            400,
            "invalid_content_encoding",
        ),
        case(
            "plain JSON labelled gzip",
            encoded("gzip", object),
            400,
            "invalid_content_encoding",
        ),
        case(
            "gzip without a label",
            encoded("", &whole),
            400,
            "invalid_content_encoding",
        ),
        case(
            "gzip twice, labelled once",
            encoded("gzip", &gzip(&whole)),
            400,
            "invalid_content_encoding",
        ),
        case(
            "gzip of text that is not JSON",
            encoded("gzip", &gzip(b"hello")),
            400,
            "invalid_json",
        ),
        case(
            "gzip of a UTF-16 body",
            encoded("gzip", &gzip(b"\xff\xfe{\x00}\x00")),
            415,
            "unsupported_charset",
        ),
        case(
            "br on a plain body",
            encoded("br", object),
            415,
            "unsupported_content_encoding",
        ),
        case(
            "zstd",
            encoded("zstd", object),
            415,
            "unsupported_content_encoding",
        ),
        case(
            "compress",
            encoded("compress", object),
            415,
            "unsupported_content_encoding",
        ),
        case(
            "gzip three times",
            encoded("gzip, gzip, gzip", &gzip(&gzip(&whole))),
            415,
            "unsupported_content_encoding",
        ),
    ];
    let answers = check_all(gw.addr, &cases);
    for (c, answer) in cases.iter().zip(&answers) {
        let error = answer.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if answer.status == 415 && c.code == "unsupported_content_encoding" {
            assert_eq!(
                answer.header("accept-encoding"),
                Some("gzip, deflate"),
                "{}",
                c.name
            );
        }
        if c.code == "invalid_content_encoding" {
            assert!(
                error.contains("gzip") || error.contains("deflate"),
                "{}: {error}",
                c.name
            );
        }
    }
    assert!(
        answers[7].json()["error"]
            .as_str()
            .unwrap()
            .contains("\"br\"")
    );
    after_each(&mut gw, &influx, &Expected::default());
}

#[test]
fn every_spelling_of_the_codings_read_is_recorded() {
    let (influx, mut gw) = start("", "");
    let mut expected = Expected::default();
    let body = |host: &str| json!({"host": host, "measurement": {"fields": {"n": 1}}}).to_string();
    let cases: Vec<(&str, &str, Vec<u8>)> = vec![
        ("gzip", "gzip", gzip(body("gzip").as_bytes())),
        ("x-gzip", "X-GZIP", gzip(body("x-gzip").as_bytes())),
        ("zlib", "deflate", zlib(body("zlib").as_bytes())),
        (
            "raw-deflate",
            "Deflate",
            raw_deflate(body("raw-deflate").as_bytes()),
        ),
        (
            "listed",
            " gzip , identity ",
            gzip(body("listed").as_bytes()),
        ),
        ("identity", "identity", body("identity").into_bytes()),
        ("empty", "", body("empty").into_bytes()),
        ("twice", "gzip, gzip", gzip(&gzip(body("twice").as_bytes()))),
    ];
    for (host, coding, data) in cases {
        let mut extra = format!("Content-Length: {}\r\n", data.len());
        // An empty value is sent as such: the header is there, and says nothing.
        extra.push_str(&format!("Content-Encoding: {coding}\r\n"));
        let answer = send_raw(gw.addr, &raw("POST", REGISTER, &extra, &data));
        assert_eq!(answer.status, 200, "{host}: {}", answer.body);
        let uuid = answer.json()["uuid"].as_str().unwrap().to_string();
        expected.register(&uuid, host, &[]);
    }
    after_each(&mut gw, &influx, &expected);
}
