//! VM settings, mirroring `erl`'s flags, settable in code and from the environment.

use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::scheduler::SliceHook;

/// Default process limit: `erl +P` default.
pub const DEFAULT_PROCESS_LIMIT: usize = 262_144;
/// Default reductions per slice: BEAM's `CONTEXT_REDS`.
pub const DEFAULT_REDUCTIONS: u32 = 4000;
/// Default dirty IO pool size, as `erl +SDio`.
pub const DEFAULT_DIRTY_IO: usize = 10;
/// Longest time a scheduler keeps a [`SliceHook`] batch (the GIL) open while it runs
/// native slices between hooked ones. Consecutive hooked slices keep it regardless:
/// CPython's switch interval hands the GIL to waiting threads (see the scheduler's
/// `run_batch`).
pub const DEFAULT_BATCH_TIME: Duration = Duration::from_millis(2);
/// Stack size of scheduler and dirty-pool threads. Python processes resume nested
/// generators recursively on the C stack (a compiled call chain N deep is N native
/// frames), and terms are converted recursively; the default 2 MiB of a Rust thread is
/// too little for Python's own recursion limit. Address space only: pages are committed
/// as they are touched.
pub const THREAD_STACK_SIZE: usize = 64 << 20;
/// Default long-schedule threshold (a slice running longer is reported).
pub const DEFAULT_LONG_SCHEDULE: Duration = Duration::from_millis(10);

/// Settings for [`Vm::start`](crate::Vm::start).
#[derive(Clone)]
pub struct VmConfig {
    /// Scheduler threads (`+S N`). Default: available cores.
    pub schedulers: usize,
    /// Schedulers taking work (`+S N:M`'s M). Default: all.
    pub schedulers_online: usize,
    /// Most live processes (`+P`).
    pub process_limit: usize,
    /// Reductions per slice.
    pub reductions: u32,
    /// Dirty CPU pool threads (`+SDcpu`). Default: schedulers.
    pub dirty_cpu: usize,
    /// Dirty IO pool threads (`+SDio`).
    pub dirty_io: usize,
    /// See [`SliceHook`].
    pub slice_hook: Option<Arc<dyn SliceHook>>,
    /// See [`DEFAULT_BATCH_TIME`].
    pub batch_time: Duration,
    /// Slices longer than this are reported as long_schedule.
    pub long_schedule: Duration,
    /// Idle schedulers call the embedder's idle hook ([`crate::set_idle_hook`]: the
    /// Python binding returns free memory to the OS). Default: on.
    pub idle_release: bool,
}

impl Default for VmConfig {
    fn default() -> Self {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        VmConfig {
            schedulers: cores,
            schedulers_online: cores,
            process_limit: DEFAULT_PROCESS_LIMIT,
            reductions: DEFAULT_REDUCTIONS,
            dirty_cpu: cores,
            dirty_io: DEFAULT_DIRTY_IO,
            slice_hook: None,
            batch_time: DEFAULT_BATCH_TIME,
            long_schedule: DEFAULT_LONG_SCHEDULE,
            idle_release: true,
        }
    }
}

fn env_usize(name: &str) -> Result<Option<usize>> {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse::<usize>()
            .map(Some)
            .map_err(|_| Error::BadArg(format!("{name}={v:?} is not a non-negative integer"))),
        Err(_) => Ok(None),
    }
}

impl VmConfig {
    /// Defaults overridden by `BEAMVM_SCHEDULERS` (`N` or `N:M`), `BEAMVM_PROCESS_LIMIT`,
    /// `BEAMVM_REDUCTIONS`, `BEAMVM_DIRTY_CPU`, `BEAMVM_DIRTY_IO`.
    pub fn from_env() -> Result<VmConfig> {
        let mut c = VmConfig::default();
        if let Ok(s) = std::env::var("BEAMVM_SCHEDULERS") {
            let (n, m) = match s.split_once(':') {
                Some((n, m)) => (n.trim(), Some(m.trim())),
                None => (s.trim(), None),
            };
            let bad = || Error::BadArg(format!("BEAMVM_SCHEDULERS={s:?}: expected N or N:M"));
            c.schedulers = n.parse().map_err(|_| bad())?;
            c.schedulers_online = match m {
                Some(m) => m.parse().map_err(|_| bad())?,
                None => c.schedulers,
            };
            c.dirty_cpu = c.schedulers;
        }
        if let Some(v) = env_usize("BEAMVM_PROCESS_LIMIT")? {
            c.process_limit = v;
        }
        if let Some(v) = env_usize("BEAMVM_REDUCTIONS")? {
            c.reductions = u32::try_from(v)
                .map_err(|_| Error::BadArg("BEAMVM_REDUCTIONS is too large".into()))?;
        }
        if let Some(v) = env_usize("BEAMVM_DIRTY_CPU")? {
            c.dirty_cpu = v;
        }
        if let Some(v) = env_usize("BEAMVM_DIRTY_IO")? {
            c.dirty_io = v;
        }
        Ok(c)
    }

    /// Checks the settings, with a message that says how to fix each problem.
    pub fn validate(&self) -> Result<()> {
        if self.schedulers == 0 || self.schedulers > 1024 {
            return Err(Error::BadArg(format!(
                "schedulers must be between 1 and 1024, got {}",
                self.schedulers
            )));
        }
        if self.schedulers_online == 0 || self.schedulers_online > self.schedulers {
            return Err(Error::BadArg(format!(
                "schedulers_online must be between 1 and schedulers ({}), got {}",
                self.schedulers, self.schedulers_online
            )));
        }
        if self.process_limit == 0 || self.process_limit > crate::process::table::MAX_PROCESS_LIMIT
        {
            return Err(Error::BadArg(format!(
                "process_limit must be between 1 and {}, got {}",
                crate::process::table::MAX_PROCESS_LIMIT,
                self.process_limit
            )));
        }
        if self.reductions == 0 {
            return Err(Error::BadArg(
                "reductions per slice must be at least 1".into(),
            ));
        }
        if self.dirty_cpu == 0 || self.dirty_io == 0 {
            return Err(Error::BadArg(
                "dirty pools need at least one thread each".into(),
            ));
        }
        Ok(())
    }
}
