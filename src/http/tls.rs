//! HTTPS: loading the certificate chain and private key into a rustls server
//! configuration, and `TlsStream`, the encrypted stream that a connection thread serves
//! HTTP over once the handshake is done.
//!
//! `TlsStream` does at most one socket read or one socket write per call and reports
//! "not yet" as `WouldBlock`, exactly like a socket whose timeout expired. That keeps the
//! deadlines of the connection thread (`deadline.rs`) in charge of every wait: a client
//! that trickles a TLS record in byte by byte gets no more time than one that trickles a
//! plain request. This module
//! must never log or put into an error message anything a client sent, nor any byte of a
//! key file; and it never sets a process-wide default crypto provider.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection};

/// The only application protocol offered: the HTTP layer speaks HTTP/1.1 and nothing else.
const ALPN_HTTP_1_1: &[u8] = b"http/1.1";

/// Which of the two PEM files a [`LoadError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PemFile {
    /// The certificate chain, `server.tls_cert`.
    Certificate,
    /// The private key, `server.tls_key`.
    Key,
}

impl PemFile {
    /// The configuration key naming the file.
    pub fn key(self) -> &'static str {
        match self {
            PemFile::Certificate => "server.tls_cert",
            PemFile::Key => "server.tls_key",
        }
    }
}

/// Why the certificate and key do not load: the file, and what is wrong with it in words
/// (never a byte of it).
#[derive(Debug, Clone)]
pub struct LoadError {
    pub file: PemFile,
    /// The file's path, as loaded.
    pub path: PathBuf,
    pub problem: String,
}

/// `server.tls_key: /etc/key.pem: the private key cannot be used …`
impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (key, path, problem) = (self.file.key(), self.path.display(), &self.problem);
        write!(f, "{key}: {path}: {problem}")
    }
}

/// Reads the PEM certificate chain `cert` and the PEM private key `key` and builds the
/// server configuration. Every error names the file (and so its configuration key), and
/// says what is wrong in words rather than quoting the file.
pub fn load(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, LoadError> {
    let cert_err = |what: &str| LoadError {
        file: PemFile::Certificate,
        path: cert.to_path_buf(),
        problem: what.to_owned(),
    };
    let key_err = |what: &str| LoadError {
        file: PemFile::Key,
        path: key.to_path_buf(),
        problem: what.to_owned(),
    };

    let no_cert = "no certificate found in the PEM file";
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|sections| sections.collect::<Result<Vec<_>, _>>())
        .map_err(|e| cert_err(&pem_problem(&e, no_cert)))?;
    if chain.is_empty() {
        return Err(cert_err(no_cert));
    }
    let no_key = "no private key found in the PEM file (an unencrypted PKCS#8, PKCS#1 or SEC1 \
                  key is needed)";
    let private_key =
        PrivateKeyDer::from_pem_file(key).map_err(|e| key_err(&pem_problem(&e, no_key)))?;

    // An explicit provider, so that nothing depends on which provider some other part
    // of the process may have installed as the default.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // `with_single_cert` reports an unusable key and a bad certificate alike; loading
    // the key on its own first tells them apart, so the message names the right file.
    provider
        .key_provider
        .load_private_key(private_key.clone_key())
        .map_err(|_| {
            key_err("the private key cannot be used (an RSA, ECDSA or Ed25519 key is needed)")
        })?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| cert_err(&format!("cannot set up TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => key_err(&format!(
                "the private key does not match the certificate in {}",
                cert.display()
            )),
            rustls::Error::InvalidCertificate(_) => {
                cert_err("the first certificate in the PEM file is not a valid X.509 certificate")
            }
            other => key_err(&format!(
                "cannot be used with the certificate in {}: {other}",
                cert.display()
            )),
        })?;
    config.alpn_protocols = vec![ALPN_HTTP_1_1.to_vec()];
    Ok(Arc::new(config))
}

