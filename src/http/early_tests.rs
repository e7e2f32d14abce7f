//! Tests of early answers (`early.rs`) over real sockets: a handler arms an answer, another
//! thread settles the wait, and the client must see exactly one answer a request, in order,
//! whoever wrote it.

use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread;

use serde_json::json;

use super::tests::{Client, PATIENCE, limits, wait_until};
use super::{Exchange, Handler, Request, Response, Server, ShutdownHandle};
use crate::code::Code;
use crate::sync::lock;

/// A handler whose `/early/…` requests arm an answer and have another thread settle it.
struct EarlyHandler {
    /// Released by the test: `/early/held` waits for it after its wait ended, so that an answer
    /// the client reads meanwhile can only have come from the settling thread.
    release: Mutex<Receiver<()>>,
    /// (status, path) of every exchange reported.
    log: Mutex<Vec<(u16, String)>>,
    /// `/early/late` tells the test it armed its answer, and waits for the test before its
    /// wait is settled.
    armed: Mutex<Sender<()>>,
    settle_late: Arc<Mutex<Receiver<()>>>,
    /// How many times `/early/slow`'s thread looked at its socket while it waited.
    slow_looks: Mutex<Option<usize>>,
}

/// The answer `/early/…` arms: 204, with a header to tell it from the handler's own.
fn armed() -> Response {
    Response {
        status: 204,
        headers: vec![("X-Answer", "early".into())],
        body: Vec::new(),
        client: Some("tester".into()),
        code: None,
    }
}

impl Handler for EarlyHandler {
    fn handle(&self, req: &Request) -> Response {
        let offered = req.early.is_some();
        let settle = |ok: bool, response: Response| -> Option<()> {
            let waiter = req.early.as_ref()?.arm(response)?;
            let settler = Arc::clone(&waiter);
            thread::spawn(move || settler.settled(ok));
            waiter.wait(None);
            Some(())
        };
        // Arms the answer, has it settled well `after` this long, as a slow InfluxDB settles
        // a record, and waits for it.
        let settle_after = |after: std::time::Duration| {
            let early = req.early.as_ref().expect("an early answer offered");
            let waiter = early.arm(armed()).expect("armed once");
            let settler = Arc::clone(&waiter);
            thread::spawn(move || {
                thread::sleep(after);
                settler.settled(true);
            });
            waiter.wait(None);
            early
        };
        match req.path() {
            "/offered" => Response::json(200, &json!({ "offered": offered })),
            "/early/held" => {
                assert!(settle(true, armed()).is_some(), "an early answer offered");
                lock(&self.release)
                    .recv_timeout(PATIENCE)
                    .expect("released by the test");
                Response::json(500, &json!({"error": "the handler's own, never sent"}))
            }
            "/early/late" => {
                let Some(early) = &req.early else {
                    return Response::json(500, &json!({"error": "no early answer offered"}));
                };
                let waiter = early.arm(armed()).expect("armed once");
                let settler = Arc::clone(&waiter);
                let late = Arc::clone(&self.settle_late);
                thread::spawn(move || {
                    let told = lock(&late).recv_timeout(PATIENCE);
                    settler.settled(told.is_ok());
                });
                lock(&self.armed).send(()).expect("the test listens");
                waiter.wait(None);
                Response::json(500, &json!({"error": "the handler's own, never sent"}))
            }
            "/early/idle" => {
                assert!(settle(true, armed()).is_some(), "an early answer offered");
                Response::json(500, &json!({"error": "the handler's own, never sent"}))
            }
            "/early/slow" => {
                // Settled 1.2 s later.
                let early = settle_after(SLOW);
                *lock(&self.slow_looks) = Some(early.looks());
                Response::json(500, &json!({"error": "the handler's own, never sent"}))
            }
            "/early/slow-next" => {
                // Settled just after a look of the wait began.
                settle_after(SLOW_NEXT);
                Response::json(500, &json!({"error": "the handler's own, never sent"}))
            }
            "/early/deadline" => {
                // Armed, nobody settles it, and the wait ends at its deadline.
                let early = req.early.as_ref().expect("an early answer offered");
                let waiter = early.arm(armed()).expect("armed once");
                waiter.wait(Some(std::time::Instant::now() + DEADLINE));
                Response::json(200, &json!({"answer": "the handler's own"}))
            }
            "/early/unsettled" => {
                // Armed, and nobody settles it: the handler's own answer goes.
                let early = req.early.as_ref().expect("an early answer offered");
                assert!(early.arm(armed()).is_some());
                Response::json(200, &json!({"answer": "the handler's own"}))
            }
            "/early/failed" => {
                assert!(settle(false, armed()).is_some(), "an early answer offered");
                Response::error(Code::StorageError, "the record was not written")
            }
            "/early/large" => {
                let body = (0..16u32 << 20).map(|i| (i % 251) as u8).collect();
                let large = Response {
                    status: 200,
                    headers: vec![("Content-Type", "application/octet-stream".into())],
                    body,
                    client: None,
                    code: None,
                };
                assert!(settle(true, large).is_some(), "an early answer offered");
                Response::json(500, &json!({"error": "the handler's own, never sent"}))
            }
            _ => Response::json(200, &json!({ "path": req.path() })),
        }
    }

