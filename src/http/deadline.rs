//! Deadlines: the time left before one (`remaining`), the I/O errors that only mean a
//! wait ran out and may be retried (`is_retryable`), writing a whole buffer before one
//! (`write_all_before`), and `Armed`, which keeps the socket timeout in force no longer
//! than the time a wait asks for while sparing a `setsockopt` call on most waits.
//!
//! Every wait of the layer is bounded by an absolute deadline; a socket timeout is only
//! the slice of it that one read or write may take, and `SHUTDOWN_POLL` caps that slice
//! wherever a wait must notice shutdown. Nothing here may wait past the deadline it is
//! given or leave a socket timeout longer than the one asked for, and nothing here
//! decides anything about requests or responses.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant};

use super::transport::Transport;

/// How often a connection waiting for its next request checks for shutdown.
pub(super) const SHUTDOWN_POLL: Duration = Duration::from_millis(200);

/// A transport that changes a socket timeout only when it must: when the one asked for is
/// shorter than the one in force, or more than twice as long. Every wait stays bounded by its
/// deadline, because the timeout in force is then never longer than the one asked for and
/// callers check their deadline again after a timeout; and a connection serving one request
/// after another makes no `setsockopt` calls at all, where it made four per request.
pub(super) struct Armed<'a, S> {
    inner: &'a mut S,
    read: std::cell::Cell<Option<Duration>>,
    write: std::cell::Cell<Option<Duration>>,
}

impl<'a, S> Armed<'a, S> {
    /// Wraps `inner`, whose timeouts in force are not known yet.
    pub(super) fn new(inner: &'a mut S) -> Armed<'a, S> {
        Armed {
            inner,
            read: std::cell::Cell::new(None),
            write: std::cell::Cell::new(None),
        }
    }

    fn arm(
        in_force: &std::cell::Cell<Option<Duration>>,
        asked: Option<Duration>,
        set: impl FnOnce(Option<Duration>) -> io::Result<()>,
    ) -> io::Result<()> {
        if let (Some(now), Some(asked)) = (in_force.get(), asked)
            && asked >= now
            && asked <= now.saturating_mul(2)
        {
            return Ok(());
        }
        // Unknown after a failure: set again next time.
        in_force.set(None);
        set(asked)?;
        in_force.set(asked);
        Ok(())
    }
}

impl<S: Read> Read for Armed<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
}

impl<S: Write> Write for Armed<'_, S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<S: Transport> Transport for Armed<'_, S> {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        Self::arm(&self.read, timeout, |t| self.inner.set_read_timeout(t))
    }
    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        Self::arm(&self.write, timeout, |t| self.inner.set_write_timeout(t))
    }
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.peer_addr()
    }
    fn shutdown(&mut self, how: Shutdown) -> io::Result<()> {
        self.inner.shutdown(how)
    }
    fn flush_step(&mut self) -> io::Result<bool> {
        self.inner.flush_step()
    }
}

/// Writes all of `buf` before `deadline`, however slowly the client reads.
pub(super) fn write_all_before<S: Transport>(
    stream: &mut S,
    mut buf: &[u8],
    deadline: Instant,
) -> io::Result<()> {
    while !buf.is_empty() {
        let Some(left) = remaining(deadline) else {
            return Err(io::ErrorKind::TimedOut.into());
        };
        stream.set_write_timeout(Some(left))?;
        match stream.write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = buf.get(n..).unwrap_or_default(),
            Err(e) if is_retryable(&e) => {}
            Err(e) => return Err(e),
        }
    }
    // A TLS stream may need several socket writes to hand its records over, and each
    // is bounded by the same deadline. For a TcpStream this is one call that does
    // nothing.
    loop {
        let Some(left) = remaining(deadline) else {
            return Err(io::ErrorKind::TimedOut.into());
        };
        stream.set_write_timeout(Some(left))?;
        match stream.flush() {
            Ok(()) => return Ok(()),
            Err(e) if is_retryable(&e) => {}
            Err(e) => return Err(e),
        }
    }
}

/// Writes all of `buf` before `deadline`, as `write_all_before` does, but in slices of at most
/// `SHUTDOWN_POLL`, calling `took` each time the peer took bytes (over TLS, each time the
/// socket took records the stream held: see `Transport::flush_step`); when `took` returns false
/// (the connection was evicted) the write stops with `ConnectionAborted`. Returns the longest
/// the peer went without taking a byte.
pub(super) fn write_all_watched<S: Transport>(
    stream: &mut S,
    mut buf: &[u8],
    deadline: Instant,
    took: &dyn Fn() -> bool,
) -> io::Result<Duration> {
    let mut since = Instant::now();
    let mut longest = Duration::ZERO;
    let progress = |since: &mut Instant, longest: &mut Duration| {
        *longest = (*longest).max(since.elapsed());
        *since = Instant::now();
        if took() {
            Ok(())
        } else {
            Err(io::Error::from(io::ErrorKind::ConnectionAborted))
        }
    };
    while !buf.is_empty() {
        let Some(left) = remaining(deadline) else {
            return Err(io::ErrorKind::TimedOut.into());
        };
        stream.set_write_timeout(Some(left.min(SHUTDOWN_POLL)))?;
        match stream.write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                buf = buf.get(n..).unwrap_or_default();
                progress(&mut since, &mut longest)?;
            }
            Err(e) if is_retryable(&e) => {}
            Err(e) => return Err(e),
        }
    }
    // The records a TLS stream still holds (nothing, for a TcpStream), each step the client
    // takes of them told.
    loop {
        let Some(left) = remaining(deadline) else {
            return Err(io::ErrorKind::TimedOut.into());
        };
        stream.set_write_timeout(Some(left.min(SHUTDOWN_POLL)))?;
        match stream.flush_step() {
            Ok(done) => {
                progress(&mut since, &mut longest)?;
                if done {
                    return Ok(longest);
                }
            }
            Err(e) if is_retryable(&e) => {}
            Err(e) => return Err(e),
        }
    }
}

