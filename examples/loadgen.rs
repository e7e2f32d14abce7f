//! Load generator and measuring helpers for `scripts/bench.sh`.
//!
//! Subcommands:
//!
//! - `gateway --addr A --concurrency N --cycles M [--pid P] [--max-seconds S]`: N threads,
//!   each on one keep-alive connection, run register + commit cycles against the gateway
//!   (Locust-shaped bodies, a `requestStats` of 3 endpoint rows).
//! - `direct --influx A --db D --concurrency N --cycles M`: the same points as line protocol,
//!   written straight to InfluxDB 1.x `/write`, one write per gateway request (2 lines for
//!   what register writes, 5 for what commit writes): what a client gets without the gateway.
//! - `null-influx --listen 127.0.0.1:0`: a stand-in InfluxDB answering 204 at once; prints
//!   its address, then one line per large write (time to receive it, size).
//! - `register-many --addr A --n 10000 [--concurrency N]`: leaves N running jobs.
//! - `register-wide --addr A --fields F --bytes B --n N [--until-refused]`: N registers, each
//!   with F string fields of B bytes (what a token holder filling memory sends), from 4
//!   connections; counts the answers by status and code. With `--until-refused` it stops at
//!   the first refusal (the table is full).
//! - `wrk-script --db D --out F`: a Lua script for `wrk` posting the same lines as `direct`
//!   (register's, then commit's, a new run id each pair), to check that `direct` is not the
//!   limit of the comparison.
//! - `tick --pid P --ticks K [--max-seconds S]`: wall time and CPU time of heartbeat ticks,
//!   sampled from `/proc` (see [`tick`]); the first tick, which creates the series in
//!   InfluxDB, is reported apart from the others.
//! - `batch --influx A --db D --lines 10000 --writes 4`: what one heartbeat tick's write costs
//!   InfluxDB itself: N heartbeat lines (N runs, shaped like the gateway's) in one `/write`,
//!   repeated with new timestamps; the first write, which creates the series, is left out.
//! - `startup --bin B --config C --runs 5`: time from spawn to the first answered ping.
//! - `seed-jobs --from jobs.json --n 10000 --out jobs.json`: a job table of N running jobs,
//!   copies of the first running job of a table the gateway saved, each with its own uuid.
//! - `free-ports --n 2`: that many distinct free loopback ports, one a line (for influxd).
//! - `stalled-bodies --addr A --pid P [--addresses 8] [--per-address 64] [--bytes 1048576]`:
//!   from 127.0.0.2 onwards, that many connections per address each announce a register body
//!   of `--bytes`, send half of it and stall; then the gateway's peak and current resident
//!   memory, what the stalled connections were answered, and how long a normal register on a
//!   new connection takes meanwhile.
//! - `wide-commits --addr A --pid P [--concurrency 32] [--commits 64] [--rows 1000]
//!   [--members 1000] [--after 10] [--max-seconds 300]`: N connections each register a run
//!   and commit it, gzip'd, with a `requestStats` of R rows of M numeric members each (9–13 MB
//!   inflated), C commits in all; a 503 (or a connection closed) is retried 200 ms later.
//!   Prints the gateway's peak resident memory during the load (`VmHWM`), its resident memory
//!   as the load ends and `--after` seconds later (`VmRSS`), and the answers by status.
//! - `lp-write --addr A --db D [--token T] [--lines 5000] [--gzip] [--concurrency 4]
//!   [--requests 1000] [--max-seconds 10] [--pool 32] [--pid P] [--influxd-pid P]
//!   [--wait-delivered] [--drain-seconds 120]`: InfluxDB's write API, `POST
//!   /write?db=D&precision=ns`, straight to influxd or through the gateway (with
//!   `Authorization: Token T`): N connections write bodies of `--lines` lines of k6-shaped line
//!   protocol (see [`K6Lines`]: 284 series, nanosecond times), until `--requests` writes or
//!   `--max-seconds`. One write of every series comes first, before the clock. With `--gzip`
//!   the bodies are a pool of `--pool` gzip'd batches made before the clock and sent in turn
//!   (past the pool the points repeat, and InfluxDB stores them again over themselves);
//!   otherwise each body is made as it is sent, with new times. Prints requests and points a
//!   second and the latency of a write; with `--pid`, that process's CPU (user + system, from
//!   `/proc/PID/stat`) per 1 000 lines and its resident memory after; with `--influxd-pid`,
//!   influxd's CPU per 1 000 lines as well. `--wait-delivered` then waits for the gateway's
//!   log to be delivered to InfluxDB (`spool.records` of `/apiv0.1/states` at 0) and prints
//!   how long that took and the points a second delivered; the CPU is read after it. Any
//!   answer but 204 stops the run with an error naming the answer, and no figure is printed.
//! - `k6-soak --addr A --db D [--token T] --pid P [--seconds 600] [--lines 5000]
//!   [--concurrency 4] [--batches-per-second 1] [--sample-every 10] [--max-growth-kib 2048]`:
//!   k6's pace (a batch a second, up to 4 writes at once), gzip'd k6-shaped batches with new
//!   times, while the resident memory of process P is sampled every `--sample-every` seconds
//!   and printed as it is read (`rss_sample=SECONDS,KIB`); then the mean of the first and the
//!   last window (a minute, or a quarter of a shorter run), their difference, and the growth
//!   of the last half (the last window's mean against the window before half-time). Exits
//!   non-zero if that growth passes `--max-growth-kib`, or at any answer but 204.
//!
//! Everything prints `key=value` lines on stdout for the script to turn into a table.
//! Only std and the crate's own dependencies (and `socket2`, to bind a client socket to another
//! loopback address) are used, and the client is raw HTTP/1.1 over
//! `TcpStream`, so the generator itself adds as little as possible to what is measured.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use uuid::Uuid;

type Result<T> = std::result::Result<T, String>;

/// Connect, read and write limit of every client socket: a stuck server fails the run instead
/// of hanging it.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

fn main() {
    let mut args = pico_args::Arguments::from_env();
    let command = args.subcommand().unwrap_or(None).unwrap_or_default();
    let outcome = match command.as_str() {
        "gateway" => cmd_cycles(&mut args, Target::Gateway),
        "direct" => cmd_cycles(&mut args, Target::Direct),
        "null-influx" => cmd_null_influx(&mut args),
        "register-many" => cmd_register_many(&mut args),
        "register-wide" => cmd_register_wide(&mut args),
        "wrk-script" => cmd_wrk_script(&mut args),
        "tick" => cmd_tick(&mut args),
        "batch" => cmd_batch(&mut args),
        "startup" => cmd_startup(&mut args),
        "free-ports" => cmd_free_ports(&mut args),
        "seed-jobs" => cmd_seed_jobs(&mut args),
        "stalled-bodies" => cmd_stalled_bodies(&mut args),
        "wide-commits" => cmd_wide_commits(&mut args),
        "lp-write" => cmd_lp_write(&mut args),
        "k6-soak" => cmd_k6_soak(&mut args),
        _ => Err(
            "usage: loadgen gateway|direct|null-influx|register-many|register-wide|wrk-script|tick|batch|startup|free-ports|seed-jobs|stalled-bodies|wide-commits|lp-write|k6-soak [options] \
             (see the header of examples/loadgen.rs)"
                .into(),
        ),
    };
    if let Err(e) = outcome {
        eprintln!("loadgen {command}: {e}");
        std::process::exit(1);
    }
}

fn opt<T: std::str::FromStr>(args: &mut pico_args::Arguments, key: &'static str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    args.value_from_str(key).map_err(|e| format!("{key}: {e}"))
}

fn opt_or<T: std::str::FromStr>(
    args: &mut pico_args::Arguments,
    key: &'static str,
    default: T,
) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    Ok(args
        .opt_value_from_str(key)
        .map_err(|e| format!("{key}: {e}"))?
        .unwrap_or(default))
}

// ---------------------------------------------------------------------------
// A minimal keep-alive HTTP/1.1 client
// ---------------------------------------------------------------------------

/// One keep-alive connection. Reconnects when the server closed it (or asked to).
struct Client {
    addr: SocketAddr,
    stream: Option<BufReader<TcpStream>>,
    request: Vec<u8>,
}

struct Answer {
    status: u16,
    body: Vec<u8>,
}

impl Answer {
    /// An error naming `what` and the answer, unless its status is `status`.
    fn expect(&self, status: u16, what: &str) -> Result<()> {
        if self.status == status {
            return Ok(());
        }
        Err(format!(
            "{what}: {} {}",
            self.status,
            String::from_utf8_lossy(&self.body)
        ))
    }
}

impl Client {
    fn new(addr: SocketAddr) -> Client {
        Client {
            addr,
            stream: None,
            request: Vec::with_capacity(4096),
        }
    }

