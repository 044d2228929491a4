//! Dirty schedulers: thread pools for work that would hold a scheduler too long.
//!
//! A process hands a job (a closure) to the dirty CPU pool (long computations; one
//! thread per scheduler by default, `+SDcpu`) or the dirty IO pool (blocking calls; 10
//! threads by default, `+SDio`) and waits like any waiting process: its scheduler runs
//! other processes meanwhile. When the job finishes, its result travels back to the
//! process as a signal through the ordinary inbox, so it is ordered with the process's
//! other signals and wakes it like a message would.
//!
//! A process killed while its job runs is ended at once (the job is not interrupted:
//! like BEAM's dirty NIFs it runs to completion); the result then finds the process's
//! inbox closed and is dropped on the pool thread, and the thread takes the next job.
//! Nothing waits for a dead process and nothing leaks.
//!
//! A panic inside a job is caught and delivered to the process as an error result, so
//! a pool thread never dies.

use std::any::Any;
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::Instant;

use crate::process::signal::Signal;
use crate::term::Pid;
use crate::vm::VmInner;

/// Which pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DirtyKind {
    /// CPU-bound work.
    Cpu,
    /// Blocking I/O and other waiting.
    Io,
}

/// What a job returns: any value (the Python binding returns Python objects), or the
/// panic message if it panicked.
pub type DirtyResult = Result<Box<dyn Any + Send>, String>;

/// A job for a dirty pool.
pub type DirtyJob = Box<dyn FnOnce() -> Box<dyn Any + Send> + Send>;

struct Job {
    id: u64,
    pid: Pid,
    run: DirtyJob,
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    stop: bool,
}

/// One pool.
pub struct Pool {
    kind: DirtyKind,
    size: usize,
    queue: Mutex<Queue>,
    cv: Condvar,
    /// Nanoseconds spent running jobs, all threads together.
    pub busy_ns: AtomicU64,
    /// Jobs completed.
    pub completed: AtomicU64,
    /// Jobs running now.
    pub running: AtomicUsize,
}

impl Pool {
    fn new(kind: DirtyKind, size: usize) -> Pool {
        Pool {
            kind,
            size,
            queue: Mutex::new(Queue::default()),
            cv: Condvar::new(),
            busy_ns: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            running: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Threads in the pool.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Jobs waiting for a thread.
    pub fn queued(&self) -> usize {
        self.lock().jobs.len()
    }

    fn submit(&self, job: Job) {
        self.lock().jobs.push_back(job);
        self.cv.notify_one();
    }

    fn stop(&self) {
        self.lock().stop = true;
        self.cv.notify_all();
    }

    fn run(&self, vm: Weak<VmInner>) {
        loop {
            let job = {
                let mut q = self.lock();
                loop {
                    if q.stop {
                        return;
                    }
                    if let Some(j) = q.jobs.pop_front() {
                        break j;
                    }
                    q = self.cv.wait(q).unwrap_or_else(|e| e.into_inner());
                }
            };
            self.running.fetch_add(1, Ordering::Relaxed);
            let t0 = Instant::now();
            let result: DirtyResult = catch_unwind(AssertUnwindSafe(job.run)).map_err(|e| {
                if let Some(s) = e.downcast_ref::<&str>() {
                    (*s).to_string()
                } else if let Some(s) = e.downcast_ref::<String>() {
                    s.clone()
                } else {
                    format!("panic in a dirty {:?} job", self.kind)
                }
            });
            self.busy_ns
                .fetch_add(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
            self.running.fetch_sub(1, Ordering::Relaxed);
            self.completed.fetch_add(1, Ordering::Relaxed);
            let Some(vm) = vm.upgrade() else { return };
            // Dropped here if the process is gone.
            vm.send_signal(job.pid, Signal::Dirty { id: job.id, result });
        }
    }
}

/// The two pools of a VM.
pub struct DirtyPools {
    /// The dirty CPU pool.
    pub cpu: Pool,
    /// The dirty IO pool.
    pub io: Pool,
    next_id: AtomicU64,
}

impl DirtyPools {
    pub(crate) fn new(cpu: usize, io: usize) -> DirtyPools {
        DirtyPools {
            cpu: Pool::new(DirtyKind::Cpu, cpu),
            io: Pool::new(DirtyKind::Io, io),
            next_id: AtomicU64::new(1),
        }
    }

    /// Starts the pool threads.
    pub(crate) fn start(vm: &Arc<VmInner>) -> std::io::Result<Vec<JoinHandle<()>>> {
        let mut threads = Vec::new();
        for (kind, size) in [
            (DirtyKind::Cpu, vm.dirty.cpu.size),
            (DirtyKind::Io, vm.dirty.io.size),
        ] {
            for i in 0..size {
                let weak = Arc::downgrade(vm);
                let name = match kind {
                    DirtyKind::Cpu => format!("beamvm-dcpu-{i}"),
                    DirtyKind::Io => format!("beamvm-dio-{i}"),
                };
                let vm2 = vm.clone();
                threads.push(
                    std::thread::Builder::new()
                        .name(name)
                        .stack_size(crate::config::THREAD_STACK_SIZE)
                        .spawn(move || {
                            let pool = match kind {
                                DirtyKind::Cpu => &vm2.dirty.cpu,
                                DirtyKind::Io => &vm2.dirty.io,
                            };
                            pool.run(weak);
                        })?,
                );
            }
        }
        Ok(threads)
    }

    pub(crate) fn submit(&self, kind: DirtyKind, pid: Pid, run: DirtyJob) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let job = Job { id, pid, run };
        match kind {
            DirtyKind::Cpu => self.cpu.submit(job),
            DirtyKind::Io => self.io.submit(job),
        }
        id
    }

    pub(crate) fn stop(&self) {
        self.cpu.stop();
        self.io.stop();
    }
}
