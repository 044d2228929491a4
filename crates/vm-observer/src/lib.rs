//! beamvm's web observer: live charts, process pages, JSON and Prometheus metrics,
//! served by a small HTTP server on native threads.
//!
//! Why native: the page must keep answering when every scheduler runs busy Python
//! processes, and those hold the GIL in batches; a Python thread would wait for the
//! GIL (seconds, measured) before it could even read a request. Here nothing in the
//! request path touches Python: the server threads ([`http`]) read vm-core's published
//! counters and walk its process table lock-free ([`vm_core::VmRef::census`]).
//!
//! Routes:
//!
//! | path | what |
//! |---|---|
//! | `/` | the page: charts (scheduler utilisation, run queues, memory, processes, reductions/s, messages/s), top tables, dirty pools, long_schedule events |
//! | `/process?pid=<0.5.0>` | a process's page |
//! | `/api/snapshot?n=10` | one snapshot ([`snapshot`]) |
//! | `/api/process?pid=<0.5.0>&sample=20` | one process ([`process`]) |
//! | `/metrics` | Prometheus text ([`metrics`]) |
//!
//! Two back ends answer the data routes: [`Local`] (this process runs the VM) and
//! [`relay::Relay`] (another process does; requests go over its observer socket and
//! are answered there by [`Local::answer`]). The page's files are compiled in
//! ([`assets`]): no build step, nothing to install next to the library.
//!
//! Invariants: no request waits without a deadline (the HTTP layer's timeouts, the
//! process page's [`process::LOCK_WAIT`]); snapshots are cached for
//! [`SNAPSHOT_TTL`], so however many pages poll, the VM does at most a few table walks
//! per second.

pub mod assets;
pub mod http;
pub mod metrics;
pub mod process;
pub mod relay;
pub mod render;
pub mod snapshot;

use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vm_core::VmRef;

pub use http::{HttpServer, Reply, Request};
pub use process::{Frame, StackTraceFn};

/// How long a snapshot is reused: pages poll every second, so several open pages (or
/// a page and a `top`) share one table walk instead of each paying for one.
pub const SNAPSHOT_TTL: Duration = Duration::from_millis(250);
/// Processes listed per category by default.
pub const DEFAULT_N: usize = 10;
/// The most processes per category a client may ask for (as the socket observer).
pub const MAX_N: usize = 1000;

/// Finds the running VM, if any (the server outlives VM starts and stops).
pub type VmSource = Arc<dyn Fn() -> Option<VmRef> + Send + Sync>;

/// Answers the data routes from a VM in this process.
pub struct Local {
    vm: VmSource,
    stacktrace: Option<StackTraceFn>,
    cache: Mutex<Option<Cached>>,
}

/// A snapshot body, when it was made and for which `n`.
struct Cached {
    at: Instant,
    n: usize,
    body: Arc<Vec<u8>>,
}

impl Local {
    /// A back end reading the VM that `vm` returns; `stacktrace` reads a process's
    /// stack for its page (None: the page's stack trace slot says "not available").
    pub fn new(vm: VmSource, stacktrace: Option<StackTraceFn>) -> Local {
        Local {
            vm,
            stacktrace,
            cache: Mutex::new(None),
        }
    }

    fn snapshot_body(&self, v: &VmRef, n: usize) -> Arc<Vec<u8>> {
        let mut c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(hit) = c.as_ref() {
            if hit.n == n && hit.at.elapsed() < SNAPSHOT_TTL {
                return hit.body.clone();
            }
        }
        let body = Arc::new(snapshot::snapshot(v, n).to_string().into_bytes());
        *c = Some(Cached {
            at: Instant::now(),
            n,
            body: body.clone(),
        });
        body
    }

    /// Answers a data route (`/api/...`, `/metrics`); 404 for anything else.
    pub fn answer(&self, req: &Request) -> Reply {
        let vm = (self.vm)();
        match req.path.as_str() {
            "/metrics" => Reply::new(200, metrics::CONTENT_TYPE, metrics::render(vm.as_ref())),
            "/api/snapshot" => {
                let n = match count_param(req, "n", DEFAULT_N, MAX_N) {
                    Ok(n) => n,
                    Err(e) => return Reply::error(400, e),
                };
                match vm {
                    Some(v) => Reply::new(
                        200,
                        "application/json",
                        self.snapshot_body(&v, n).as_slice(),
                    ),
                    None => Reply::json(200, &snapshot::not_running()),
                }
            }
            "/api/process" => {
                let pid = match req.param("pid").map(process::parse_pid) {
                    Some(Ok(p)) => p,
                    Some(Err(e)) => return Reply::error(400, e),
                    None => return Reply::error(400, "pid is missing: /api/process?pid=<0.5.0>"),
                };
                let sample = match count_param(
                    req,
                    "sample",
                    process::DEFAULT_SAMPLE,
                    process::MAX_SAMPLE,
                ) {
                    Ok(n) => n,
                    Err(e) => return Reply::error(400, e),
                };
                let Some(v) = vm else {
                    return Reply::error(503, "the VM is not running");
                };
                match process::process_json(&v, pid, sample, self.stacktrace.as_ref()) {
                    Some(j) => Reply::json(200, &j),
                    None => Reply::json(
                        404,
                        &serde_json::json!({
                            "error": format!("{pid} is not alive"),
                            "pid": pid.to_string(),
                            "alive": false,
                        }),
                    ),
                }
            }
            other => Reply::error(404, format!("no such page: {other}")),
        }
    }
}

fn count_param(req: &Request, key: &str, default: usize, max: usize) -> Result<usize, String> {
    match req.param(key) {
        None => Ok(default),
        Some(s) => match s.parse::<usize>() {
            Ok(n) if n <= max => Ok(n),
            _ => Err(format!(
                "{key} must be an int between 0 and {max}, got {s:?}"
            )),
        },
    }
}

/// Where the data routes are answered.
pub enum Backend {
    /// The VM runs in this process.
    Local(Local),
    /// Another process runs it; forward to its observer socket.
    Relay(relay::Relay),
}

/// The request handler: the page's files, then the back end's data routes.
pub fn handler(backend: Backend) -> http::Handler {
    Arc::new(move |req: &Request| {
        if let Some(r) = assets::get(&req.path) {
            return r;
        }
        match &backend {
            Backend::Local(l) => l.answer(req),
            Backend::Relay(r) if is_data_route(&req.path) => r.answer(req),
            Backend::Relay(_) => Reply::error(404, format!("no such page: {}", req.path)),
        }
    })
}

fn is_data_route(path: &str) -> bool {
    path == "/metrics" || path.starts_with("/api/")
}

/// Binds `host:port` (port 0: the OS picks one) and serves `backend` there. A bind
/// error is returned as the OS gave it (its errno intact); say which address failed
/// when reporting it.
pub fn serve(host: &str, port: u16, backend: Backend) -> std::io::Result<HttpServer> {
    let listener = TcpListener::bind((host, port))?;
    HttpServer::start(listener, handler(backend))
}