/// What is wrong with a PEM file, in words; `nothing_found` is the message for a file
/// without the item looked for. The parser's own messages can quote lines of the file,
/// and a key file must never be quoted, so they are not passed on.
fn pem_problem(e: &pem::Error, nothing_found: &str) -> String {
    match e {
        pem::Error::Io(e) => format!("cannot read the file: {e}"),
        pem::Error::NoItemsFound => nothing_found.to_owned(),
        pem::Error::MissingSectionEnd { .. } => {
            "not a valid PEM file: a section has no END line".to_owned()
        }
        pem::Error::IllegalSectionStart { .. } => {
            "not a valid PEM file: a BEGIN line is malformed".to_owned()
        }
        pem::Error::Base64Decode(_) => "not a valid PEM file: a section is not base64".to_owned(),
        _ => "not a valid PEM file".to_owned(),
    }
}

/// Why a handshake failed, in fixed words for the debug log. rustls's own messages can
/// carry values the client chose, so they are classified rather than passed on.
pub fn describe_failure(e: &io::Error) -> &'static str {
    let tls_error = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    if let Some(tls_error) = tls_error {
        return match tls_error {
            rustls::Error::InvalidMessage(_)
            | rustls::Error::InappropriateMessage { .. }
            | rustls::Error::InappropriateHandshakeMessage { .. } => {
                "the client did not send a valid TLS handshake (plain HTTP on the HTTPS port?)"
            }
            rustls::Error::PeerIncompatible(_) | rustls::Error::NoApplicationProtocol => {
                "the client has no TLS version, cipher suite or protocol (http/1.1) in common \
                 with the server"
            }
            rustls::Error::AlertReceived(_) => {
                "the client aborted the handshake (does it trust the certificate?)"
            }
            _ => "the handshake failed",
        };
    }
    match e.kind() {
        io::ErrorKind::TimedOut => "no complete handshake within server.header_timeout",
        io::ErrorKind::UnexpectedEof
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => "the client closed the connection",
        _ => "network error",
    }
}

/// A server-side TLS connection over a TCP socket.
pub struct TlsStream {
    conn: ServerConnection,
    /// Shared with whoever may need to shut it down from another thread (the server's
    /// connection table, on eviction).
    sock: Arc<TcpStream>,
}

impl TlsStream {
    /// Starts a server connection over `sock`. No I/O happens here.
    pub fn new(
        config: Arc<ServerConfig>,
        sock: impl Into<Arc<TcpStream>>,
    ) -> Result<TlsStream, rustls::Error> {
        Ok(TlsStream {
            conn: ServerConnection::new(config)?,
            sock: sock.into(),
        })
    }

    /// The TCP socket underneath, for timeouts, the peer address and shutdown.
    pub fn socket(&self) -> &TcpStream {
        &self.sock
    }

    /// One step of the handshake: one socket write if handshake records are waiting to
    /// go out, else one socket read. True once the handshake is complete and everything
    /// the server had to send for it has been handed to the socket. The caller repeats
    /// it under its deadline; socket timeouts come back as `WouldBlock`/`TimedOut`.
    pub fn handshake_step(&mut self) -> io::Result<bool> {
        if self.conn.wants_write() {
            self.send_some()?;
        } else if self.conn.is_handshaking() && self.receive_some()? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(!self.conn.is_handshaking() && !self.conn.wants_write())
    }

    /// Queues `close_notify` and makes one attempt to send it. The alert is one small
    /// record sent after the last response was flushed, so one write either carries it
    /// or shows that the client is not reading, and then it does not matter.
    pub fn send_close_notify(&mut self) {
        self.conn.send_close_notify();
        let _ = self.conn.write_tls(&mut &*self.sock);
    }

    /// One socket write of queued records: `Ok(true)` when none are left queued, `Ok(false)`
    /// when the socket took some and more are (see `Transport::flush_step`).
    pub(super) fn flush_step(&mut self) -> io::Result<bool> {
        if self.conn.wants_write() {
            self.send_some()?;
            if self.conn.wants_write() {
                return Ok(false);
            }
        }
        (&*self.sock).flush().map(|()| true)
    }