    fn connect(&mut self) -> Result<&mut BufReader<TcpStream>> {
        if self.stream.is_none() {
            let s = TcpStream::connect_timeout(&self.addr, IO_TIMEOUT)
                .map_err(|e| format!("connect {}: {e}", self.addr))?;
            // Requests are written in one piece; Nagle would only delay them.
            let _ = s.set_nodelay(true);
            let _ = s.set_read_timeout(Some(IO_TIMEOUT));
            let _ = s.set_write_timeout(Some(IO_TIMEOUT));
            self.stream = Some(BufReader::with_capacity(16 * 1024, s));
        }
        Ok(self.stream.as_mut().expect("just connected"))
    }

    /// Sends one request and reads its answer. A connection the server closed while idle
    /// (keep-alive timeout) is retried once on a new connection.
    fn send(
        &mut self,
        method: &str,
        path: &str,
        content_type: &str,
        body: &[u8],
    ) -> Result<Answer> {
        self.send_with(method, path, content_type, "", body)
    }

    /// `send`, with `extra` header lines (each ending in CRLF) after the others.
    fn send_with(
        &mut self,
        method: &str,
        path: &str,
        content_type: &str,
        extra: &str,
        body: &[u8],
    ) -> Result<Answer> {
        self.request.clear();
        write!(
            self.request,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{extra}\r\n",
            self.addr,
            body.len()
        )
        .expect("writing to a Vec");
        self.request.extend_from_slice(body);
        let fresh = self.stream.is_none();
        match self.exchange() {
            Ok(a) => Ok(a),
            Err(_) if !fresh => {
                self.stream = None;
                self.exchange()
            }
            Err(e) => Err(e),
        }
    }

    fn exchange(&mut self) -> Result<Answer> {
        let request = std::mem::take(&mut self.request);
        let result = self.exchange_inner(&request);
        self.request = request;
        if result.is_err() {
            self.stream = None;
        }
        result
    }

    fn exchange_inner(&mut self, request: &[u8]) -> Result<Answer> {
        let s = self.connect()?;
        s.get_mut()
            .write_all(request)
            .map_err(|e| format!("write: {e}"))?;
        let (status, length, close) = read_head(s)?;
        let mut body = vec![0; length];
        s.read_exact(&mut body).map_err(|e| format!("body: {e}"))?;
        if close {
            self.stream = None;
        }
        Ok(Answer { status, body })
    }
}

/// Reads a response head; returns the status, the body length and whether the server closes.
/// Only `Content-Length` bodies are understood (the gateway and InfluxDB's `/write` send no
/// others); 204 and 304 have no body.
fn read_head(s: &mut BufReader<TcpStream>) -> Result<(u16, usize, bool)> {
    let mut line = String::new();
    let mut status = 0u16;
    let mut length = 0usize;
    let mut close = false;
    let mut first = true;
    loop {
        line.clear();
        let n = s.read_line(&mut line).map_err(|e| format!("head: {e}"))?;
        if n == 0 {
            return Err("connection closed before the answer".into());
        }
        let l = line.trim_end();
        if first {
            first = false;
            status = l
                .split(' ')
                .nth(1)
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| format!("bad status line {l:?}"))?;
            continue;
        }
        if l.is_empty() {
            break;
        }
        let Some((name, value)) = l.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = value.parse().map_err(|_| format!("bad length {value:?}"))?;
        } else if name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close") {
            close = true;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(format!("transfer-encoding {value} is not supported"));
        }
    }
    if status == 204 || status == 304 {
        length = 0;
    }
    Ok((status, length, close))
}

fn resolve(addr: &str) -> Result<SocketAddr> {
    let addr = addr.trim_start_matches("http://").trim_end_matches('/');
    addr.parse().map_err(|e| format!("address {addr:?}: {e}"))
}

// ---------------------------------------------------------------------------
// Register + commit cycles
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq)]
enum Target {
    Gateway,
    Direct,
}

/// The Locust endpoint rows a commit carries: three is a small but realistic test.
const ROWS: [(&str, &str, f64); 3] = [
    ("/", "GET", 11.5),
    ("/items?page=2", "GET", 23.25),
    ("/login", "POST", 48.0),
];
const HOST: &str = "lg-1";
const TARGET_HOST: &str = "http://10.10.10.1";

fn register_body(started_s: u64) -> String {
    format!(
        r#"{{"startedAt": {started_s}, "hostname": "{HOST}", "targetHost": "{TARGET_HOST}", "tags": {{"mode": "single"}}, "measurement": {{"fields": {{"clients": 10, "hatchRate": 0.5, "requests": null}}}}, "state": "hatching"}}"#
    )
}

/// The `requestStats` text as Locust sends it (a JSON object in a string). Compact, so the
/// gateway stores exactly this text and the direct writer can send the same.
fn request_stats() -> String {
    let rows: Vec<String> = ROWS
        .iter()
        .map(|(name, method, avg)| {
            format!(
                r#"{{"name":"{name}","method":"{method}","num_requests":1200,"num_failures":3,"avg_response_time":{avg},"median_response_time":11,"min_response_time":2,"max_response_time":310,"current_rps":20.5,"total_content_length":912000}}"#
            )
        })
        .collect();
    format!(
        r#"{{"stats":[{}],"errors":[],"total_rps":61.5,"fail_ratio":0.0025,"user_count":10}}"#,
        rows.join(",")
    )
}

fn commit_body(uuid: &str, stats: &str) -> String {
    let stats = serde_json::to_string(stats).expect("a string serializes");
    format!(
        r#"{{"uuid": "{uuid}", "measurement": {{"fields": {{"requestStats": {stats}}}}}, "state": "stopped"}}"#
    )
}

/// Escapes a line protocol string field value.
fn lp_string(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// What the gateway writes for a register (the `started` event and the first heartbeat), with
/// the same tags, fields and timestamps (events carry only the run's identity as tags).
fn register_lines(uuid: &str, started_ms: u64, now_ms: u64) -> String {
    format!(
        "load_testing_events,event=started,host={HOST},uuid={uuid} text=\"load test started on {HOST} (run {uuid})\" {started_ms}\n{}",
        heartbeat_line(uuid, started_ms, now_ms)
    )
}

/// The heartbeat the gateway writes for a run registered with `register_body`.
fn heartbeat_line(uuid: &str, started_ms: u64, now_ms: u64) -> String {
    format!(
        "load_testing,host={HOST},mode=single,targetHost={TARGET_HOST},uuid={uuid} clients=10,hatchRate=0.5,elapsed={} {now_ms}\n",
        (now_ms.saturating_sub(started_ms)) as f64 / 1000.0
    )
}

/// What the gateway writes for a commit: the result, one point per endpoint row, and the
/// `finished` event.
fn commit_lines(uuid: &str, stats: &str, now_ms: u64) -> String {
    let tags = format!("host={HOST},mode=single,targetHost={TARGET_HOST},uuid={uuid}");
    let mut out = format!(
        "load_testing_result,{tags} requestStats=\"{}\",fail_ratio=0.0025,total_rps=61.5,user_count=10 {now_ms}\n",
        lp_string(stats)
    );
    for (name, method, avg) in ROWS {
        let name = name.replace(',', "\\,").replace('=', "\\=");
        out.push_str(&format!(
            "load_testing_request_stats,host={HOST},method={method},mode=single,name={name},targetHost={TARGET_HOST},uuid={uuid} \
             avg_response_time={avg},current_rps=20.5,max_response_time=310,median_response_time=11,\
             min_response_time=2,num_failures=3,num_requests=1200,total_content_length=912000 {now_ms}\n"
        ));
    }
    out.push_str(&format!(
        "load_testing_events,event=finished,host={HOST},uuid={uuid} text=\"load test finished on {HOST} after 0m00s (run {uuid})\" {now_ms}\n"
    ));
    out
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// What one client thread saw.
#[derive(Default)]
struct Tally {
    /// Nanoseconds per register + commit cycle.
    cycles: Vec<u64>,
    /// Nanoseconds per request.
    requests: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
}

impl Tally {
    fn error(&mut self, e: String) {
        self.errors += 1;
        self.first_error.get_or_insert(e);
    }
}

fn cmd_cycles(args: &mut pico_args::Arguments, target: Target) -> Result<()> {
    let addr = match target {
        Target::Gateway => resolve(&opt::<String>(args, "--addr")?)?,
        Target::Direct => resolve(&opt::<String>(args, "--influx")?)?,
    };
    let db: String = opt_or(args, "--db", "bench".to_string())?;
    let concurrency: usize = opt(args, "--concurrency")?;
    let cycles: u64 = opt(args, "--cycles")?;
    let pid: Option<u32> = args
        .opt_value_from_str("--pid")
        .map_err(|e| e.to_string())?;
    let max_seconds: f64 = opt_or(args, "--max-seconds", 3600.0)?;
    let write_path = format!("/write?db={db}&precision=ms");

    let next = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let barrier = Arc::new(Barrier::new(concurrency + 1));
    let stats = Arc::new(request_stats());
    let mut handles = Vec::new();
    for _ in 0..concurrency {
        let (next, stop, barrier, stats) = (
            Arc::clone(&next),
            Arc::clone(&stop),
            Arc::clone(&barrier),
            Arc::clone(&stats),
        );
        let write_path = write_path.clone();
        handles.push(thread::spawn(move || {
            let mut client = Client::new(addr);
            let mut tally = Tally::default();
            // Connections are opened before the clock starts: connection set-up is not
            // what a keep-alive client pays per cycle.
            if let Err(e) = client.connect() {
                tally.error(e);
            }
            barrier.wait();
            while !stop.load(Ordering::Relaxed) && next.fetch_add(1, Ordering::Relaxed) < cycles {
                let t0 = Instant::now();
                let outcome = match target {
                    Target::Gateway => gateway_cycle(&mut client, &stats, &mut tally),
                    Target::Direct => direct_cycle(&mut client, &write_path, &stats, &mut tally),
                };
                match outcome {
                    Ok(()) => tally.cycles.push(t0.elapsed().as_nanos() as u64),
                    Err(e) => tally.error(e),
                }
            }
            tally
        }));
    }
    let cpu_before = pid.map(process_cpu_ns).transpose()?;
    barrier.wait();
    let start = Instant::now();
    let limit = Duration::from_secs_f64(max_seconds);
    while !handles.iter().all(|h| h.is_finished()) {
        if start.elapsed() >= limit {
            stop.store(true, Ordering::Relaxed);
        }
        thread::sleep(Duration::from_millis(5));
    }
    let wall = start.elapsed();
    let cpu_after = pid.map(process_cpu_ns).transpose()?;

    let mut all = Tally::default();
    for h in handles {
        let t = h.join().map_err(|_| "a client thread panicked")?;
        all.cycles.extend(t.cycles);
        all.requests.extend(t.requests);
        all.errors += t.errors;
        if all.first_error.is_none() {
            all.first_error = t.first_error;
        }
    }
    let done = all.cycles.len() as u64;
    println!("cycles={done}");
    println!("stopped_early={}", done + all.errors < cycles);
    println!("errors={}", all.errors);
    if let Some(e) = &all.first_error {
        println!("first_error={}", e.replace('\n', " "));
    }
    println!("seconds={:.3}", wall.as_secs_f64());
    println!("cycles_per_s={:.1}", done as f64 / wall.as_secs_f64());
    print_percentiles("cycle", &mut all.cycles);
    print_percentiles("request", &mut all.requests);
    if let (Some(a), Some(b)) = (cpu_before, cpu_after) {
        let requests = 2 * done + all.errors;
        println!(
            "server_cpu_us_per_request={:.1}",
            (b - a) as f64 / 1000.0 / requests.max(1) as f64
        );
    }
    Ok(())
}

fn timed(tally: &mut Tally, f: impl FnOnce() -> Result<Answer>) -> Result<Answer> {
    let t0 = Instant::now();
    let a = f()?;
    tally.requests.push(t0.elapsed().as_nanos() as u64);
    Ok(a)
}

fn gateway_cycle(client: &mut Client, stats: &str, tally: &mut Tally) -> Result<()> {
    let body = register_body(now_ms() / 1000);
    let a = timed(tally, || {
        client.send(
            "POST",
            "/apiv0.1/events/register",
            "application/json",
            body.as_bytes(),
        )
    })?;
    a.expect(200, "register")?;
    let uuid = uuid_of(&a.body)?;
    let body = commit_body(&uuid, stats);
    let a = timed(tally, || {
        client.send(
            "POST",
            "/apiv0.1/events/commit",
            "application/json",
            body.as_bytes(),
        )
    })?;
    a.expect(200, "commit")?;
    Ok(())
}

fn uuid_of(body: &[u8]) -> Result<String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("register answer: {e}"))?;
    v["uuid"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| "register answer without uuid".into())
}

