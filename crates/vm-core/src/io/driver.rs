//! The VM's side of the reactor: where events go (the mailbox), who polls, and what
//! a process's exit does to its sockets.
//!
//! - **Delivery.** [`VmSink`] turns each [`IoEvent`] into its message
//!   ([`super::messages`]) and hands it to the router like any send: a lock-free push
//!   onto the receiver's inbox that makes an idle process runnable (the same path a
//!   timer's message takes, so there is no second wake-up path to get right). A dead
//!   receiver makes `deliver` return `false`, and the reactor closes a socket it
//!   would have handed over.
//! - **Polling.** One poll thread (`beamvm-io`) waits in `epoll_wait`, started with
//!   the VM's first socket: a VM that never opens one has no such thread, no wake-ups
//!   and nothing on the send, spawn or exit paths but one atomic load at exit. This is
//!   BEAM's default shape (`+IOt 1`: one poll thread hands events to schedulers as
//!   signals); it needs no scheduler to sleep in epoll and no GIL: reading, framing
//!   and building messages are Rust on the poll thread, and a Python process only
//!   runs when its message arrives. (docs/io.md discusses the scheduler-parks-in-epoll
//!   alternative and why it is not taken yet.)
//! - **Ownership.** `VmInner::finish` calls [`IoState::owner_exited`]: the dying
//!   process's sockets are closed (peers see EOF) before its pid can be reused.
//! - **Shutdown.** [`IoState::stop`] closes every socket and joins the poll thread.
//!
//! Invariant: the reactor, once made, lives as long as the VM's shared state; the poll
//! thread holds a strong reference to it and a weak one to the VM (so a VM dropped
//! without `shutdown` does not leak through its own poll thread).

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use super::error::IoError;
use super::event::{IoEvent, IoSink};
use super::messages::{to_message, TagStyle};
use super::reactor::Reactor;
use crate::process::signal::Signal;
use crate::term::Pid;
use crate::vm::VmInner;

/// Longest single `epoll_wait` of the poll thread. Nothing needs it to wake (a stop
/// and new work both `wake` it); it only bounds how late a lost wake-up could be
/// noticed, at the cost of ten idle wake-ups a second while sockets exist.
const POLL_TICK: Duration = Duration::from_millis(100);

/// The reactor of one VM, made on first use.
#[derive(Default)]
pub(crate) struct IoState {
    reactor: OnceLock<Arc<Reactor>>,
    make: Mutex<()>,
    thread: Mutex<Option<JoinHandle<()>>>,
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

    /// The reactor, made (with its poll thread) on first use.
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
        let (r, stop) = (reactor.clone(), self.stopping.clone());
        let t = std::thread::Builder::new()
            .name("beamvm-io".into())
            .spawn(move || {
                while !stop.load(Ordering::Acquire) {
                    // An error here (EBADF after a fork's close, ENOMEM) would repeat
                    // at once: slow down rather than spin.
                    if r.poll(Some(POLL_TICK)).is_err() {
                        std::thread::sleep(POLL_TICK);
                    }
                }
            })?;
        *self.thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(t);
        let _ = self.reactor.set(reactor.clone());
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

    /// Shutdown: no new reactor, every socket closed, the poll thread joined.
    pub(crate) fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        let _g = self.make.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = self.reactor.get() {
            r.close_all();
            let _ = r.wake();
        }
        if let Some(t) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = t.join();
        }
    }
}