/// Time left before `deadline`, or `None` once it has passed.
pub(super) fn remaining(deadline: Instant) -> Option<Duration> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|left| !left.is_zero())
}

/// Errors after which the operation is simply retried (the caller's deadline decides
/// when to stop): a timeout of one read or write, or an interrupted system call.
pub(super) fn is_retryable(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records the socket timeouts it is given.
    #[derive(Default)]
    struct Recorder {
        set: std::cell::RefCell<Vec<Option<Duration>>>,
    }

    impl Read for Recorder {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Ok(0)
        }
    }

    impl Write for Recorder {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Transport for Recorder {
        fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
            self.set.borrow_mut().push(timeout);
            Ok(())
        }
        fn set_write_timeout(&self, _: Option<Duration>) -> io::Result<()> {
            Ok(())
        }
        fn peer_addr(&self) -> io::Result<SocketAddr> {
            Ok(SocketAddr::from(([127, 0, 0, 1], 1)))
        }
        fn shutdown(&mut self, _: Shutdown) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_socket_timeout_is_set_when_it_must_be_and_never_longer_than_asked() {
        let mut recorder = Recorder::default();
        let armed = Armed {
            inner: &mut recorder,
            read: std::cell::Cell::new(None),
            write: std::cell::Cell::new(None),
        };
        let ms = Duration::from_millis;
        for asked in [200, 200, 150, 150, 300, 301, 600, 10, 10] {
            armed.set_read_timeout(Some(ms(asked))).unwrap();
            let in_force = armed.read.get().unwrap();
            assert!(
                in_force <= ms(asked),
                "{in_force:?} in force, {asked} ms asked"
            );
        }
        armed.set_read_timeout(None).unwrap();
        let set: Vec<Option<Duration>> = recorder.set.into_inner();
        assert_eq!(
            set,
            [
                Some(ms(200)),
                Some(ms(150)),
                Some(ms(301)),
                Some(ms(10)),
                None
            ],
            "200 first; 150 is shorter; 300 is within twice 150; 301 is not; 600 is within twice \
             301; 10 is shorter; 10 again is kept; no timeout at all is always set"
        );
    }

    /// A stream that holds what it is given, as a TLS stream holds records, and hands it to
    /// the socket in `steps` steps, each after a step in which the socket took nothing.
    struct Holding {
        steps: usize,
        idle: bool,
    }

    impl Read for Holding {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Ok(0)
        }
    }

    impl Write for Holding {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            unreachable!("written step by step")
        }
    }

    impl Transport for Holding {
        fn set_read_timeout(&self, _: Option<Duration>) -> io::Result<()> {
            Ok(())
        }
        fn set_write_timeout(&self, _: Option<Duration>) -> io::Result<()> {
            Ok(())
        }
        fn peer_addr(&self) -> io::Result<SocketAddr> {
            Ok(SocketAddr::from(([127, 0, 0, 1], 1)))
        }
        fn shutdown(&mut self, _: Shutdown) -> io::Result<()> {
            Ok(())
        }
        fn flush_step(&mut self) -> io::Result<bool> {
            self.idle = !self.idle;
            if self.idle {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.steps -= 1;
            Ok(self.steps == 0)
        }
    }

    /// Each step in which the socket takes what the stream held is told as progress, and only
    /// those: a client reading a TLS answer slowly is seen taking it, step by step.
    #[test]
    fn every_step_of_a_held_answer_the_client_takes_is_told() {
        let mut stream = Holding {
            steps: 3,
            idle: false,
        };
        let told = std::cell::Cell::new(0);
        let deadline = Instant::now() + Duration::from_secs(60);
        let took = || {
            told.set(told.get() + 1);
            true
        };
        write_all_watched(&mut stream, b"answer", deadline, &took).expect("written");
        assert_eq!(told.get(), 1 + 3, "the write, then each of the three steps");
        // One evicted between two steps stops there.
        let mut stream = Holding {
            steps: 3,
            idle: false,
        };
        let steps = std::cell::Cell::new(0);
        let evicted_after_two = || {
            steps.set(steps.get() + 1);
            steps.get() < 3
        };
        let stopped = write_all_watched(&mut stream, b"answer", deadline, &evicted_after_two);
        assert_eq!(
            stopped.map_err(|e| e.kind()),
            Err(io::ErrorKind::ConnectionAborted)
        );
        assert_eq!(stream.steps, 1, "the last step not taken");
    }
}
