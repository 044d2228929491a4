//! The VM's side of the reactor: where events go (the mailbox), who polls, and what
//! a process's exit does to its sockets.
//!
//! - **Delivery.** [`VmSink`] turns each [`IoEvent`] into its message
//!   ([`super::messages`]) and hands it to the router like any send: a lock-free push
//!   onto the receiver's inbox that makes an idle process runnable (the same path a
//!   timer's message takes, so there is no second wake-up path to get right). A dead
//!   receiver makes `deliver` return `false`, and the reactor closes a socket it
//!   would have handed over.
//! - **Polling.** The schedulers poll (BEAM's check_io; scheduler/worker.rs and
//!   scheduler/idle.rs): once the VM has its first socket, an idle scheduler parks in
//!   the reactor's `epoll_wait` (one at a time) and handles the readiness it wakes
//!   for, and busy schedulers look without waiting every few picks. Events are handled
//!   on a scheduler thread, so the processes they wake go to that scheduler's queues
//!   and run there, with no hand-off between threads. No GIL is involved: reading,
//!   framing and building messages are Rust, and a Python process only runs when its
//!   message arrives. A VM that never opens a socket polls nothing (one relaxed load
//!   per few picks).
//! - **Ownership.** `VmInner::finish` calls [`IoState::owner_exited`]: the dying
//!   process's sockets are closed (peers see EOF) before its pid can be reused.
//! - **Shutdown.** [`IoState::stop`] closes every socket and wakes the scheduler in
//!   `epoll_wait`.
//!
//! Invariant: the reactor, once made, lives as long as the VM's shared state (the
//! schedulers' idle set holds it too); its sink holds the VM weakly, so the two do not
//! keep each other alive.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use super::error::IoError;
use super::event::{IoEvent, IoSink};
use super::messages::{to_message, TagStyle};
use super::reactor::Reactor;
use crate::process::signal::Signal;
use crate::term::Pid;
use crate::vm::VmInner;

/// The reactor of one VM, made on first use.
#[derive(Default)]
pub(crate) struct IoState {
    reactor: OnceLock<Arc<Reactor>>,
    make: Mutex<()>,
    stopping: Arc<AtomicBool>,
    style: AtomicU8,
}

/// Delivers reactor events as messages through the router.
struct VmSink {
    vm: Weak<VmInner>,
    style: TagStyle,
}

impl IoSink for VmSink {
    fn deliver(&self, to: Pid, event: IoEvent) -> bool {
        let Some(vm) = self.vm.upgrade() else {
            return false;
        };
        let msg = to_message(event, self.style);
        vm.router.send(to, Signal::Message(msg)).delivered
    }

    fn is_alive(&self, pid: Pid) -> bool {
        // `VmInner::finish` removes the process from the table before it calls
        // `owner_exited`, as the trait asks.
        self.vm
            .upgrade()
            .is_some_and(|vm| vm.router.table.with(pid, |_| ()).is_some())
    }
}

impl IoState {
    /// How active messages spell their tags; only before the first socket.
    pub(crate) fn set_style(&self, style: TagStyle) {
        let v = match style {
            TagStyle::Atoms => 0,
            TagStyle::Strings => 1,
        };
        self.style.store(v, Ordering::Relaxed);
    }

    /// The reactor, if a socket was ever opened.
    pub(crate) fn get(&self) -> Option<&Arc<Reactor>> {
        self.reactor.get()
    }

    /// The reactor, made on first use and handed to the schedulers to poll.
    pub(crate) fn reactor(&self, vm: &Arc<VmInner>) -> Result<Arc<Reactor>, IoError> {
        if let Some(r) = self.reactor.get() {
            return Ok(r.clone());
        }
        let _g = self.make.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = self.reactor.get() {
            return Ok(r.clone());
        }
        if self.stopping.load(Ordering::Acquire) {
            return Err(IoError::Closed);
        }
        let style = match self.style.load(Ordering::Relaxed) {
            0 => TagStyle::Atoms,
            _ => TagStyle::Strings,
        };
        let sink = Arc::new(VmSink {
            vm: Arc::downgrade(vm),
            style,
        });
        let reactor = Arc::new(Reactor::new(sink)?);
        let _ = self.reactor.set(reactor.clone());
        vm.router.sched.set_reactor(reactor.clone());
        Ok(reactor)
    }

    /// A process ended: close what it owned. One atomic load when it owned nothing
    /// and no socket exists.
    #[inline]
    pub(crate) fn owner_exited(&self, pid: Pid) {
        if let Some(r) = self.reactor.get() {
            if r.socket_count() > 0 {
                r.owner_exited(pid);
            }
        }
    }

    /// Shutdown: no new reactor, every socket closed, the scheduler in `epoll_wait`
    /// (if any) woken.
    pub(crate) fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        let _g = self.make.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = self.reactor.get() {
            r.close_all();
            let _ = r.wake();
        }
    }
}
