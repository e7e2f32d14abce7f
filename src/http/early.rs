//! An answer written for a handler by the thread that settles what the handler waits for.
//!
//! A handler that waits for something another thread settles (the log's writer, for a record
//! on disk; the deliverer, for a record InfluxDB stored) may know its answer before it waits,
//! as long as the wait ends well: a write to the gateway is answered 204 once its record is on
//! disk (or stored by InfluxDB). It arms that answer
//! ([`EarlyAnswer::arm`]) and gives the [`Waiter`] it gets to the settling thread. That thread
//! writes the answer to the socket as soon as the outcome is known, without blocking (what the
//! socket does not take at once is left to the connection's thread), or writes nothing when the
//! outcome is a failure; the handler's thread meanwhile sleeps on the socket itself, and wakes
//! for the client's next request, not once for the outcome and again for the next request.
//! When the handler returns, the connection's thread takes back an answer not yet written
//! ([`EarlyAnswer::finish`]) and writes the handler's own; one that was written is reported
//! as written, and what the handler returned beside it is not sent.
//!
//! Offered only where it cannot change what the client sees: plain TCP (a TLS stream belongs
//! to its thread), a request whose answer keeps the connection, and nothing pipelined behind
//! it (see `conn`). It never decides the answer, the connection's fate or the access log.

use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::net::{SendFlags, send};

use super::Response;
use super::render::{Disposition, render, set_date};
use crate::sync::{Signal, Waiter, lock};

/// The longest the handler's thread first sleeps on its socket at once while it waits: it looks
/// whether its answer was written after each, so that an answer written to a client with
/// nothing more to send lets the handler go on within this long. Each look after the first
/// is twice as long, up to [`LOOK_MAX`]: a wait that lasts (an `"influxdb"` mode request while
/// InfluxDB is slow) wakes a few times, not every 10 ms of it.
const LOOK: Duration = Duration::from_millis(10);

/// The longest look on the socket ([`LOOK`]): an answer written after a long wait lets a
/// handler whose client sends nothing more go on within this long.
const LOOK_MAX: Duration = Duration::from_millis(160);

/// The longest the handler's thread sleeps on the settling thread's signal at once, once its
/// client sent more before the answer (a pipelined request, or a client gone): a bound in
/// case a wake is missed, not a pace.
const SIGNAL_LOOK: Duration = Duration::from_millis(200);

/// An answer the handler may arm before it waits; see the module documentation.
#[derive(Clone)]
pub struct EarlyAnswer {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for EarlyAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EarlyAnswer")
    }
}

struct Shared {
    socket: Arc<TcpStream>,
    /// The request's HTTP version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    version: u8,
    state: Mutex<State>,
    /// Notified when the answer was written, or will not be.
    signal: Signal,
    /// How many times the handler's thread looked at its socket.
    #[cfg(test)]
    looks: std::sync::atomic::AtomicUsize,
}

enum State {
    /// Nothing armed.
    Open,
    /// Armed (when, for its `Date`): written when the outcome is a success.
    Armed(Outgoing, SystemTime),
    /// Written, whole (`rest` empty) or in part, when the outcome was known; the rest is the
    /// connection thread's to write.
    Sent { answer: Outgoing, at: Instant },
    /// Not written, and never will be: the outcome was a failure, or the handler returned
    /// before it was known.
    Dropped,
}

/// An answer on the wire, and what the access log says of it.
pub(super) struct Outgoing {
    /// What is left to write (all of it, until written).
    pub(super) rest: Vec<u8>,
    pub(super) status: u16,
    pub(super) body_bytes: usize,
    /// The answer's `Response::code`.
    pub(super) code: Option<crate::code::Code>,
}

/// What came of an early answer when the handler returned.
pub(super) enum Finished {
    /// Written (what is left of it in `answer.rest`, for the connection's thread to write), at
    /// `at`.
    Sent { answer: Outgoing, at: Instant },
    /// Not written: the handler's own answer goes.
    NotSent,
}

impl EarlyAnswer {
    /// An answer that may be written for a request of HTTP version `version` (0: 1.0, 1: 1.1)
    /// on `socket`, kept alive.
    pub(super) fn new(socket: Arc<TcpStream>, version: u8) -> EarlyAnswer {
        EarlyAnswer {
            shared: Arc::new(Shared {
                socket,
                version,
                state: Mutex::new(State::Open),
                signal: Signal::new(),
                #[cfg(test)]
                looks: std::sync::atomic::AtomicUsize::new(0),
            }),
        }
    }

    /// Arms `response` as the answer to write once what the handler waits for ends well,
    /// framed as the layer frames a handled request that keeps its connection, and gives the
    /// waiter to hand to the thread that settles it. `None` when an answer was armed before:
    /// one a request.
    pub fn arm(&self, response: Response) -> Option<Arc<dyn Waiter>> {
        let disposition = match self.shared.version {
            0 => Disposition::KeepAlive10,
            _ => Disposition::KeepAlive,
        };
        let now = SystemTime::now();
        let rendered = render(&response, disposition, false, now);
        let mut state = lock(&self.shared.state);
        if !matches!(*state, State::Open) {
            return None;
        }
        *state = State::Armed(
            Outgoing {
                rest: rendered.bytes,
                status: rendered.status,
                body_bytes: rendered.body_bytes,
                code: rendered.code,
            },
            now,
        );
        drop(state);
        Some(Arc::clone(&self.shared) as Arc<dyn Waiter>)
    }

