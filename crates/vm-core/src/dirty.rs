//! Dirty schedulers: thread pools for work that would hold a scheduler too long.
//!
//! A process hands a job (a closure) to the dirty CPU pool (long computations; one
//! thread per scheduler by default, `+SDcpu`) or the dirty IO pool (blocking calls; 10
//! threads by default, `+SDio`) and waits like any waiting process: its scheduler runs
//! other processes meanwhile. When the job finishes, its result travels back to the
//! process as a signal through the [`Router`], so it is ordered with the process's other
//! signals and wakes it like a message would. Delivery is all a pool needs from the VM.
//!
//! A process killed while its job runs is ended at once (the job is not interrupted:
//! like BEAM's dirty NIFs it runs to completion); the result then finds the process's
//! inbox closed and is dropped on the pool thread, and the thread takes the next job.
//! Nothing waits for a dead process and nothing leaks.
//!
//! A panic inside a job is caught and delivered to the process as an error result, and
//! a panic dropping a refused result is contained by the router, so a pool thread never
//! dies.
//!
//! ## Stopping
//!
//! A thread takes a job and counts itself running in one critical section of the
//! queue's lock, and [`Pool::stop`] sets the stop flag and reads that count in one too:
//! the count it returns is exact, with no window between a pop and its count in which
//! a busy thread looks idle (shutdown joins idle threads and leaves busy ones, whose
//! blocking call may take any time, detached).

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Instant;

use crate::process::signal::{DirtyJob, DirtyResult, Signal};
use crate::router::Router;
use crate::term::Pid;

/// Which pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DirtyKind {
    /// CPU-bound work.
    Cpu,
    /// Blocking I/O and other waiting.
    Io,
}

struct Job {
    id: u64,
    pid: Pid,
    run: DirtyJob,
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    stop: bool,
    /// Threads between taking a job and finishing it.
    running: usize,
}

/// One pool.
pub(crate) struct Pool {
    kind: DirtyKind,
    size: usize,
    queue: Mutex<Queue>,
    cv: Condvar,
    /// Nanoseconds spent running jobs, all threads together.
    pub(crate) busy_ns: AtomicU64,
    /// Jobs completed.
    pub(crate) completed: AtomicU64,
    /// Jobs running now (a copy of the queue's count, readable without its lock).
    running: AtomicUsize,
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
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// Jobs waiting for a thread.
    pub(crate) fn queued(&self) -> usize {
        self.lock().jobs.len()
    }

    /// Jobs running now.
    pub(crate) fn running(&self) -> usize {
        self.running.load(Ordering::Acquire)
    }

    fn submit(&self, job: Job) {
        self.lock().jobs.push_back(job);
        self.cv.notify_one();
    }

    /// Stops the pool: idle threads return, busy ones after their job. Returns how
    /// many threads were running a job at that moment (exactly: see the module docs).
    pub(crate) fn stop(&self) -> usize {
        let mut q = self.lock();
        q.stop = true;
        let busy = q.running;
        drop(q);
        self.cv.notify_all();
        busy
    }

    /// Waits for a job and counts this thread running, in one critical section; None
    /// once the pool is stopped.
    fn next_job(&self) -> Option<Job> {
        let mut q = self.lock();
        loop {
            if q.stop {
                return None;
            }
            if let Some(j) = q.jobs.pop_front() {
                q.running += 1;
                self.running.store(q.running, Ordering::Release);
                return Some(j);
            }
            q = self.cv.wait(q).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn job_done(&self) {
        let mut q = self.lock();
        q.running -= 1;
        self.running.store(q.running, Ordering::Release);
    }

    /// A pool thread's loop: run jobs and deliver their results until stopped.
    pub(crate) fn run(&self, router: &Router) {
        while let Some(job) = self.next_job() {
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
            self.job_done();
            self.completed.fetch_add(1, Ordering::Relaxed);
            // Dropped (by the router) if the process is gone.
            router.send(job.pid, Signal::Dirty { id: job.id, result });
        }
    }
}

/// The two pools of a VM.
pub(crate) struct DirtyPools {
    /// The dirty CPU pool.
    pub(crate) cpu: Pool,
    /// The dirty IO pool.
    pub(crate) io: Pool,
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

    /// The pool of `kind`.
    pub(crate) fn pool(&self, kind: DirtyKind) -> &Pool {
        match kind {
            DirtyKind::Cpu => &self.cpu,
            DirtyKind::Io => &self.io,
        }
    }

    /// Queues `run` for `pid` on the pool of `kind`; returns the job's id, which its
    /// result signal carries.
    pub(crate) fn submit(&self, kind: DirtyKind, pid: Pid, run: DirtyJob) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.pool(kind).submit(Job { id, pid, run });
        id
    }

    /// Stops both pools; returns how many of their threads were running a job.
    pub(crate) fn stop(&self) -> usize {
        self.cpu.stop() + self.io.stop()
    }

    /// Jobs running now, both pools.
    pub(crate) fn running(&self) -> usize {
        self.cpu.running() + self.io.running()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::tests::{bare_router, idle_process};
    use std::time::Duration;

    /// A pool delivers a job's result to its process through a bare router (no VM, no
    /// scheduler threads), and a panicking job becomes an error result.
    #[test]
    fn results_reach_the_process_through_the_router() {
        let router = bare_router();
        let p = idle_process(&router);
        let pools = DirtyPools::new(1, 1);
        let a = pools.submit(DirtyKind::Io, p.pid, Box::new(|| Box::new(7u32)));
        let b = pools.submit(DirtyKind::Io, p.pid, Box::new(|| panic!("job failed")));
        std::thread::scope(|s| {
            s.spawn(|| pools.io.run(&router));
            let end = Instant::now() + Duration::from_secs(5);
            while p.inbox.len() < 2 && Instant::now() < end {
                std::thread::yield_now();
            }
            assert_eq!(pools.stop(), 0, "no job left running");
        });
        assert!(p.inbox.begin(), "the first result woke it (QUEUED)");
        let mut sigs = Vec::new();
        p.inbox.take_all(&mut sigs);
        let results: Vec<_> = sigs
            .into_iter()
            .map(|s| match s {
                Signal::Dirty { id, result } => (id, result.map(|v| *v.downcast::<u32>().unwrap())),
                _ => panic!("not a dirty result"),
            })
            .collect();
        assert_eq!(
            results,
            vec![(a, Ok(7)), (b, Err("job failed".to_string()))]
        );
        assert_eq!(pools.io.completed.load(Ordering::Relaxed), 2);
    }

    /// The count `stop` returns includes a thread that has just taken a job (issue 8,
    /// fault 9: the old pool counted a thread running only after it had left the
    /// queue's lock, so shutdown could take it for idle and join it, waiting for its
    /// blocking call).
    #[test]
    fn stop_counts_a_thread_that_just_took_a_job() {
        let pools = DirtyPools::new(1, 1);
        pools.submit(DirtyKind::Cpu, Pid::new(0, 0), Box::new(|| Box::new(())));
        // This thread plays the pool thread, stopped right after its pop.
        let job = pools.cpu.next_job().expect("a job");
        assert_eq!(pools.cpu.running(), 1);
        assert_eq!(pools.stop(), 1, "busy at the moment of the stop");
        assert!(pools.cpu.next_job().is_none(), "stopped");
        drop(job);
        pools.cpu.job_done();
        assert_eq!(pools.running(), 0);
    }
}
