//! Client authentication: who may use the routes that change or show anything.
//!
//! A client presents a token as `Authorization: Bearer T`, or as HTTP Basic credentials with T
//! as the password and any user name (so a client that can only put credentials in a URL,
//! `http://locust:T@host:3000`, or curl's `-u :T`, works too). Tokens are compared in constant
//! time, against every configured token, so neither the answer time nor the order of the list
//! says how much of a guess was right.
//!
//! Each token belongs to a [`Client`]: a name (shown in the access log, never the token) and
//! limits of its own — runs running at once, requests per second ([`RequestRate`]). Failed
//! checks are limited per address ([`FailedChecks`]): past `auth.max_failures` in
//! `auth.failure_window`, an address (an IPv6 /64) is answered 429 without a check until it
//! has waited, so guessing costs time.
//!
//! This module never logs, stores or echoes what a client sent; it only answers yes or no.
//! It also holds what both directions of HTTP Basic need of base64 (the `base64` crate).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A client of the gateway: one token, the name it goes by and its limits.
#[derive(Clone, PartialEq)]
pub struct Client {
    /// Shown in the access log and, with `auth.tag_runs_with_token_name`, as the `token_name`
    /// tag of its runs.
    pub name: String,
    pub token: String,
    /// Runs it may have running (or being registered) at once.
    pub max_running: usize,
    /// Bytes of the job table its runs may hold: its share of `jobs.max_table_bytes`, in
    /// proportion to its `max_running`.
    pub max_table_bytes: usize,
    /// Requests per second on average, with bursts of one second's worth; 0: no limit.
    pub requests_per_second: f64,
    /// The databases (buckets) it may write through InfluxDB's write API, as globs; empty:
    /// none.
    pub databases: Vec<String>,
    /// The measurements it may write there, as globs.
    pub measurements: Vec<String>,
    /// Distinct series it may make in each database (see `state::series`).
    pub max_series: u64,
    /// Bytes its records not yet delivered may take in the log: its `max_spool_bytes`, or
    /// its equal share of `storage.max_spool_bytes`.
    pub max_spool_bytes: u64,
}

impl Client {
    /// Whether the client may write `database` (a database or bucket name) through InfluxDB's
    /// write API: one of its `databases` globs matches the whole name.
    pub fn may_write_database(&self, database: &str) -> bool {
        matches_any(&self.databases, database)
    }

    /// Whether the client may write points of `measurement`.
    pub fn may_write_measurement(&self, measurement: &str) -> bool {
        matches_any(&self.measurements, measurement)
    }
}

/// Whether one of `globs` (`*`: any run of characters, `?`: one) matches the whole `name`.
fn matches_any(globs: &[String], name: &str) -> bool {
    globs.iter().any(|g| {
        // A glob without `*` or `?` matches itself alone; `*` matches everything. Neither needs
        // the pattern built.
        if g == "*" {
            true
        } else if g.contains(['*', '?']) {
            wildmatch::WildMatch::new(g).matches(name)
        } else {
            g == name
        }
    })
}

/// Never shows the token.
impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("name", &self.name)
            .field("token", &"<redacted>")
            .field("max_running", &self.max_running)
            .field("max_table_bytes", &self.max_table_bytes)
            .field("requests_per_second", &self.requests_per_second)
            .field("databases", &self.databases)
            .field("measurements", &self.measurements)
            .field("max_series", &self.max_series)
            .field("max_spool_bytes", &self.max_spool_bytes)
            .finish()
    }
}

/// Why a request is not let in; the message is safe to show (it never quotes the credentials).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    Missing,
    Malformed,
    WrongToken,
}

impl Denied {
    pub fn message(self) -> &'static str {
        match self {
            Denied::Missing => {
                "a token is required: send \"Authorization: Bearer TOKEN\", or HTTP Basic auth with the token as password (curl -u :TOKEN)"
            }
            Denied::Malformed => {
                "the Authorization header is not \"Bearer TOKEN\" or \"Basic base64(user:TOKEN)\""
            }
            Denied::WrongToken => "the token is not valid",
        }
    }
}

/// The tokens of every client, to check a request's against.
pub struct Tokens {
    tokens: Vec<Vec<u8>>,
}

impl Tokens {
    pub fn new(clients: &[Client]) -> Tokens {
        Tokens {
            tokens: clients
                .iter()
                .map(|c| c.token.as_bytes().to_vec())
                .collect(),
        }
    }