fn direct_cycle(client: &mut Client, path: &str, stats: &str, tally: &mut Tally) -> Result<()> {
    // The client makes the run id itself: the part of the gateway's work that a direct
    // writer would still have to do.
    let uuid = Uuid::new_v4().to_string();
    let now = now_ms();
    let lines = register_lines(&uuid, now / 1000 * 1000, now);
    let a = timed(tally, || {
        client.send("POST", path, "text/plain", lines.as_bytes())
    })?;
    a.expect(204, "write")?;
    let lines = commit_lines(&uuid, stats, now_ms());
    let a = timed(tally, || {
        client.send("POST", path, "text/plain", lines.as_bytes())
    })?;
    a.expect(204, "write")?;
    Ok(())
}

/// Times `--writes` writes of `--lines` heartbeat lines each (see the header).
fn cmd_batch(args: &mut pico_args::Arguments) -> Result<()> {
    let influx = resolve(&opt::<String>(args, "--influx")?)?;
    let db: String = opt(args, "--db")?;
    let lines: usize = opt(args, "--lines")?;
    let writes: usize = opt_or(args, "--writes", 4)?;
    let uuids: Vec<String> = (0..lines).map(|_| Uuid::new_v4().to_string()).collect();
    let path = format!("/write?db={db}&precision=ms");
    let mut client = Client::new(influx);
    let mut walls = Vec::new();
    let started = now_ms();
    for w in 0..writes.max(2) {
        let now = now_ms() + w as u64;
        let mut body = String::with_capacity(lines * 160);
        for uuid in &uuids {
            body.push_str(&heartbeat_line(uuid, started, now));
        }
        let t0 = Instant::now();
        let a = client.send("POST", &path, "text/plain", body.as_bytes())?;
        a.expect(204, "write")?;
        if w > 0 {
            walls.push(t0.elapsed().as_nanos() as u64);
        }
    }
    println!("writes={}", walls.len());
    print_percentiles("batch_wall", &mut walls);
    Ok(())
}

fn print_percentiles(name: &str, ns: &mut [u64]) {
    if ns.is_empty() {
        return;
    }
    ns.sort_unstable();
    let at = |q: f64| {
        let i = ((ns.len() as f64 * q).ceil() as usize).clamp(1, ns.len()) - 1;
        ns[i] as f64 / 1e6
    };
    println!("{name}_p50_ms={:.3}", at(0.50));
    println!("{name}_p99_ms={:.3}", at(0.99));
    println!("{name}_max_ms={:.3}", at(1.0));
}

/// User + system CPU time of a whole process (all threads), from `/proc/PID/stat`.
fn process_cpu_ns(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("/proc/{pid}/stat: {e}"))?;
    // The command name may hold spaces; the fields after it are fixed.
    let rest = &stat[stat.rfind(')').ok_or("bad /proc stat")? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 =
        fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0);
    Ok(ticks * 1_000_000_000 / clock_ticks_per_second())
}

/// `sysconf(_SC_CLK_TCK)`, which is 100 on every Linux architecture the kernel reports in
/// `/proc` with (USER_HZ is fixed for the user-space ABI).
fn clock_ticks_per_second() -> u64 {
    100
}

// ---------------------------------------------------------------------------
// Many running jobs
// ---------------------------------------------------------------------------

fn cmd_register_many(args: &mut pico_args::Arguments) -> Result<()> {
    let addr = resolve(&opt::<String>(args, "--addr")?)?;
    let n: u64 = opt(args, "--n")?;
    let concurrency: usize = opt_or(args, "--concurrency", 8)?;
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let handles: Vec<_> = (0..concurrency)
        .map(|_| {
            let next = Arc::clone(&next);
            thread::spawn(move || -> Result<u64> {
                let mut client = Client::new(addr);
                let mut done = 0;
                while next.fetch_add(1, Ordering::Relaxed) < n {
                    let body = register_body(now_ms() / 1000);
                    let a = client.send(
                        "POST",
                        "/apiv0.1/events/register",
                        "application/json",
                        body.as_bytes(),
                    )?;
                    a.expect(200, "register")?;
                    done += 1;
                }
                Ok(done)
            })
        })
        .collect();
    let mut total = 0;
    for h in handles {
        total += h.join().map_err(|_| "a client thread panicked")??;
    }
    println!("registered={total}");
    println!("seconds={:.3}", start.elapsed().as_secs_f64());
    Ok(())
}