    fn completed(&self, exchange: &Exchange<'_>) {
        lock(&self.log).push((exchange.status, exchange.path.to_owned()));
    }
}

struct Running {
    addr: std::net::SocketAddr,
    handle: ShutdownHandle,
    handler: Arc<EarlyHandler>,
    release: Sender<()>,
    armed: Receiver<()>,
    settle_late: Sender<()>,
    thread: Option<thread::JoinHandle<std::io::Result<()>>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.handle.shutdown();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn start() -> Running {
    let server = Server::bind("127.0.0.1:0", limits(), None).expect("bind");
    let (release, released) = channel();
    let (armed_tx, armed) = channel();
    let (settle_late, late) = channel();
    let handler = Arc::new(EarlyHandler {
        release: Mutex::new(released),
        log: Mutex::new(Vec::new()),
        armed: Mutex::new(armed_tx),
        settle_late: Arc::new(Mutex::new(late)),
        slow_looks: Mutex::new(None),
    });
    let addr = server.local_addr();
    let handle = server.handle();
    let for_run: Arc<dyn Handler> = handler.clone();
    let thread = thread::spawn(move || server.run(for_run, PATIENCE));
    Running {
        addr,
        handle,
        handler,
        release,
        armed,
        settle_late,
        thread: Some(thread),
    }
}

fn post(path: &str) -> String {
    format!("POST {path} HTTP/1.1\r\nHost: test\r\nContent-Length: 2\r\n\r\nok")
}

/// The armed answer reaches the client while the handler is still held after its wait: the
/// settling thread wrote it. What the handler returned is not sent, the exchange is reported
/// as the armed answer, and the connection serves its next request with nothing stray before
/// its answer.
#[test]
fn an_armed_answer_is_written_by_the_settling_thread_and_is_the_only_one() {
    let server = start();
    let mut client = Client::connect(server.addr);
    client.send(post("/early/held"));
    let first = client.response();
    assert_eq!(first.status, 204, "{first:?}");
    assert_eq!(first.header("x-answer"), Some("early"));
    assert_eq!(first.header("connection"), None, "kept alive: {first:?}");
    server.release.send(()).expect("release");
    client.send(super::tests::get("/next"));
    let next = client.response();
    assert_eq!(next.status, 200, "{next:?}");
    assert_eq!(next.json()["path"], "/next");
    // An exchange is reported once its answer is written.
    wait_until("both exchanges reported", || {
        lock(&server.handler.log).len() == 2
    });
    let log = lock(&server.handler.log).clone();
    assert_eq!(
        log,
        [(204, "/early/held".to_owned()), (200, "/next".to_owned())]
    );
}

/// A wait that ends badly writes nothing early: the handler's own answer goes.
#[test]
fn a_failed_outcome_sends_the_handler_s_answer_instead() {
    let server = start();
    let mut client = Client::connect(server.addr);
    client.send(post("/early/failed"));
    let answer = client.response();
    assert_eq!(answer.status, 503, "{answer:?}");
    assert_eq!(answer.header("x-answer"), None);
    client.send(super::tests::get("/next"));
    assert_eq!(client.response().status, 200);
}

/// An answer larger than the socket takes at once is written in part by the settling thread,
/// which never waits for the client, and the rest by the connection's thread: the client reads
/// it whole, byte for byte, and the next answer after it.
#[test]
fn what_the_socket_does_not_take_at_once_is_written_by_the_connection_s_thread() {
    let server = start();
    let mut client = Client::connect(server.addr);
    // 16 MiB: more than a loopback socket's buffers take in one send, read as it may be.
    client.send(post("/early/large"));
    let answer = client.response();
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body.len(), 16 << 20);
    assert!(
        answer
            .body
            .iter()
            .enumerate()
            .all(|(i, b)| *b == (i % 251) as u8),
        "the body arrived in order"
    );
    client.send(super::tests::get("/next"));
    assert_eq!(client.response().json()["path"], "/next");
}