    /// No tokens configured: every request is let in.
    pub fn is_open(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Checks the value of an `Authorization` header (or its absence); returns the index of
    /// the client whose token it is (in the list given to [`Tokens::new`]), or `None` when no
    /// tokens are configured.
    pub fn check(&self, authorization: Option<&[u8]>) -> Result<Option<usize>, Denied> {
        if self.is_open() {
            return Ok(None);
        }
        let presented = presented_token(authorization.ok_or(Denied::Missing)?)?;
        self.find(&presented)
    }

    /// [`Tokens::check`] of a token sent as a password outside `Authorization` (InfluxDB 1.x's
    /// query parameter `p`).
    pub fn check_password(&self, password: &[u8]) -> Result<Option<usize>, Denied> {
        if self.is_open() {
            return Ok(None);
        }
        self.find(password)
    }

    /// The client whose token `presented` is, comparing every token.
    fn find(&self, presented: &[u8]) -> Result<Option<usize>, Denied> {
        // Every token is compared, whatever the outcome of the others.
        let mut found = None;
        for (i, token) in self.tokens.iter().enumerate() {
            if constant_time_eq(token, presented) {
                found = Some(i);
            }
        }
        found.map(Some).ok_or(Denied::WrongToken)
    }
}

/// A token bucket: `rate` tokens a second, holding `burst` at most, full at first.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    level: f64,
    at: Instant,
}

impl Bucket {
    fn full(burst: f64, now: Instant) -> Bucket {
        Bucket {
            level: burst,
            at: now,
        }
    }

    fn refill(&mut self, now: Instant, rate: f64, burst: f64) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.level = (self.level + elapsed * rate).min(burst);
        self.at = now;
    }

    /// How long until one token is there (zero when one is).
    fn wait(&self, rate: f64) -> Duration {
        if self.level >= 1.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - self.level) / rate)
        }
    }
}

/// Seconds for `Retry-After`: `wait` rounded up, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

/// What a limit is counted per: the address, or for IPv6 its /64, since one client commonly
/// holds a whole /64 (RFC 6177). An IPv4-mapped IPv6 address counts as the IPv4 one.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

/// Addresses tracked at most; beyond, those that have waited out their failures go, and
/// (under a flood from more addresses) new ones are not tracked: an address held back is never
/// let go early.
const MAX_ADDRESSES: usize = 65_536;

/// Failed token checks per address: `max_failures` in a burst, given back evenly over
/// `window`.
pub struct FailedChecks {
    rate: f64,
    burst: f64,
    addresses: Mutex<HashMap<IpAddr, Bucket>>,
}