/// Registers of wide runs; see the header.
fn cmd_register_wide(args: &mut pico_args::Arguments) -> Result<()> {
    let addr = resolve(&opt::<String>(args, "--addr")?)?;
    let fields: usize = opt(args, "--fields")?;
    let bytes: usize = opt(args, "--bytes")?;
    let n: u64 = opt(args, "--n")?;
    let until_refused = args.contains("--until-refused");
    let text = "x".repeat(bytes);
    let fields: Vec<String> = (0..fields).map(|i| format!(r#""f{i}":"{text}""#)).collect();
    let body = Arc::new(format!(
        r#"{{"host":"{HOST}","measurement":{{"fields":{{{}}}}}}}"#,
        fields.join(",")
    ));
    let next = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (next, stop, body) = (Arc::clone(&next), Arc::clone(&stop), Arc::clone(&body));
            thread::spawn(move || -> Result<Vec<(u16, String)>> {
                let mut client = Client::new(addr);
                let mut answers = Vec::new();
                while !stop.load(Ordering::Relaxed) && next.fetch_add(1, Ordering::Relaxed) < n {
                    let a = client.send(
                        "POST",
                        "/apiv0.1/events/register",
                        "application/json",
                        body.as_bytes(),
                    )?;
                    let code = serde_json::from_slice::<serde_json::Value>(&a.body)
                        .ok()
                        .and_then(|v| v["code"].as_str().map(str::to_string))
                        .unwrap_or_default();
                    if a.status != 200 && until_refused {
                        stop.store(true, Ordering::Relaxed);
                    }
                    answers.push((a.status, code));
                }
                Ok(answers)
            })
        })
        .collect();
    let mut counts: std::collections::BTreeMap<String, u64> = Default::default();
    for h in handles {
        for (status, code) in h.join().map_err(|_| "a client thread panicked")?? {
            let key = if code.is_empty() {
                status.to_string()
            } else {
                format!("{status}_{code}")
            };
            *counts.entry(key).or_default() += 1;
        }
    }
    println!("ok={}", counts.get("200").copied().unwrap_or(0));
    let answers: Vec<String> = counts.iter().map(|(k, v)| format!("{v}×{k}")).collect();
    println!("answers={}", answers.join(" "));
    println!("seconds={:.3}", start.elapsed().as_secs_f64());
    Ok(())
}

/// Writes the `wrk` script; see the header.
fn cmd_wrk_script(args: &mut pico_args::Arguments) -> Result<()> {
    let db: String = opt(args, "--db")?;
    let out: String = opt(args, "--out")?;
    // The lines with placeholders the script fills in: the same text `direct` sends.
    let (uuid, now) = ("UUID", 2_000_000_000_000u64);
    let register = register_lines(uuid, now, now).replace(&now.to_string(), "NOW");
    let commit = commit_lines(uuid, &request_stats(), now).replace(&now.to_string(), "NOW");
    let quote = |text: &str| format!("[==[{text}]==]");
    let script = format!(
        r#"-- Generated by `loadgen wrk-script`: posts what `loadgen direct` posts, a register's
-- lines then a commit's, with a new run id for each pair.
local register = {register}
local commit = {commit}
local path = "/write?db={db}&precision=ms"
local headers = {{ ["Content-Type"] = "text/plain" }}
local n = 0
local id = ""
local function uuid()
  local hex = "0123456789abcdef"
  local out = {{}}
  for i = 1, 32 do
    local k = math.random(1, 16)
    out[i] = hex:sub(k, k)
  end
  local s = table.concat(out)
  return s:sub(1, 8) .. "-" .. s:sub(9, 12) .. "-4" .. s:sub(14, 16) .. "-a" .. s:sub(18, 20) .. "-" .. s:sub(21, 32)
end
function setup(thread)
  thread:set("seed", math.random(1, 1000000))
end
function init(args)
  math.randomseed(seed + os.time())
end
function request()
  n = n + 1
  local now = string.format("%d", os.time() * 1000)
  local body
  if n % 2 == 1 then
    id = uuid()
    body = register:gsub("UUID", id):gsub("NOW", now)
  else
    body = commit:gsub("UUID", id):gsub("NOW", now)
  end
  return wrk.format("POST", path, headers, body)
end
function response(status, headers, body)
  if status ~= 204 then
    io.stderr:write("write answered " .. status .. ": " .. body .. "\n")
  end
end
"#,
        register = quote(&register),
        commit = quote(&commit),
    );
    std::fs::write(&out, script).map_err(|e| format!("{out}: {e}"))?;
    Ok(())
}

// ---------------------------------------------------------------------------
// Heartbeat ticks
// ---------------------------------------------------------------------------

/// The system calls a sleeping heartbeat thread waits in (`nanosleep`, `clock_nanosleep`).
#[cfg(target_arch = "x86_64")]
const SLEEP_SYSCALLS: [&str; 2] = ["35", "230"];
#[cfg(target_arch = "aarch64")]
const SLEEP_SYSCALLS: [&str; 2] = ["101", "115"];
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const SLEEP_SYSCALLS: [&str; 2] = ["?", "?"];

/// Measures heartbeat ticks from outside the gateway. Between ticks the gateway's thread named
/// `heartbeat` sleeps in `nanosleep`; `/proc/PID/task/TID/syscall` shows which system call a
/// thread waits in (or `running`). Sampling it every 0.2 ms, a tick is the span from the first
/// sample outside the sleep to the first sample back in it: it covers collecting the points,
/// the write to InfluxDB and its answer, and saving the job table, to within the sampling step.
/// The thread's CPU time per tick comes from `/proc/PID/task/TID/schedstat` (nanoseconds).
fn cmd_tick(args: &mut pico_args::Arguments) -> Result<()> {
    let pid: u32 = opt(args, "--pid")?;
    let ticks: usize = opt_or(args, "--ticks", 3)?;
    let max_seconds: f64 = opt_or(args, "--max-seconds", 30.0)?;
    let tid = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map_err(|e| format!("/proc/{pid}/task: {e}"))?
        .filter_map(|e| e.ok())
        .find(|e| {
            std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim() == "heartbeat")
        })
        .ok_or("no thread named heartbeat")?
        .file_name();
    let dir = format!("/proc/{pid}/task/{}", tid.to_string_lossy());
    let syscall = format!("{dir}/syscall");
    let schedstat = format!("{dir}/schedstat");
    let asleep = || -> Result<bool> {
        let s = std::fs::read_to_string(&syscall).map_err(|e| format!("{syscall}: {e}"))?;
        let first = s.split(' ').next().unwrap_or("").trim();
        Ok(SLEEP_SYSCALLS.contains(&first))
    };
    let cpu_ns = || -> u64 {
        std::fs::read_to_string(&schedstat)
            .ok()
            .and_then(|s| s.split(' ').next().and_then(|n| n.parse().ok()))
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs_f64(max_seconds);
    let step = Duration::from_micros(200);
    let mut walls = Vec::new();
    let mut cpus = Vec::new();
    // Start from a sleeping thread, so the first tick is seen whole.
    while !asleep()? {
        if Instant::now() >= deadline {
            return Err("the heartbeat thread never slept".into());
        }
        thread::sleep(step);
    }
    while walls.len() < ticks && Instant::now() < deadline {
        let cpu0 = cpu_ns();
        let mut timed_out = false;
        while asleep()? {
            if Instant::now() >= deadline {
                timed_out = true;
                break;
            }
            thread::sleep(step);
        }
        if timed_out {
            break;
        }
        let t0 = Instant::now();
        while !asleep()? {
            if Instant::now() >= deadline {
                return Err("a heartbeat tick outlasted --max-seconds".into());
            }
            thread::sleep(step);
        }
        walls.push(t0.elapsed().as_nanos() as u64);
        cpus.push(cpu_ns().saturating_sub(cpu0));
    }
    // The first tick after a start makes InfluxDB create a series per run, which later ticks
    // do not pay: it is reported on its own.
    if walls.len() > 1 {
        println!("first_tick_wall_ms={:.3}", walls.remove(0) as f64 / 1e6);
        cpus.remove(0);
    }
    println!("ticks={}", walls.len());
    print_percentiles("tick_wall", &mut walls);
    print_percentiles("tick_cpu", &mut cpus);
    Ok(())
}

// ---------------------------------------------------------------------------
// A null InfluxDB
// ---------------------------------------------------------------------------

/// Writes of at least this many lines are reported (heartbeat ticks), smaller ones are not.
const REPORTED_LINES: usize = 100;

fn cmd_null_influx(args: &mut pico_args::Arguments) -> Result<()> {
    let listen: String = opt_or(args, "--listen", "127.0.0.1:0".to_string())?;
    let listener = TcpListener::bind(&listen).map_err(|e| format!("bind {listen}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    println!("listening={addr}");
    io::stdout().flush().map_err(|e| e.to_string())?;
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        thread::spawn(move || {
            let _ = serve_null(conn);
        });
    }
    Ok(())
}

/// Answers every request on one connection at once: 204, no body, keep-alive.
fn serve_null(conn: TcpStream) -> io::Result<()> {
    let _ = conn.set_nodelay(true);
    let mut writer = conn.try_clone()?;
    let mut reader = BufReader::with_capacity(64 * 1024, conn);
    let mut line = String::new();
    let mut body = Vec::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let started = Instant::now();
        let is_write = line.starts_with("POST /write") || line.starts_with("POST /api/v2/write");
        let mut length = 0usize;
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((name, value)) = l.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        body.resize(length, 0);
        reader.read_exact(&mut body)?;
        let lines = body.iter().filter(|&&b| b == b'\n').count();
        if is_write && lines >= REPORTED_LINES {
            println!(
                "write lines={lines} bytes={length} receive_ms={:.3}",
                started.elapsed().as_secs_f64() * 1000.0
            );
            let _ = io::stdout().flush();
        }
        writer.write_all(b"HTTP/1.1 204 No Content\r\nX-Influxdb-Version: null\r\n\r\n")?;
    }
}

// ---------------------------------------------------------------------------
// Start-up time
// ---------------------------------------------------------------------------