    /// One socket write of queued records.
    fn send_some(&mut self) -> io::Result<()> {
        match self.conn.write_tls(&mut &*self.sock)? {
            0 => Err(io::ErrorKind::WriteZero.into()),
            _ => Ok(()),
        }
    }

    /// One socket read, then decryption of whatever complete records arrived. Returns
    /// the number of bytes read from the socket (0 at end of stream).
    fn receive_some(&mut self) -> io::Result<usize> {
        let n = self.conn.read_tls(&mut &*self.sock)?;
        if let Err(e) = self.conn.process_new_packets() {
            // rustls has queued an alert telling the client what went wrong; one
            // attempt to send it, since the connection is closed next anyway.
            let _ = self.conn.write_tls(&mut &*self.sock);
            return Err(io::Error::new(io::ErrorKind::InvalidData, e));
        }
        Ok(n)
    }
}

impl Read for TlsStream {
    /// Returns decrypted bytes when there are any, else does one socket read. When that
    /// read brought only part of a record, this returns `WouldBlock`: the caller checks
    /// its deadline and calls again. `Ok(0)` means the client sent `close_notify`; a
    /// client that just closed the socket gives `UnexpectedEof`.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.conn.reader().read(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            done => return done,
        }
        self.receive_some()?;
        self.conn.reader().read(buf)
    }
}