/// An early answer is offered only where it cannot change what the client sees: not to a
/// request with another behind it in the buffer, nor to one whose connection closes after it.
#[test]
fn an_early_answer_is_offered_only_to_a_kept_request_with_nothing_behind_it() {
    let server = start();
    let offered = |client: &mut Client| client.response().json()["offered"].clone();
    let mut client = Client::connect(server.addr);
    client.send(super::tests::get("/offered"));
    assert_eq!(offered(&mut client), true, "a lone keep-alive request");
    client.send(format!(
        "{}{}",
        super::tests::get("/offered"),
        super::tests::get("/offered")
    ));
    assert_eq!(offered(&mut client), false, "another request behind it");
    assert_eq!(offered(&mut client), true, "the last of the two");
    client.send("GET /offered HTTP/1.0\r\n\r\n");
    assert_eq!(offered(&mut client), false, "HTTP/1.0 without keep-alive");
    client.expect_eof();
    let mut client = Client::connect(server.addr);
    client.send("GET /offered HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert_eq!(offered(&mut client), false, "Connection: close");
}

/// A client that sends its next request before it has the answer to the one before (it
/// arrives while the handler waits for the outcome) gets both answers, in order.
#[test]
fn a_request_arriving_during_the_wait_is_answered_after_the_early_answer() {
    let server = start();
    let mut client = Client::connect(server.addr);
    client.send(post("/early/late"));
    server.armed.recv_timeout(PATIENCE).expect("armed");
    client.send(super::tests::get("/next"));
    server.settle_late.send(()).expect("settle");
    let first = client.response();
    assert_eq!(
        (first.status, first.header("x-answer")),
        (204, Some("early"))
    );
    let next = client.response();
    assert_eq!(next.json()["path"], "/next");
}

/// A client that sends nothing after its early answer does not keep the handler waiting: the
/// handler goes on within its looks at the socket, and the exchange is reported.
#[test]
fn an_idle_client_after_its_early_answer_lets_the_handler_return() {
    let server = start();
    let mut client = Client::connect(server.addr);
    client.send(post("/early/idle"));
    let answer = client.response();
    assert_eq!(
        (answer.status, answer.header("x-answer")),
        (204, Some("early"))
    );
    // Nothing more is sent: the exchange is reported once the handler returned.
    wait_until("the exchange reported", || {
        lock(&server.handler.log).contains(&(204, "/early/idle".to_owned()))
    });
}

/// How long `/early/slow`'s wait lasts.
const SLOW: std::time::Duration = std::time::Duration::from_millis(1200);

/// How long `/early/slow-next`'s wait lasts: 5 ms into a look of 160 ms (the looks end 10,
/// 30, 70, 150, 310, then every 160 ms: 1110, 1270 ms).
const SLOW_NEXT: std::time::Duration = std::time::Duration::from_millis(1115);

/// How long `/early/deadline`'s wait lasts at most.
const DEADLINE: std::time::Duration = std::time::Duration::from_millis(300);

/// A wait that lasts (an `"influxdb"` mode request while InfluxDB is slow) looks at its socket
/// a few times, each look longer than the one before, not every 10 ms of it: 1.2 s in looks
/// of 10 ms would be 120. The answer's `Date` is when it was sent.
#[test]
fn a_long_wait_looks_at_the_socket_a_few_times() {
    let server = start();
    let mut client = Client::connect(server.addr);
    let sent = std::time::SystemTime::now();
    client.send(post("/early/slow"));
    let answer = client.response();
    assert_eq!(
        (answer.status, answer.header("x-answer")),
        (204, Some("early"))
    );
    // Its `Date` says when it went, not when it was armed (an earlier second).
    let date = httpdate::parse_http_date(answer.header("date").expect("a Date")).unwrap();
    let secs =
        |t: std::time::SystemTime| t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert!(
        secs(date) > secs(sent),
        "{date:?} for a request sent at {sent:?}"
    );
    wait_until("the handler returned", || {
        lock(&server.handler.slow_looks).is_some()
    });
    let looks = lock(&server.handler.slow_looks).unwrap();
    assert!((2..=20).contains(&looks), "{looks} looks in {SLOW:?}");
}

/// A client that sends its next request during a long look (an answer written after a long
/// wait) is answered, once and in order. (That the handler wakes when the request comes, not
/// when the look ends, is `poll`'s to keep: a bound on how soon would hold only on an idle
/// machine, so none is asserted.)
#[test]
fn a_request_sent_during_a_long_look_is_answered() {
    let server = start();
    let mut client = Client::connect(server.addr);
    client.send(post("/early/slow-next"));
    let answer = client.response();
    assert_eq!(
        (answer.status, answer.header("x-answer")),
        (204, Some("early"))
    );
    client.send(super::tests::get("/next"));
    assert_eq!(client.response().json()["path"], "/next");
    client.send(super::tests::get("/after"));
    assert_eq!(client.response().json()["path"], "/after");
}

/// A wait given a deadline ends there when nothing settles it: the handler goes on and its own
/// answer goes, once.
#[test]
fn a_wait_ends_at_its_deadline() {
    let server = start();
    let mut client = Client::connect(server.addr);
    let began = std::time::Instant::now();
    client.send(post("/early/deadline"));
    let answer = client.response();
    assert!(began.elapsed() >= DEADLINE, "{:?}", began.elapsed());
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.json()["answer"], "the handler's own");
    client.send(super::tests::get("/next"));
    assert_eq!(client.response().json()["path"], "/next");
}

/// An answer armed and never settled (the wait ended another way) is taken back when the
/// handler returns: the client gets the handler's own answer, once.
#[test]
fn an_armed_answer_never_settled_gives_way_to_the_handler_s() {
    let server = start();
    let mut client = Client::connect(server.addr);
    client.send(post("/early/unsettled"));
    let answer = client.response();
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.json()["answer"], "the handler's own");
    client.send(super::tests::get("/next"));
    assert_eq!(client.response().json()["path"], "/next");
}