/// Spawns the gateway `--runs` times on a free port and times each start to the first 200
/// from `/apiv0.1/ping`, polling every 0.2 ms; prints the median and every run.
fn cmd_startup(args: &mut pico_args::Arguments) -> Result<()> {
    let bin: String = opt(args, "--bin")?;
    let config: String = opt(args, "--config")?;
    let runs: usize = opt_or(args, "--runs", 5)?;
    let mut times = Vec::new();
    for _ in 0..runs {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let t0 = Instant::now();
        let mut child = Command::new(&bin)
            .args(["--config", &config, "--listen", &addr.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("{bin}: {e}"))?;
        let mut answered = None;
        while t0.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("{bin} exited: {status}"));
            }
            let mut client = Client::new(addr);
            if client
                .send("GET", "/apiv0.1/ping", "application/json", b"")
                .is_ok_and(|a| a.status == 200)
            {
                answered = Some(t0.elapsed());
                break;
            }
            thread::sleep(Duration::from_micros(200));
        }
        let _ = child.kill();
        let _ = child.wait();
        let t = answered.ok_or("no answer to ping within 10 s")?;
        times.push(t.as_nanos() as u64);
    }
    let each: Vec<String> = times
        .iter()
        .map(|t| format!("{:.1}", *t as f64 / 1e6))
        .collect();
    println!("startup_runs_ms={}", each.join(","));
    times.sort_unstable();
    println!(
        "startup_median_ms={:.1}",
        times[times.len() / 2] as f64 / 1e6
    );
    Ok(())
}

/// Asks the kernel for distinct free loopback ports. All listeners are held until every port is
/// known, so none is handed out twice.
fn cmd_free_ports(args: &mut pico_args::Arguments) -> Result<()> {
    let n: usize = opt_or(args, "--n", 1)?;
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<io::Result<Vec<_>>>()
        .map_err(|e| e.to_string())?;
    for l in &listeners {
        println!("{}", l.local_addr().map_err(|e| e.to_string())?.port());
    }
    Ok(())
}

/// Writes a job table of `--n` running jobs for the gateway to load at start. Registering them
/// one by one costs a save of the whole table per register, which makes the set-up itself
/// quadratic; copying a job the gateway saved keeps the set-up short and the jobs real.
fn cmd_seed_jobs(args: &mut pico_args::Arguments) -> Result<()> {
    let from: String = opt(args, "--from")?;
    let n: usize = opt(args, "--n")?;
    let out: String = opt(args, "--out")?;
    let text = std::fs::read_to_string(&from).map_err(|e| format!("{from}: {e}"))?;
    let mut table: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{from}: {e}"))?;
    let template = table["jobs"]
        .as_array()
        .and_then(|jobs| jobs.iter().find(|j| j["state"] == "running"))
        .cloned()
        .ok_or_else(|| format!("{from}: no running job to copy"))?;
    let now = now_ms();
    let jobs: Vec<serde_json::Value> = (0..n)
        .map(|_| {
            let mut job = template.clone();
            job["uuid"] = Uuid::new_v4().to_string().into();
            job["started_ms"] = now.into();
            job["last_seen_ms"] = now.into();
            job
        })
        .collect();
    table["jobs"] = jobs.into();
    let bytes = serde_json::to_vec(&table).map_err(|e| e.to_string())?;
    std::fs::write(&out, bytes).map_err(|e| format!("{out}: {e}"))?;
    println!("seeded={n}");
    Ok(())
}

// ---------------------------------------------------------------------------
// Stalled bodies
// ---------------------------------------------------------------------------

/// How long the stalled connections get to send their halves; a body waiting for memory is not
/// read, so its half may never all be sent.
const SEND_FOR: Duration = Duration::from_secs(3);

/// How long after the halves were sent the gateway's memory is read: every body has had its
/// second to get memory or be refused by then.
const SETTLE: Duration = Duration::from_millis(2500);

fn cmd_stalled_bodies(args: &mut pico_args::Arguments) -> Result<()> {
    let addr = resolve(&opt::<String>(args, "--addr")?)?;
    let pid: u32 = opt(args, "--pid")?;
    let addresses: u8 = opt_or(args, "--addresses", 8)?;
    let per_address: usize = opt_or(args, "--per-address", 64)?;
    let bytes: usize = opt_or(args, "--bytes", 1 << 20)?;
    let head = format!(
        "POST /apiv0.1/events/register HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {bytes}\r\n\r\n"
    );
    let half = vec![b' '; bytes / 2];
    let senders: Vec<_> = (0..addresses)
        .map(|i| {
            let (head, half) = (head.clone(), half.clone());
            let from = std::net::IpAddr::from([127, 0, 0, 2u8.saturating_add(i)]);
            thread::spawn(move || stall_from(from, addr, per_address, &head, &half))
        })
        .collect();
    let mut conns = Vec::new();
    let mut sent = 0;
    for s in senders {
        let (c, n) = s.join().map_err(|_| "a sender thread panicked")??;
        conns.extend(c);
        sent += n;
    }
    thread::sleep(SETTLE);
    let peak = proc_status_kib(pid, "VmHWM")?;
    let rss = proc_status_kib(pid, "VmRSS")?;

    let started = Instant::now();
    let mut client = Client::new(addr);
    let body = register_body(now_ms() / 1000);
    let status = client
        .send(
            "POST",
            "/apiv0.1/events/register",
            "application/json",
            body.as_bytes(),
        )
        .map_or(0, |a| a.status);
    let register_ms = started.elapsed().as_secs_f64() * 1000.0;

    let (mut refused, mut closed) = (0, 0);
    for c in &mut conns {
        let mut answer = [0u8; 512];
        match c.read(&mut answer) {
            Ok(0) => closed += 1,
            Ok(n) if String::from_utf8_lossy(&answer[..n]).contains("too_many_bodies") => {
                refused += 1;
            }
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => closed += 1,
            _ => {}
        }
    }
    println!("connections={}", conns.len());
    println!("sent_mib={:.1}", sent as f64 / f64::from(1 << 20));
    println!("rss_peak_kib={peak}");
    println!("rss_kib={rss}");
    println!("refused={refused}");
    println!("closed={closed}");
    println!("register_status={status}");
    println!("register_ms={register_ms:.1}");
    Ok(())
}

/// `n` connections from `from`, each sent `head` and as much of `half` as the server takes
/// within `SEND_FOR`; returned open and non-blocking, with the bytes sent in all.
fn stall_from(
    from: std::net::IpAddr,
    to: SocketAddr,
    n: usize,
    head: &str,
    half: &[u8],
) -> Result<(Vec<TcpStream>, usize)> {
    use socket2::{Domain, Protocol, Socket, Type};
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))
            .map_err(|e| format!("socket: {e}"))?;
        socket
            .bind(&SocketAddr::new(from, 0).into())
            .map_err(|e| format!("bind {from}: {e}"))?;
        socket
            .connect_timeout(&to.into(), IO_TIMEOUT)
            .map_err(|e| format!("connect from {from}: {e}"))?;
        let mut c: TcpStream = socket.into();
        c.write_all(head.as_bytes())
            .map_err(|e| format!("head: {e}"))?;
        c.set_nonblocking(true).map_err(|e| e.to_string())?;
        conns.push((c, 0));
    }
    let deadline = Instant::now() + SEND_FOR;
    while Instant::now() < deadline && conns.iter().any(|(_, sent)| *sent < half.len()) {
        for (c, sent) in &mut conns {
            while *sent < half.len() {
                match c.write(&half[*sent..]) {
                    Ok(n) => *sent += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    // Refused and closed: nothing more to send.
                    Err(_) => break,
                }
            }
        }
        thread::sleep(Duration::from_millis(10));
    }
    let total = conns.iter().map(|(_, sent)| sent).sum();
    Ok((conns.into_iter().map(|(c, _)| c).collect(), total))
}

/// A `kB` field of `/proc/PID/status`, e.g. `VmHWM` (peak resident memory).
fn proc_status_kib(pid: u32, field: &str) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| format!("no {field} in {path}"))
}