impl Write for TlsStream {
    /// Encrypts as much of `buf` as rustls will buffer (64 KiB of records at most). When
    /// that buffer is full, one socket write makes room and this returns `WouldBlock` if
    /// there is still none, so a client that reads slowly cannot stretch a response past
    /// the caller's deadline.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let accepted = self.conn.writer().write(buf)?;
        if accepted > 0 || buf.is_empty() {
            return Ok(accepted);
        }
        self.send_some()?;
        match self.conn.writer().write(buf)? {
            0 => Err(io::ErrorKind::WouldBlock.into()),
            accepted => Ok(accepted),
        }
    }

    /// Hands queued records to the socket, one socket write per call; `WouldBlock`
    /// means some are still queued and the caller should call again before its deadline.
    fn flush(&mut self) -> io::Result<()> {
        match self.flush_step()? {
            true => Ok(()),
            false => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

/// Helpers for the unit tests of this module and of the server.
#[cfg(test)]
pub mod testing {
    use std::path::PathBuf;
    use std::process::Command;

    /// A directory for one test (`tempfile`'s), removed at the end.
    pub struct Dir(tempfile::TempDir);

    impl Dir {
        pub fn new(name: &str) -> Dir {
            let dir = tempfile::Builder::new()
                .prefix(&format!("mc-tls-{name}-"))
                .tempdir()
                .expect("create the test directory");
            Dir(dir)
        }

        pub fn join(&self, name: &str) -> PathBuf {
            self.0.path().join(name)
        }

        /// A self-signed certificate `NAME.crt` for localhost and its key `NAME.key`,
        /// made with the openssl command (an EC key: much faster to make than RSA).
        pub fn self_signed(&self, name: &str) -> (PathBuf, PathBuf) {
            let (cert, key) = (
                self.join(&format!("{name}.crt")),
                self.join(&format!("{name}.key")),
            );
            let status = Command::new("openssl")
                .args(["req", "-x509", "-newkey", "ec"])
                .args([
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                    "-nodes",
                    "-days",
                    "2",
                ])
                .args(["-subj", "/CN=localhost"])
                .args(["-addext", "subjectAltName=DNS:localhost"])
                // rustls clients refuse a CA certificate as a server's own.
                .args(["-addext", "basicConstraints=critical,CA:FALSE"])
                .arg("-keyout")
                .arg(&key)
                .arg("-out")
                .arg(&cert)
                .output()
                .unwrap_or_else(|e| {
                    panic!(
                        "cannot run openssl ({e}): install Debian's `openssl` package \
                         (apt-get install openssl) or run scripts/test.sh"
                    )
                });
            assert!(
                status.status.success(),
                "openssl failed: {}",
                String::from_utf8_lossy(&status.stderr)
            );
            (cert, key)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::Dir;
    use super::*;
    use std::fs;

    fn load_err(cert: &Path, key: &Path) -> LoadError {
        match load(cert, key) {
            Ok(_) => panic!("{} and {} should be refused", cert.display(), key.display()),
            Err(e) => e,
        }
    }

    #[test]
    fn a_matching_pair_loads_and_offers_only_http_1_1() {
        let dir = Dir::new("ok");
        let (cert, key) = dir.self_signed("server");
        let config = load(&cert, &key).expect("a matching pair loads");
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }

    #[test]
    fn load_errors_name_the_key_and_the_file() {
        let dir = Dir::new("errors");
        let (cert, key) = dir.self_signed("server");
        let (other_cert, _) = dir.self_signed("other");
        let missing = dir.join("missing.pem");
        let garbage = dir.join("garbage.pem");
        fs::write(&garbage, "this is not PEM\n").expect("write");
        let bad_base64 = dir.join("bad-base64.pem");
        fs::write(
            &bad_base64,
            "-----BEGIN CERTIFICATE-----\n!!!not base64!!!\n-----END CERTIFICATE-----\n",
        )
        .expect("write");
        let not_x509 = dir.join("not-x509.pem");
        fs::write(
            &not_x509,
            "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n",
        )
        .expect("write");

        let cases = [
            (
                &missing,
                &key,
                PemFile::Certificate,
                &missing,
                "cannot read the file",
            ),
            (
                &garbage,
                &key,
                PemFile::Certificate,
                &garbage,
                "no certificate found in the PEM file",
            ),
            (
                &bad_base64,
                &key,
                PemFile::Certificate,
                &bad_base64,
                "not a valid PEM file",
            ),
            (
                &not_x509,
                &key,
                PemFile::Certificate,
                &not_x509,
                "not a valid X.509 certificate",
            ),
            (
                &cert,
                &missing,
                PemFile::Key,
                &missing,
                "cannot read the file",
            ),
            (
                &cert,
                &garbage,
                PemFile::Key,
                &garbage,
                "no private key found",
            ),
            // A certificate is not a key.
            (&cert, &cert, PemFile::Key, &cert, "no private key found"),
            (
                &other_cert,
                &key,
                PemFile::Key,
                &key,
                "does not match the certificate",
            ),
        ];
        for (cert, key, file, path, what) in cases {
            let err = load_err(cert, key);
            assert_eq!(err.file, file, "{err}");
            assert_eq!(&err.path, path, "{err}");
            assert!(err.problem.contains(what), "{err:?} should say {what:?}");
        }
    }

    #[test]
    fn key_errors_never_quote_the_key_file() {
        let dir = Dir::new("quote");
        let (cert, _) = dir.self_signed("server");
        let broken = dir.join("broken.key");
        fs::write(
            &broken,
            "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1ieXRlcw==\n-----END PRIVATE KEY\n",
        )
        .expect("write");
        let err = load_err(&cert, &broken);
        assert_eq!(err.file, PemFile::Key, "{err}");
        assert_eq!(err.path, broken, "{err}");
        // The message is what reaches the log and the command line: it must not quote the key.
        let message = err.to_string();
        for secret in ["c2VjcmV0", "secret-key", "99, 50"] {
            assert!(!message.contains(secret), "{message:?} quotes the key file");
        }
    }

    #[test]
    fn handshake_failures_are_described_in_fixed_words() {
        let timed_out = io::Error::from(io::ErrorKind::TimedOut);
        assert!(describe_failure(&timed_out).contains("header_timeout"));
        let closed = io::Error::from(io::ErrorKind::UnexpectedEof);
        assert_eq!(
            describe_failure(&closed),
            "the client closed the connection"
        );
        let not_tls = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType),
        );
        assert!(describe_failure(&not_tls).contains("plain HTTP"));
    }
}
