//! ALIAS_SEND to this node: handed to the [`Host`] (whose processes make the aliases),
//! with the sender; dropped when the node has no host (its mailboxes make none). No
//! Erlang needed: two driver nodes talk to each other.

mod common;

use common::Stopped;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{free_port, unique};
use vm_dist::cookie::Cookie;
use vm_dist::node::{Delivery, Host, Node, NodeConfig};
use vm_dist::{Atom, Pid, Ref, Term};

const COOKIE: &str = "alias_test_cookie";
const PATIENCE: Duration = Duration::from_secs(30);

/// A host whose only process-side behaviour is to report alias deliveries.
struct AliasHost(Mutex<Sender<(Pid, Ref, Term)>>);

impl Host for AliasHost {
    fn deliver(&self, _: &Pid, _: Delivery) -> bool {
        false
    }
    fn whereis(&self, _: &str) -> Option<Pid> {
        None
    }
    fn watch(&self, _: &Pid) -> bool {
        false
    }
    fn deliver_alias(&self, from: &Pid, alias: &Ref, message: Term) -> bool {
        let tx = self.0.lock().unwrap_or_else(|e| e.into_inner());
        tx.send((from.clone(), alias.clone(), message)).is_ok()
    }
}

fn node(epmd: u16, host: Option<Arc<dyn Host>>) -> Stopped {
    let mut cfg = NodeConfig::new(&unique("alias"));
    cfg.cookie = Some(Cookie::new(COOKIE));
    cfg.listen = IpAddr::V4(Ipv4Addr::LOCALHOST);
    cfg.epmd_port = epmd;
    Stopped(Node::start_hosted(cfg, Some(host).flatten()).expect("node starts"))
}

fn hosted(epmd: u16) -> (Stopped, Receiver<(Pid, Ref, Term)>) {
    let (tx, rx) = channel();
    (node(epmd, Some(Arc::new(AliasHost(Mutex::new(tx))))), rx)
}

/// A reference of `n`'s, as its host's processes make them (last word below 2^14).
fn host_ref(n: &Node, word: u32) -> Ref {
    Ref {
        node: Atom::new(n.name()),
        creation: n.creation(),
        ids: vec![word, 0, 0],
    }
}

#[test]
fn alias_sends_reach_the_host_with_their_sender_and_a_hostless_node_drops_them() {
    let port = free_port();
    let (a, rx) = hosted(port);
    let b = node(port, None);
    assert!(b.0.ping(a.0.name(), PATIENCE));
    let mut mb = b.0.mailbox();

    let alias = host_ref(&a.0, 42);
    b.0.alias_send(mb.pid(), &alias, Term::atom("hello"))
        .expect("connected");
    let (from, got_alias, msg) = rx.recv_timeout(PATIENCE).expect("an alias delivery");
    assert_eq!(&from, mb.pid());
    assert_eq!(got_alias, alias);
    assert_eq!(msg, Term::atom("hello"));

    // A node without a host (its mailboxes make no aliases) drops them, and the
    // connection carries on.
    let ma = a.0.mailbox();
    a.0.alias_send(ma.pid(), &host_ref(&b.0, 1), Term::atom("dropped"))
        .expect("connected");
    a.0.send(Some(ma.pid()), mb.pid(), Term::atom("after"))
        .expect("connected");
    assert_eq!(mb.recv_message(PATIENCE), Some(Term::atom("after")));
    assert!(rx.recv_timeout(Duration::from_millis(100)).is_err());
}