/// A `requestStats` text of `rows` endpoint rows with `members` numeric members each. Each
/// member's figure is the same in every row, as a real run's rows look alike to gzip: 1 000 ×
/// 1 000 members inflate to about 13 MB from about 100 kB, as in the wild.
fn wide_stats(rows: usize, members: usize) -> String {
    use std::fmt::Write as _;
    let mut row = String::new();
    for m in 0..members {
        write!(row, r#","m{m}":{}"#, (m * 13) % 1000).expect("writing to a String");
    }
    let mut text = String::from(r#"{"stats":["#);
    for r in 0..rows {
        if r > 0 {
            text.push(',');
        }
        write!(text, r#"{{"name":"/endpoint/{r}","method":"GET"{row}}}"#)
            .expect("writing to a String");
    }
    text.push_str(r#"],"errors":[],"total_rps":61.5,"fail_ratio":0.0025,"user_count":10}"#);
    text
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use flate2::{Compression, write::GzEncoder};
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(data).expect("writing to a Vec");
    e.finish().expect("writing to a Vec")
}

/// Drives the wide commits; see the header.
fn cmd_wide_commits(args: &mut pico_args::Arguments) -> Result<()> {
    let addr = resolve(&opt::<String>(args, "--addr")?)?;
    let pid: u32 = opt(args, "--pid")?;
    let concurrency: usize = opt_or(args, "--concurrency", 32)?;
    let commits: u64 = opt_or(args, "--commits", 64)?;
    let rows: usize = opt_or(args, "--rows", 1000)?;
    let members: usize = opt_or(args, "--members", 1000)?;
    let after: u64 = opt_or(args, "--after", 10)?;
    let max_seconds: f64 = opt_or(args, "--max-seconds", 300.0)?;
    let stats = wide_stats(rows, members);
    // The uuid is the only part that changes from commit to commit, and it comes first: the
    // rest is compressed once, and each body is two gzip members (RFC 1952 allows a series).
    let body = commit_body("UUID", &stats);
    let inflated = body.len() - 4 + 36;
    let (head, rest) = body
        .split_once("UUID")
        .ok_or("no placeholder in the body")?;
    let (head, rest) = (Arc::new(head.to_string()), Arc::new(gzip(rest.as_bytes())));
    let next = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(max_seconds);
    let start = Instant::now();
    let rss_before = proc_status_kib(pid, "VmRSS")?;
    let handles: Vec<_> = (0..concurrency)
        .map(|_| {
            let (next, head, rest) = (Arc::clone(&next), Arc::clone(&head), Arc::clone(&rest));
            thread::spawn(move || -> Result<(Vec<u16>, u64)> {
                let mut client = Client::new(addr);
                let (mut statuses, mut wire) = (Vec::new(), 0);
                while Instant::now() < deadline && next.fetch_add(1, Ordering::Relaxed) < commits {
                    let body = register_body(now_ms() / 1000);
                    let a = client.send(
                        "POST",
                        "/apiv0.1/events/register",
                        "application/json",
                        body.as_bytes(),
                    )?;
                    a.expect(200, "register")?;
                    let mut body = gzip(format!("{head}{}", uuid_of(&a.body)?).as_bytes());
                    body.extend_from_slice(&rest);
                    wire = body.len() as u64;
                    loop {
                        // A connection the gateway closed counts as status 0 and is retried
                        // on a new one.
                        let status = client
                            .send_with(
                                "POST",
                                "/apiv0.1/events/commit",
                                "application/json",
                                "Content-Encoding: gzip\r\n",
                                &body,
                            )
                            .map_or(0, |a| a.status);
                        statuses.push(status);
                        if !matches!(status, 0 | 503) || Instant::now() >= deadline {
                            break;
                        }
                        // Retry-After is whole seconds; a busy gateway frees memory sooner.
                        thread::sleep(Duration::from_millis(200));
                    }
                }
                Ok((statuses, wire))
            })
        })
        .collect();
    let mut counts: std::collections::BTreeMap<u16, u64> = Default::default();
    let mut wire = 0;
    for h in handles {
        let (statuses, w) = h.join().map_err(|_| "a client thread panicked")??;
        for s in statuses {
            *counts.entry(s).or_default() += 1;
        }
        wire = wire.max(w);
    }
    let seconds = start.elapsed().as_secs_f64();
    let peak = proc_status_kib(pid, "VmHWM")?;
    let rss_end = proc_status_kib(pid, "VmRSS")?;
    thread::sleep(Duration::from_secs(after));
    let rss_after = proc_status_kib(pid, "VmRSS")?;
    println!("commits={}", counts.get(&200).copied().unwrap_or(0));
    let answers: Vec<String> = counts.iter().map(|(k, v)| format!("{v}×{k}")).collect();
    println!("answers={}", answers.join(" "));
    println!("inflated_bytes={inflated}");
    println!("wire_bytes={wire}");
    println!("seconds={seconds:.3}");
    println!("rss_before_kib={rss_before}");
    println!("rss_peak_kib={peak}");
    println!("rss_end_kib={rss_end}");
    println!("rss_after_kib={rss_after}");
    println!("after_s={after}");
    Ok(())
}

// ---------------------------------------------------------------------------
// InfluxDB's write API: k6-shaped line protocol
// ---------------------------------------------------------------------------

/// The HTTP metrics k6 records for every request, each a point of its own with the request's
/// tags (`value` is a float; `http_reqs` counts 1, `http_req_failed` is 0 or 1).
const K6_HTTP_METRICS: [&str; 9] = [
    "http_reqs",
    "http_req_duration",
    "http_req_blocked",
    "http_req_connecting",
    "http_req_tls_handshaking",
    "http_req_sending",
    "http_req_waiting",
    "http_req_receiving",
    "http_req_failed",
];

/// The metrics k6 records once per iteration, tagged with the scenario only.
const K6_ITERATION_METRICS: [&str; 4] = [
    "data_sent",
    "data_received",
    "iteration_duration",
    "iterations",
];

/// An endpoint of a k6 scenario: method, URL (also the `name` tag, as k6 sets it), protocol.
type K6Endpoint = (&'static str, &'static str, &'static str);

/// The scenarios of the k6-shaped load and their endpoints.
const K6_SCENARIOS: [(&str, [K6Endpoint; 5]); 2] = [
    (
        "browse",
        [
            ("GET", "https://test.k6.io/", "HTTP/1.1"),
            ("GET", "https://test.k6.io/news.php", "HTTP/1.1"),
            ("GET", "https://test.k6.io/contacts.php", "HTTP/1.1"),
            ("GET", "https://test.k6.io/pi.php?decimals=3", "HTTP/1.1"),
            ("GET", "https://test.k6.io/static/favicon.ico", "HTTP/1.1"),
        ],
    ),
    (
        "checkout",
        [
            ("POST", "https://test.k6.io/login.php", "HTTP/1.1"),
            ("GET", "https://test.k6.io/my_messages.php", "HTTP/1.1"),
            (
                "GET",
                "https://test-api.k6.io/public/crocodiles/",
                "HTTP/2.0",
            ),
            ("POST", "https://test-api.k6.io/my/crocodiles/", "HTTP/2.0"),
            (
                "DELETE",
                "https://test-api.k6.io/my/crocodiles/1/",
                "HTTP/2.0",
            ),
        ],
    ),
];

/// The statuses a request ends with, and how often in 1 000: mostly 200, a few errors. Each
/// endpoint and status is a series of each HTTP metric.
const K6_STATUSES: [(u16, u64); 3] = [(200, 960), (404, 25), (503, 15)];

/// The checks of each scenario (`check` tag, with spaces as k6 users name them).
const K6_CHECKS: [&str; 2] = ["status is 200", "body is not empty"];

/// Requests per iteration of a virtual user.
const K6_REQUESTS_PER_ITERATION: u64 = 5;

/// Escapes a line protocol tag value (commas, equals signs, spaces).
fn lp_tag(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, ',' | '=' | ' ' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Series of the k6-shaped load: HTTP metrics × endpoints × statuses, iteration metrics and
/// checks per scenario, `vus` and `vus_max`. 284 with the tables above: a few hundred, as a
/// k6 test of ten endpoints makes, far below a token's series budget.
fn k6_series() -> usize {
    let endpoints: usize = K6_SCENARIOS.iter().map(|(_, e)| e.len()).sum();
    K6_HTTP_METRICS.len() * endpoints * K6_STATUSES.len()
        + K6_SCENARIOS.len() * (K6_ITERATION_METRICS.len() + K6_CHECKS.len())
        + 2
}

/// An endless stream of line protocol shaped like k6's InfluxDB output: per HTTP request nine
/// points with its tags (`expected_response`, `method`, `name`, `proto`, `scenario`, `status`,
/// `tls_version`, `url`, sorted as InfluxDB's client sorts them), per iteration four more and
/// its checks, and now and then `vus` and `vus_max`; every value a float `value=`, every time in
/// nanoseconds. Times rise with each request and never repeat across streams with distinct
/// `stream` numbers, so no point overwrites another.
struct K6Lines {
    /// xorshift64 state: values, statuses, endpoints.
    rng: u64,
    stream: u64,
    streams: u64,
    start_ns: u64,
    /// Requests made so far.
    seq: u64,
    /// The tags of each (scenario, endpoint, status), joined, after the measurement's name.
    tags: Vec<Vec<Vec<String>>>,
    pending: std::collections::VecDeque<String>,
}

impl K6Lines {
    /// Stream `stream` of `streams` (each client thread its own), from the current time.
    fn new(stream: u64, streams: u64) -> K6Lines {
        let tags = K6_SCENARIOS
            .iter()
            .map(|(scenario, endpoints)| {
                endpoints
                    .iter()
                    .map(|(method, url, proto)| {
                        K6_STATUSES
                            .iter()
                            .map(|(status, _)| {
                                format!(
                                    "expected_response={},method={method},name={url},proto={proto},scenario={scenario},status={status},tls_version=tls1.3,url={url}",
                                    *status < 400,
                                    url = lp_tag(url),
                                    proto = lp_tag(proto),
                                )
                            })
                            .collect()
                    })
                    .collect()
            })
            .collect();
        K6Lines {
            rng: 0x9e37_79b9_7f4a_7c15 ^ (stream + 1).wrapping_mul(0xbf58_476d_1ce4_e5b9),
            stream,
            streams: streams.max(1),
            start_ns: now_ns(),
            seq: 0,
            tags,
            pending: Default::default(),
        }
    }

    fn random(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    /// A value as k6 writes a float: the shortest text that reads back the same.
    fn value(&mut self, below: u64) -> f64 {
        (self.random() % (below * 1000)) as f64 / 1000.0
    }

    /// The next request's time: 1 µs steps per stream, interleaved, with nanoseconds below.
    fn time(&mut self) -> u64 {
        let jitter = self.random() % 1000;
        self.start_ns + (self.seq * self.streams + self.stream) * 1000 + jitter
    }

    /// The lines of one HTTP request, and of its iteration's end every few requests.
    fn refill(&mut self) {
        let t = self.time();
        let s = (self.random() % K6_SCENARIOS.len() as u64) as usize;
        let e = (self.random() % K6_SCENARIOS[s].1.len() as u64) as usize;
        let mut pick = self.random() % 1000;
        let mut st = 0;
        while st + 1 < K6_STATUSES.len() && pick >= K6_STATUSES[st].1 {
            pick -= K6_STATUSES[st].1;
            st += 1;
        }
        let failed = K6_STATUSES[st].0 >= 400;
        for metric in K6_HTTP_METRICS {
            let value = match metric {
                "http_reqs" => 1.0,
                "http_req_failed" => f64::from(u8::from(failed)),
                "http_req_duration" | "http_req_waiting" => self.value(900),
                _ => self.value(5),
            };
            let line = format!("{metric},{} value={value} {t}\n", self.tags[s][e][st]);
            self.pending.push_back(line);
        }
        self.seq += 1;
        if self.seq.is_multiple_of(K6_REQUESTS_PER_ITERATION) {
            let scenario = K6_SCENARIOS[s].0;
            for metric in K6_ITERATION_METRICS {
                let value = match metric {
                    "iterations" => 1.0,
                    "iteration_duration" => self.value(5000),
                    _ => (self.random() % 50_000) as f64,
                };
                self.pending
                    .push_back(format!("{metric},scenario={scenario} value={value} {t}\n"));
            }
            for check in K6_CHECKS {
                self.pending.push_back(format!(
                    "checks,check={},scenario={scenario} value={} {t}\n",
                    lp_tag(check),
                    u8::from(!failed)
                ));
            }
        }
        if self.seq.is_multiple_of(100) {
            self.pending.push_back(format!("vus value=20 {t}\n"));
            self.pending.push_back(format!("vus_max value=20 {t}\n"));
        }
    }

    /// `n` lines, appended to `out`.
    fn fill(&mut self, out: &mut Vec<u8>, n: usize) {
        for _ in 0..n {
            if self.pending.is_empty() {
                self.refill();
            }
            if let Some(line) = self.pending.pop_front() {
                out.extend_from_slice(line.as_bytes());
            }
        }
    }

    /// One line of every series (each endpoint with each status, then the iteration's,
    /// the checks', `vus` and `vus_max`): written first, so every run meets the series made.
    fn every_series(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        let t = self.time();
        self.seq += 1;
        for (s, (scenario, endpoints)) in K6_SCENARIOS.iter().enumerate() {
            for e in 0..endpoints.len() {
                for st in 0..K6_STATUSES.len() {
                    for metric in K6_HTTP_METRICS {
                        out.extend_from_slice(
                            format!("{metric},{} value=1 {t}\n", self.tags[s][e][st]).as_bytes(),
                        );
                    }
                }
            }
            for metric in K6_ITERATION_METRICS {
                out.extend_from_slice(
                    format!("{metric},scenario={scenario} value=1 {t}\n").as_bytes(),
                );
            }
            for check in K6_CHECKS {
                out.extend_from_slice(
                    format!(
                        "checks,check={},scenario={scenario} value=1 {t}\n",
                        lp_tag(check)
                    )
                    .as_bytes(),
                );
            }
        }
        out.extend_from_slice(format!("vus value=20 {t}\nvus_max value=20 {t}\n").as_bytes());
        out
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Where and how line protocol is written: `POST /write?db=D&precision=ns` to influxd or to
/// the gateway, with the gateway's token as `Authorization: Token T`.
#[derive(Clone)]
struct LpTarget {
    addr: SocketAddr,
    path: String,
    /// `Authorization: Token …` (and the gzip header when the bodies are gzip'd), CRLF-ended.
    headers: String,
    /// Header lines of the run routes' `/apiv0.1/states`, which takes the token as Bearer.
    states_headers: String,
}

impl LpTarget {
    fn from_args(args: &mut pico_args::Arguments, gzip: bool) -> Result<LpTarget> {
        let addr = resolve(&opt::<String>(args, "--addr")?)?;
        let db: String = opt(args, "--db")?;
        let token: Option<String> = args
            .opt_value_from_str("--token")
            .map_err(|e| format!("--token: {e}"))?;
        let mut headers = String::new();
        let mut states_headers = String::new();
        if let Some(t) = &token {
            headers.push_str(&format!("Authorization: Token {t}\r\n"));
            states_headers.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        if gzip {
            headers.push_str("Content-Encoding: gzip\r\n");
        }
        Ok(LpTarget {
            addr,
            path: format!("/write?db={db}&precision=ns"),
            headers,
            states_headers,
        })
    }

    /// Writes one body; anything but 204 is an error that says what was answered, for the run
    /// to stop on: a figure made of refused writes would be no figure.
    fn write(&self, client: &mut Client, body: &[u8]) -> Result<()> {
        let a = client.send_with(
            "POST",
            &self.path,
            "text/plain; charset=utf-8",
            &self.headers,
            body,
        )?;
        if a.status != 204 {
            return Err(format!(
                "POST {} on {} answered {} {} (a write must be answered 204)",
                self.path,
                self.addr,
                a.status,
                String::from_utf8_lossy(&a.body).trim()
            ));
        }
        Ok(())
    }

    /// Waits until the gateway's log holds nothing undelivered (`spool.records` of
    /// `/apiv0.1/states` is 0), polling every 50 ms, `limit` at most; returns how long it took.
    /// Records in the dead letters (`dead_letters.records`) are an error: their points did
    /// not reach InfluxDB.
    fn wait_delivered(&self, limit: Duration) -> Result<Duration> {
        let started = Instant::now();
        let mut client = Client::new(self.addr);
        loop {
            let a = client.send_with(
                "GET",
                "/apiv0.1/states",
                "application/json",
                &self.states_headers,
                b"",
            )?;
            a.expect(200, "GET /apiv0.1/states")?;
            let v: serde_json::Value =
                serde_json::from_slice(&a.body).map_err(|e| format!("/apiv0.1/states: {e}"))?;
            let waiting = v["spool"]["records"]
                .as_u64()
                .ok_or("/apiv0.1/states has no spool.records")?;
            if waiting == 0 {
                // A record the deliverer gave up on is delivered too, to the dead letters.
                let dead = v["dead_letters"]["records"].as_u64().unwrap_or(0);
                if dead > 0 {
                    return Err(format!(
                        "{dead} records in the gateway's dead letters: not every point reached InfluxDB"
                    ));
                }
                return Ok(started.elapsed());
            }
            if started.elapsed() >= limit {
                return Err(format!(
                    "{waiting} records still undelivered {} s after the load",
                    limit.as_secs()
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Bodies of `lines` k6-shaped lines each, `pool` of them, gzip'd: made before the clock
/// starts, so the load generator's compression is not in the figures. Also the bytes of a body
/// inflated, on average.
fn k6_pool(pool: usize, lines: usize) -> (Vec<Vec<u8>>, usize) {
    let mut stream = K6Lines::new(0, 1);
    let mut inflated = 0;
    let bodies = (0..pool)
        .map(|_| {
            let mut body = Vec::with_capacity(lines * 200);
            stream.fill(&mut body, lines);
            inflated += body.len();
            gzip(&body)
        })
        .collect();
    (bodies, inflated / pool.max(1))
}

/// Drives line protocol writes; see the header.
fn cmd_lp_write(args: &mut pico_args::Arguments) -> Result<()> {
    let gzip_bodies = args.contains("--gzip");
    let target = LpTarget::from_args(args, gzip_bodies)?;
    let lines: usize = opt_or(args, "--lines", 5000)?;
    let concurrency: usize = opt_or(args, "--concurrency", 4)?;
    let requests: u64 = opt_or(args, "--requests", 1000)?;
    let max_seconds: f64 = opt_or(args, "--max-seconds", 10.0)?;
    let pool: usize = opt_or(args, "--pool", 32)?;
    let pid: Option<u32> = args
        .opt_value_from_str("--pid")
        .map_err(|e| format!("--pid: {e}"))?;
    let influxd_pid: Option<u32> = args
        .opt_value_from_str("--influxd-pid")
        .map_err(|e| format!("--influxd-pid: {e}"))?;
    let wait_delivered = args.contains("--wait-delivered");
    let drain_seconds: u64 = opt_or(args, "--drain-seconds", 120)?;

    // Every series once, before the clock: the first write of a series costs InfluxDB more,
    // and each side meets the series made.
    let mut warm = Client::new(target.addr);
    let first = K6Lines::new(0, 1).every_series();
    let first = if gzip_bodies { gzip(&first) } else { first };
    target.write(&mut warm, &first)?;
    drop(warm);
    let (bodies, inflated) = if gzip_bodies {
        k6_pool(pool.max(1), lines)
    } else {
        (Vec::new(), 0)
    };
    let bodies = Arc::new(bodies);
    let wire: usize = bodies.iter().map(Vec::len).sum::<usize>() / bodies.len().max(1);

    let next = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let barrier = Arc::new(Barrier::new(concurrency + 1));
    let handles: Vec<_> = (0..concurrency)
        .map(|i| {
            let (next, stop, barrier, bodies, target) = (
                Arc::clone(&next),
                Arc::clone(&stop),
                Arc::clone(&barrier),
                Arc::clone(&bodies),
                target.clone(),
            );
            thread::spawn(move || -> Result<Vec<u64>> {
                let mut client = Client::new(target.addr);
                let mut stream = K6Lines::new(i as u64 + 1, concurrency as u64 + 1);
                let mut body = Vec::new();
                let mut times = Vec::new();
                let connected = client.connect().map(|_| ());
                barrier.wait();
                connected?;
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if stop.load(Ordering::Relaxed) || n >= requests {
                        return Ok(times);
                    }
                    let body = if bodies.is_empty() {
                        body.clear();
                        stream.fill(&mut body, lines);
                        &body
                    } else {
                        &bodies[n as usize % bodies.len()]
                    };
                    let t0 = Instant::now();
                    if let Err(e) = target.write(&mut client, body) {
                        stop.store(true, Ordering::Relaxed);
                        return Err(e);
                    }
                    times.push(t0.elapsed().as_nanos() as u64);
                }
            })
        })
        .collect();
    let cpu_before = pid.map(process_cpu_ns).transpose()?;
    let influxd_before = influxd_pid.map(process_cpu_ns).transpose()?;
    barrier.wait();
    let start = Instant::now();
    let limit = Duration::from_secs_f64(max_seconds);
    while !handles.iter().all(|h| h.is_finished()) {
        if start.elapsed() >= limit {
            stop.store(true, Ordering::Relaxed);
        }
        thread::sleep(Duration::from_millis(5));
    }
    let wall = start.elapsed();
    let mut times = Vec::new();
    for h in handles {
        times.extend(h.join().map_err(|_| "a client thread panicked")??);
    }
    let drained = if wait_delivered {
        Some(target.wait_delivered(Duration::from_secs(drain_seconds))?)
    } else {
        None
    };
    let cpu_after = pid.map(process_cpu_ns).transpose()?;
    let influxd_after = influxd_pid.map(process_cpu_ns).transpose()?;

    let done = times.len() as u64;
    let points = done * lines as u64;
    let seconds = wall.as_secs_f64();
    println!("requests={done}");
    println!("lines_per_request={lines}");
    println!("series={}", k6_series());
    println!("points={points}");
    println!("stopped_early={}", done < requests);
    println!("seconds={seconds:.3}");
    println!("requests_per_s={:.1}", done as f64 / seconds);
    println!("points_per_s={:.0}", points as f64 / seconds);
    if gzip_bodies {
        println!("wire_bytes_per_request={wire}");
        println!("inflated_bytes_per_request={inflated}");
    }
    print_percentiles("request", &mut times);
    if let Some(d) = drained {
        println!("delivered_after_s={:.3}", d.as_secs_f64());
        println!(
            "delivered_points_per_s={:.0}",
            points as f64 / (seconds + d.as_secs_f64())
        );
    }
    let per_1000 = |a: u64, b: u64| (b - a) as f64 / 1e6 / points.max(1) as f64 * 1000.0;
    if let (Some(a), Some(b), Some(p)) = (cpu_before, cpu_after, pid) {
        println!("server_cpu_ms_per_1000_lines={:.3}", per_1000(a, b));
        println!("server_rss_after_kib={}", proc_status_kib(p, "VmRSS")?);
    }
    if let (Some(a), Some(b)) = (influxd_before, influxd_after) {
        println!("influxd_cpu_ms_per_1000_lines={:.3}", per_1000(a, b));
    }
    Ok(())
}

/// Drives the k6-shaped memory check; see the header.
fn cmd_k6_soak(args: &mut pico_args::Arguments) -> Result<()> {
    let target = LpTarget::from_args(args, true)?;
    let pid: u32 = opt(args, "--pid")?;
    let seconds: u64 = opt_or(args, "--seconds", 600)?;
    let lines: usize = opt_or(args, "--lines", 5000)?;
    let concurrency: usize = opt_or(args, "--concurrency", 4)?;
    let per_second: f64 = opt_or(args, "--batches-per-second", 1.0)?;
    let every: u64 = opt_or(args, "--sample-every", 10)?;
    let max_growth: u64 = opt_or(args, "--max-growth-kib", 2048)?;
    if seconds < 2 * every {
        return Err(format!(
            "--seconds {seconds}: give at least two --sample-every ({every} s)"
        ));
    }

    let mut warm = Client::new(target.addr);
    target.write(&mut warm, &gzip(&K6Lines::new(0, 1).every_series()))?;
    drop(warm);

    let next = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let late = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let end = start + Duration::from_secs(seconds);
    let handles: Vec<_> = (0..concurrency)
        .map(|i| {
            let (next, stop, late, target) = (
                Arc::clone(&next),
                Arc::clone(&stop),
                Arc::clone(&late),
                target.clone(),
            );
            thread::spawn(move || -> Result<u64> {
                let mut client = Client::new(target.addr);
                let mut stream = K6Lines::new(i as u64 + 1, concurrency as u64 + 1);
                let mut sent = 0;
                let mut body = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    // Batch n is due at n / rate seconds; a free connection takes the next.
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    let due = start + Duration::from_secs_f64(n as f64 / per_second);
                    if due >= end {
                        break;
                    }
                    let now = Instant::now();
                    if due > now {
                        thread::sleep(due - now);
                    } else if now - due > Duration::from_secs(1) {
                        late.fetch_add(1, Ordering::Relaxed);
                    }
                    body.clear();
                    stream.fill(&mut body, lines);
                    if let Err(e) = target.write(&mut client, &gzip(&body)) {
                        stop.store(true, Ordering::Relaxed);
                        return Err(e);
                    }
                    sent += 1;
                }
                Ok(sent)
            })
        })
        .collect();

    let mut samples: Vec<(u64, u64)> = Vec::new();
    let mut out = io::stdout();
    for k in 0..=seconds / every {
        let at = start + Duration::from_secs(k * every);
        while Instant::now() < at && !stop.load(Ordering::Relaxed) {
            thread::sleep(
                Duration::from_millis(100).min(at.saturating_duration_since(Instant::now())),
            );
        }
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let rss = proc_status_kib(pid, "VmRSS")?;
        samples.push((k * every, rss));
        let _ = writeln!(out, "rss_sample={},{rss}", k * every);
        let _ = out.flush();
    }
    stop.store(true, Ordering::Relaxed);
    let mut batches = 0;
    for h in handles {
        batches += h.join().map_err(|_| "a client thread panicked")??;
    }

    // The windows compared: a minute, or a quarter of a shorter run.
    let window = (seconds / 4).clamp(every, 60);
    let mean = |from: u64, to: u64| -> u64 {
        let in_window: Vec<u64> = samples
            .iter()
            .filter(|(t, _)| *t >= from && *t <= to)
            .map(|(_, r)| *r)
            .collect();
        in_window.iter().sum::<u64>() / (in_window.len().max(1) as u64)
    };
    let last_t = samples.last().map_or(0, |(t, _)| *t);
    let half = last_t / 2;
    let first = mean(0, window);
    let mid = mean(half.saturating_sub(window), half);
    let last = mean(last_t.saturating_sub(window), last_t);
    let growth = last.saturating_sub(mid);
    println!("batches={batches}");
    println!("lines={}", batches * lines as u64);
    println!("late_batches={}", late.load(Ordering::Relaxed));
    println!("window_s={window}");
    println!("rss_first_window_kib={first}");
    println!("rss_mid_window_kib={mid}");
    println!("rss_last_window_kib={last}");
    println!("rss_first_to_last_kib={}", last as i64 - first as i64);
    println!("rss_last_half_growth_kib={growth}");
    println!("max_growth_kib={max_growth}");
    if growth > max_growth {
        return Err(format!(
            "resident memory grew by {growth} KiB in the last half (the mean of the last {window} s against the {window} s before half-time), more than --max-growth-kib {max_growth}"
        ));
    }
    Ok(())
}