impl FailedChecks {
    /// `max_failures` (≥ 1) within `window`.
    pub fn new(max_failures: u32, window: Duration) -> FailedChecks {
        let burst = f64::from(max_failures.max(1));
        FailedChecks {
            rate: burst / window.as_secs_f64().max(0.001),
            burst,
            addresses: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(wait)` when `ip` has spent its failures: its requests are answered 429 without a
    /// check for `wait`.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let mut addresses = crate::sync::lock(&self.addresses);
        let Some(bucket) = addresses.get_mut(&address_key(ip)) else {
            return Ok(());
        };
        bucket.refill(now, self.rate, self.burst);
        match bucket.wait(self.rate) {
            Duration::ZERO => Ok(()),
            wait => Err(wait),
        }
    }

    /// Counts one failed check from `ip`; `true` when that spent its last one (worth one log
    /// line, rather than one per attempt).
    pub fn failed(&self, ip: IpAddr, now: Instant) -> bool {
        let mut addresses = crate::sync::lock(&self.addresses);
        let key = address_key(ip);
        if addresses.len() >= MAX_ADDRESSES && !addresses.contains_key(&key) {
            // Addresses that have their whole allowance back need no entry.
            let (rate, burst) = (self.rate, self.burst);
            addresses.retain(|_, b| {
                b.refill(now, rate, burst);
                b.level < burst
            });
            if addresses.len() >= MAX_ADDRESSES {
                // A flood from more addresses than are tracked: those held back stay held back;
                // this new one is not counted (it has its allowance, as any address it could
                // come from next would).
                return false;
            }
        }
        let bucket = addresses
            .entry(key)
            .or_insert_with(|| Bucket::full(self.burst, now));
        bucket.refill(now, self.rate, self.burst);
        bucket.level = (bucket.level - 1.0).max(0.0);
        bucket.level < 1.0
    }
}

/// Each client's request rate (`requests_per_second`), by the client's index.
pub struct RequestRate {
    limits: Vec<(f64, Mutex<Bucket>)>,
}

impl RequestRate {
    pub fn new(clients: &[Client]) -> RequestRate {
        let now = Instant::now();
        RequestRate {
            limits: clients
                .iter()
                .map(|c| {
                    let rate = c.requests_per_second;
                    (rate, Mutex::new(Bucket::full(rate.max(1.0), now)))
                })
                .collect(),
        }
    }

    /// Takes one request of client `index`; `Err(wait)` when its rate is spent.
    pub fn take(&self, index: usize, now: Instant) -> Result<(), Duration> {
        let Some((rate, bucket)) = self.limits.get(index) else {
            return Ok(());
        };
        if *rate <= 0.0 {
            return Ok(());
        }
        let mut bucket = crate::sync::lock(bucket);
        bucket.refill(now, *rate, rate.max(1.0));
        match bucket.wait(*rate) {
            Duration::ZERO => {
                bucket.level -= 1.0;
                Ok(())
            }
            wait => Err(wait),
        }
    }
}

/// The token inside `Bearer T` or `Basic base64(user:T)`.
fn presented_token(header: &[u8]) -> Result<Vec<u8>, Denied> {
    let text = std::str::from_utf8(header)
        .map_err(|_| Denied::Malformed)?
        .trim();
    let (scheme, rest) = text.split_once(' ').ok_or(Denied::Malformed)?;
    let rest = rest.trim();
    // `Token` is InfluxDB 2's scheme (its clients, Telegraf's outputs.influxdb_v2).
    if scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token") {
        return Ok(rest.as_bytes().to_vec());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64_decode(rest).ok_or(Denied::Malformed)?;
        let colon = decoded
            .iter()
            .position(|&b| b == b':')
            .ok_or(Denied::Malformed)?;
        return Ok(decoded[colon + 1..].to_vec());
    }
    Err(Denied::Malformed)
}

/// Compares without an early exit, so the time taken does not depend on where `a` and `b`
/// first differ. (A length difference is visible; token lengths are not secret.)
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0xff);
    }
    diff == 0
}

/// Standard base64 (RFC 4648 §4), written with padding and read with or without it, as HTTP
/// clients send Basic credentials both ways.
const BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

/// `Basic` credentials for a request to another server (InfluxDB v1).
pub fn basic_credentials(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64_encode(format!("{user}:{password}").as_bytes())
    )
}

/// Standard base64 with padding (RFC 4648 §4).
pub fn base64_encode(data: &[u8]) -> String {
    base64::Engine::encode(&BASE64, data)
}

/// Decodes standard base64; padding is optional. `None` for anything else.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    base64::Engine::decode(&BASE64, text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdef0123";

    fn client(name: &str, token: &str) -> Client {
        Client {
            name: name.into(),
            token: token.into(),
            max_running: 10,
            max_table_bytes: 1 << 20,
            requests_per_second: 0.0,
            databases: vec!["k6".into(), "jmeter_*".into()],
            measurements: vec!["*".into()],
            max_series: 10,
            max_spool_bytes: 1 << 20,
        }
    }

    #[test]
    fn a_client_may_write_the_databases_and_measurements_its_globs_match() {
        let c = client("a", TOKEN);
        assert!(c.may_write_database("k6"));
        assert!(c.may_write_database("jmeter_"));
        assert!(c.may_write_database("jmeter_team1"));
        assert!(!c.may_write_database("k6x"));
        assert!(!c.may_write_database("xk6"));
        assert!(!c.may_write_database("jmeter"));
        assert!(c.may_write_measurement("http_req_duration"));
        let none = Client {
            databases: Vec::new(),
            measurements: vec!["http_*".into()],
            ..client("b", TOKEN)
        };
        assert!(!none.may_write_database("k6"));
        assert!(none.may_write_measurement("http_reqs"));
        assert!(!none.may_write_measurement("vus"));
    }

    fn check(header: Option<&str>) -> Result<Option<usize>, Denied> {
        Tokens::new(&[client("a", TOKEN), client("b", "another-token-0123456789")])
            .check(header.map(str::as_bytes))
    }

    #[test]
    fn bearer_and_basic_are_accepted() {
        assert_eq!(check(Some(&format!("Bearer {TOKEN}"))), Ok(Some(0)));
        assert_eq!(check(Some(&format!("bearer   {TOKEN} "))), Ok(Some(0)));
        assert_eq!(
            check(Some(&basic_credentials("locust", TOKEN))),
            Ok(Some(0))
        );
        assert_eq!(check(Some(&basic_credentials("", TOKEN))), Ok(Some(0)));
        assert_eq!(
            check(Some(&basic_credentials("", "another-token-0123456789"))),
            Ok(Some(1))
        );
    }

    #[test]
    fn everything_else_is_refused() {
        assert_eq!(check(None), Err(Denied::Missing));
        assert_eq!(check(Some("Bearer nope")), Err(Denied::WrongToken));
        assert_eq!(
            check(Some(&format!("Bearer {TOKEN}x"))),
            Err(Denied::WrongToken)
        );
        assert_eq!(
            check(Some(&format!("Bearer {}", &TOKEN[..10]))),
            Err(Denied::WrongToken)
        );
        assert_eq!(check(Some("Bearer ")), Err(Denied::Malformed));
        assert_eq!(check(Some(TOKEN)), Err(Denied::Malformed));
        assert_eq!(check(Some("Basic !!!")), Err(Denied::Malformed));
        assert_eq!(
            check(Some(&format!("Basic {}", base64_encode(TOKEN.as_bytes())))),
            Err(Denied::Malformed)
        );
        assert_eq!(
            check(Some(&basic_credentials(TOKEN, ""))),
            Err(Denied::WrongToken)
        );
        assert_eq!(
            check(Some(&format!("Digest {TOKEN}"))),
            Err(Denied::Malformed)
        );
        assert!(Tokens::new(&[]).check(None).is_ok(), "no tokens: open");
        assert!(Tokens::new(&[]).is_open());
    }

    #[test]
    fn failed_checks_are_limited_per_address_and_given_back_over_the_window() {
        let checks = FailedChecks::new(3, Duration::from_secs(6));
        let t0 = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(!checks.failed(a, t0));
        assert!(!checks.failed(a, t0));
        assert_eq!(checks.check(a, t0), Ok(()));
        assert!(
            checks.failed(a, t0),
            "the third failure spends the last one"
        );
        let wait = checks.check(a, t0).unwrap_err();
        assert!(
            wait > Duration::from_millis(1900) && wait <= Duration::from_secs(2),
            "{wait:?}"
        );
        assert_eq!(retry_after_secs(wait), 2);
        assert_eq!(
            checks.check("192.0.2.2".parse().unwrap(), t0),
            Ok(()),
            "another address"
        );
        assert_eq!(
            checks.check(a, t0 + Duration::from_secs(2)),
            Ok(()),
            "one given back"
        );
        // One /64 is one client.
        let v6: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        for _ in 0..3 {
            checks.failed(v6, t0);
        }
        assert!(
            checks
                .check("2001:db8:1:2:ffff::9".parse().unwrap(), t0)
                .is_err()
        );
        assert!(checks.check("2001:db8:1:3::1".parse().unwrap(), t0).is_ok());
        assert_eq!(
            address_key("::ffff:192.0.2.1".parse().unwrap()),
            a,
            "an IPv4-mapped address is the IPv4 one"
        );
    }

    #[test]
    fn a_flood_from_many_addresses_never_lets_an_address_held_back_go() {
        let checks = FailedChecks::new(2, Duration::from_secs(600));
        let t0 = Instant::now();
        let held: IpAddr = "192.0.2.1".parse().unwrap();
        checks.failed(held, t0);
        checks.failed(held, t0);
        assert!(checks.check(held, t0).is_err());
        for n in 0..(MAX_ADDRESSES as u32 + 10) {
            let other = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + n));
            checks.failed(other, t0);
        }
        assert!(checks.check(held, t0).is_err(), "still held back");
    }

    #[test]
    fn a_client_request_rate_allows_one_seconds_burst() {
        let mut limited = client("a", TOKEN);
        limited.requests_per_second = 2.0;
        let rate = RequestRate::new(&[limited, client("b", "another-token-0123456789")]);
        let t0 = Instant::now();
        assert_eq!(rate.take(0, t0), Ok(()));
        assert_eq!(rate.take(0, t0), Ok(()));
        let wait = rate.take(0, t0).unwrap_err();
        assert!(wait <= Duration::from_millis(500), "{wait:?}");
        assert_eq!(rate.take(0, t0 + Duration::from_millis(500)), Ok(()));
        for _ in 0..100 {
            assert_eq!(rate.take(1, t0), Ok(()), "no limit for b");
        }
    }

    #[test]
    fn a_client_shows_its_name_never_its_token() {
        let shown = format!("{:?}", client("team-a", TOKEN));
        assert!(
            shown.contains("team-a") && !shown.contains(TOKEN),
            "{shown}"
        );
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_encode(plain.as_bytes()), encoded);
            assert_eq!(base64_decode(encoded).unwrap(), plain.as_bytes());
            assert_eq!(
                base64_decode(encoded.trim_end_matches('=')).unwrap(),
                plain.as_bytes()
            );
        }
        assert_eq!(base64_decode("Z"), None);
        assert_eq!(base64_decode("Zm9v!"), None);
    }

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(constant_time_eq(b"", b""));
    }

    proptest::proptest! {
        #[test]
        fn base64_round_trips(data: Vec<u8>) {
            proptest::prop_assert_eq!(base64_decode(&base64_encode(&data)).unwrap(), data);
        }

        #[test]
        fn any_header_is_answered_without_panic(header: Vec<u8>) {
            let _ = Tokens::new(&[client("a", TOKEN)]).check(Some(&header));
        }
    }
}