    /// How many times the handler's thread looked at its socket while it waited.
    #[cfg(test)]
    pub fn looks(&self) -> usize {
        self.shared.looks.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Whether the armed answer was written (whole or in part): the handler's own answer will
    /// not be sent, and need not be made.
    pub fn is_sent(&self) -> bool {
        matches!(*lock(&self.shared.state), State::Sent { .. })
    }

    /// The handler returned: what became of the answer. One armed and not yet written is taken
    /// back, and will never be written.
    pub(super) fn finish(&self) -> Finished {
        let mut state = lock(&self.shared.state);
        match std::mem::replace(&mut *state, State::Dropped) {
            State::Sent { answer, at } => Finished::Sent { answer, at },
            State::Open | State::Armed(..) | State::Dropped => Finished::NotSent,
        }
    }
}

impl Waiter for Shared {
    /// Writes the armed answer when `ok`, as much of it as the socket takes at once (never
    /// waiting for the client), or drops it.
    fn settled(&self, ok: bool) {
        let mut state = lock(&self.state);
        let State::Armed(mut answer, armed_at) = std::mem::replace(&mut *state, State::Dropped)
        else {
            return;
        };
        if ok {
            // Armed in an earlier second (a wait for InfluxDB): the `Date` says when it goes.
            let now = SystemTime::now();
            if in_a_later_second(armed_at, now) {
                set_date(&mut answer.rest, now);
            }
            // A socket that fails here fails the connection thread's write of the rest too.
            let flags = SendFlags::DONTWAIT | SendFlags::NOSIGNAL;
            let taken = send(&*self.socket, &answer.rest, flags).unwrap_or(0);
            answer.rest.drain(..taken.min(answer.rest.len()));
            *state = State::Sent {
                answer,
                at: Instant::now(),
            };
        }
        drop(state);
        self.signal.notify_all();
    }

    /// Drops the armed answer: the handler's own goes.
    fn untold(&self) {
        let mut state = lock(&self.state);
        if matches!(*state, State::Armed(..)) {
            *state = State::Dropped;
        }
        drop(state);
        self.signal.notify_all();
    }

    /// Sleeps on the socket until the client sends more (its next request, once it has the
    /// answer) or a look ([`LOOK`], growing to [`LOOK_MAX`]) passes, as long as the answer is
    /// armed and `deadline` has not passed; on the signal once the client sent more before the
    /// answer was written.
    fn wait(&self, deadline: Option<Instant>) {
        let mut client_sent = false;
        let mut look = LOOK;
        let mut state = lock(&self.state);
        while matches!(*state, State::Armed(..)) {
            let left = match deadline {
                None => Duration::MAX,
                Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => left,
                    _ => return,
                },
            };
            if client_sent {
                state =
                    crate::sync::unpoisoned(self.signal.wait_timeout(state, SIGNAL_LOOK.min(left)))
                        .0;
                continue;
            }
            drop(state);
            #[cfg(test)]
            self.looks.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            client_sent = readable(&self.socket, look.min(left));
            look = (look * 2).min(LOOK_MAX);
            state = lock(&self.state);
        }
    }
}

/// Whether `socket` has something to read (bytes, the client's end, or an error) within
/// `limit`, or could not be looked at (then the caller waits on its signal instead); false
/// when nothing came, or a signal cut the look short.
fn readable(socket: &TcpStream, limit: Duration) -> bool {
    let mut fds = [PollFd::new(socket, PollFlags::IN)];
    let timeout = Timespec {
        tv_sec: limit.as_secs() as i64,
        tv_nsec: i64::from(limit.subsec_nanos()),
    };
    match poll(&mut fds, Some(&timeout)) {
        Ok(n) => n > 0,
        Err(rustix::io::Errno::INTR) => false,
        Err(_) => true,
    }
}

/// Whether `now` is in a later second (of the Unix time) than `armed_at`: the `Date` an answer
/// armed then was rendered with no longer says when it goes. Not for a clock that went back.
fn in_a_later_second(armed_at: SystemTime, now: SystemTime) -> bool {
    let second = |t: SystemTime| t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).ok();
    matches!((second(armed_at), second(now)), (Some(armed), Some(now)) if now > armed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An answer armed at .9 s and sent at 1.1 s goes in a later second (its `Date` is set
    /// again) though less than a second passed; one sent later within its second does not.
    #[test]
    fn a_later_second_is_one_the_clock_s_second_moved_on_to() {
        let at = |ms: u64| UNIX_EPOCH + Duration::from_millis(1_700_000_000_000 + ms);
        assert!(in_a_later_second(at(900), at(1_100)));
        assert!(in_a_later_second(at(0), at(1_000)));
        assert!(!in_a_later_second(at(0), at(999)));
        assert!(
            !in_a_later_second(at(1_100), at(900)),
            "a clock that went back"
        );
    }
}
