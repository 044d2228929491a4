//! One process's page: `/api/process?pid=<0.5.0>`.
//!
//! `process_info` (when the process's lock can be taken within [`LOCK_WAIT`]: a
//! process in a long slice is described by its published counters only, and the page
//! says so), its links and monitors, a sample of its queue, and its current stack
//! trace when a [`StackTraceFn`] is installed.
//!
//! The stack trace of a Python process comes from the provider the Python binding
//! installs (vm-python's `stacktrace.rs`, `process_info(pid, "current_stacktrace")`);
//! without one, `current_stacktrace` is null and the page shows the slot as not
//! available. A provider returns the frames innermost last, or None when the
//! process has no Python stack (a native process) or it could not be read in time.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use vm_core::{Pid, VmRef};

/// How long the process page waits for a running process's lock before answering
/// from the published counters: long enough to catch the gap between two slices of a
/// busy process, short enough that the page never feels stuck.
pub const LOCK_WAIT: Duration = Duration::from_millis(100);
/// Queued messages shown by default, and the most a client may ask for.
pub const DEFAULT_SAMPLE: usize = 20;
/// The most queued messages a client may ask for.
pub const MAX_SAMPLE: usize = 200;

/// One frame of a process's stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Module name (`__name__` of the frame's globals).
    pub module: String,
    /// Qualified function name.
    pub function: String,
    /// Source file.
    pub file: String,
    /// Line being executed.
    pub line: u32,
}

/// Reads a process's current stack trace (see the module docs).
pub type StackTraceFn = Arc<dyn Fn(Pid) -> Option<Vec<Frame>> + Send + Sync>;

/// Parses `<0.5.0>` (or `0.5.0`) into a local pid.
pub fn parse_pid(s: &str) -> Result<Pid, String> {
    let bad = || format!("pid {s:?} is not a local pid such as <0.5.0>");
    let inner = s.trim();
    let inner = inner
        .strip_prefix('<')
        .and_then(|x| x.strip_suffix('>'))
        .unwrap_or(inner);
    let mut parts = inner.split('.');
    let (Some(node), Some(index), Some(serial), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    if node != "0" {
        return Err(bad());
    }
    let index: u32 = index.parse().map_err(|_| bad())?;
    let serial: u32 = serial.parse().map_err(|_| bad())?;
    Ok(Pid::new(index, serial))
}

fn pids(v: &[Pid]) -> Value {
    Value::Array(v.iter().map(|p| json!(p.to_string())).collect())
}

/// The process's JSON, or None if it is not alive.
pub fn process_json(
    v: &VmRef,
    pid: Pid,
    sample: usize,
    stacktrace: Option<&StackTraceFn>,
) -> Option<Value> {
    let t0 = std::time::Instant::now();
    let d = v.process_detail(pid, sample, LOCK_WAIT, &crate::render::message)?;
    let s = &d.summary;
    let info = d.info.as_ref().map(|i| {
        json!({
            "status": i.status,
            "priority": i.priority,
            "reductions": i.reductions,
            "message_queue_len": i.message_queue_len,
            "memory": i.memory,
            "heap_size": i.heap_size,
            "young_heap_size": i.young_heap_size,
            "old_heap_size": i.old_heap_size,
            "minor_gcs": i.minor_gcs,
            "major_gcs": i.major_gcs,
            "links": pids(&i.links),
            "monitors": pids(&i.monitors),
            "monitored_by": pids(&i.monitored_by),
            "trap_exit": i.trap_exit,
            "registered_name": i.registered_name.map(|a| a.as_str().to_owned()),
            "current_function": i.current,
        })
    });
    let stack = stacktrace.and_then(|f| f(pid)).map(|frames| {
        frames
            .iter()
            .map(|f| {
                json!({"module": f.module, "function": f.function, "file": f.file, "line": f.line})
            })
            .collect::<Vec<_>>()
    });
    Some(json!({
        "pid": pid.to_string(),
        "alive": true,
        "summary": {
            "status": s.status,
            "priority": s.priority,
            "reductions": s.reductions,
            "message_queue_len": s.message_queue_len,
            "memory": s.memory,
            "registered_name": s.registered_name.map(|a| a.as_str().to_owned()),
            "current": s.current,
        },
        "locked": d.info.is_some(),
        "info": info,
        "queue_sample": d.queue_sample,
        "in_transit": d.in_transit,
        "stacktrace_available": stacktrace.is_some(),
        "current_stacktrace": stack,
        "took": crate::snapshot::secs(t0.elapsed()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pids_parse_with_or_without_brackets() {
        assert_eq!(parse_pid("<0.5.0>"), Ok(Pid::new(5, 0)));
        assert_eq!(parse_pid(" 0.17.3 "), Ok(Pid::new(17, 3)));
        for bad in [
            "",
            "<>",
            "<1.5.0>",
            "<0.5>",
            "<0.5.0.1>",
            "<0.-1.0>",
            "<0.x.0>",
            "<0.99999999999.0>",
        ] {
            let e = parse_pid(bad).unwrap_err();
            assert!(e.contains("<0.5.0>"), "{bad:?}: {e}");
        }
    }
}
