//! Client authentication: who may use the routes that change or show anything.
//!
//! A client presents a token as `Authorization: Bearer T`, or as HTTP Basic credentials with T
//! as the password and any user name (so a client that can only put credentials in a URL,
//! `http://locust:T@host:3000`, or curl's `-u :T`, works too). Tokens are compared in constant
//! time, against every configured token, so neither the answer time nor the order of the list
//! says how much of a guess was right.
//!
//! This module never logs, stores or echoes what a client sent; it only answers yes or no.
//! It also holds the base64 code both directions of HTTP Basic need.

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

pub struct Tokens {
    tokens: Vec<Vec<u8>>,
}

impl Tokens {
    pub fn new(tokens: &[String]) -> Tokens {
        Tokens {
            tokens: tokens.iter().map(|t| t.as_bytes().to_vec()).collect(),
        }
    }

    /// No tokens configured: every request is let in.
    pub fn is_open(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Checks the value of an `Authorization` header (or its absence).
    pub fn check(&self, authorization: Option<&[u8]>) -> Result<(), Denied> {
        if self.is_open() {
            return Ok(());
        }
        let presented = presented_token(authorization.ok_or(Denied::Missing)?)?;
        // Every token is compared, whatever the outcome of the others.
        let mut found = false;
        for token in &self.tokens {
            found |= constant_time_eq(token, &presented);
        }
        if found {
            Ok(())
        } else {
            Err(Denied::WrongToken)
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
    if scheme.eq_ignore_ascii_case("bearer") {
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

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// `Basic` credentials for a request to another server (InfluxDB v1).
pub fn basic_credentials(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64_encode(format!("{user}:{password}").as_bytes())
    )
}

/// Standard base64 with padding (RFC 4648 §4).
pub fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64; padding is optional. `None` for anything else.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.trim_end_matches('=').as_bytes();
    if bytes.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            let v = ALPHABET.iter().position(|&a| a == c)? as u32;
            n |= v << (18 - 6 * i);
        }
        let produced = chunk.len() - 1;
        for i in 0..produced {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdef0123";

    fn check(header: Option<&str>) -> Result<(), Denied> {
        Tokens::new(&[TOKEN.into(), "another-token-0123456789".into()])
            .check(header.map(str::as_bytes))
    }

    #[test]
    fn bearer_and_basic_are_accepted() {
        assert_eq!(check(Some(&format!("Bearer {TOKEN}"))), Ok(()));
        assert_eq!(check(Some(&format!("bearer   {TOKEN} "))), Ok(()));
        assert_eq!(check(Some(&basic_credentials("locust", TOKEN))), Ok(()));
        assert_eq!(check(Some(&basic_credentials("", TOKEN))), Ok(()));
        assert_eq!(
            check(Some(&basic_credentials("", "another-token-0123456789"))),
            Ok(())
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
            let _ = Tokens::new(&[TOKEN.into()]).check(Some(&header));
        }
    }
}
