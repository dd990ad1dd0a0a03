//! Admission into the append pipeline: who is asking (a [`Peer`], one client connection) and
//! in what order appends reach the verifier ([`FairQueue`]).
//!
//! Each peer has its own FIFO queue and the verifier takes events round robin, one per peer in
//! turn, so a stream with hundreds of events queued cannot make a station's single append wait
//! behind them. While more than one peer has work queued, a take is also cut at a budget of
//! signatures, so no one waits behind another peer's large group. The queue also counts the
//! items whose caller waits alone for its receipt (a unary append, [`FairQueue::try_push`])
//! apart from streamed ones ([`FairQueue::push_wait`]): the verifier lets a group of streamed
//! events grow across several takes only while no such caller is waiting (`ledger::verifier`).
//! A peer whose events keep failing signature verification collects strikes (they decay by one
//! a second): past [`THROTTLE_STRIKES`] its appends are delayed, past [`CUT_OFF_STRIKES`] it is
//! cut off — its queued events are refused unverified and its connection is closed (`conn`).
//! Pure bookkeeping: no I/O; the verifier thread blocks on [`FairQueue::take`].

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Strikes (events with a signature that failed verification, decaying by one per second)
/// after which a peer's appends are delayed.
pub const THROTTLE_STRIKES: f64 = 8.0;
/// Strikes after which a peer is cut off.
pub const CUT_OFF_STRIKES: f64 = 32.0;
/// Delay per strike above [`THROTTLE_STRIKES`], and the longest delay.
const DELAY_PER_STRIKE: Duration = Duration::from_millis(25);
const MAX_DELAY: Duration = Duration::from_secs(1);

static NEXT_PEER: AtomicU64 = AtomicU64::new(1);

/// One client as the append pipeline sees it: a connection (or, for in-process callers, the
/// ledger itself).
#[derive(Debug)]
pub struct Peer {
    pub id: u64,
    /// Remote address of the connection; `None` for in-process callers.
    pub addr: Option<SocketAddr>,
    /// In-process callers are never throttled or cut off.
    exempt: bool,
    strikes: Mutex<(f64, Instant)>,
    cut_off: AtomicBool,
    /// Woken when the peer is cut off (the connection watches it).
    waker: futures_util::task::AtomicWaker,
}

impl Peer {
    /// A client connection from `addr`.
    pub fn remote(addr: SocketAddr) -> Arc<Peer> {
        Arc::new(Self::new(Some(addr), false))
    }

    /// The in-process caller (benchmarks, tests, tools that hold the `Ledger`).
    pub fn local() -> Arc<Peer> {
        Arc::new(Self::new(None, true))
    }

    fn new(addr: Option<SocketAddr>, exempt: bool) -> Peer {
        Peer {
            id: NEXT_PEER.fetch_add(1, Ordering::Relaxed),
            addr,
            exempt,
            strikes: Mutex::new((0.0, Instant::now())),
            cut_off: AtomicBool::new(false),
            waker: Default::default(),
        }
    }

    fn level(&self) -> std::sync::MutexGuard<'_, (f64, Instant)> {
        let mut s = self.strikes.lock().expect("strikes lock");
        let now = Instant::now();
        let decayed = now.duration_since(s.1).as_secs_f64();
        s.0 = (s.0 - decayed).max(0.0);
        s.1 = now;
        s
    }

    /// Records `n` events whose signatures failed verification; cuts the peer off past
    /// [`CUT_OFF_STRIKES`].
    pub fn strike(&self, n: usize) {
        if self.exempt || n == 0 {
            return;
        }
        let level = {
            let mut s = self.level();
            s.0 += n as f64;
            s.0
        };
        if level > CUT_OFF_STRIKES {
            self.cut_off();
        }
    }

    /// How long this peer's next append waits (`None`: not throttled).
    pub fn delay(&self) -> Option<Duration> {
        let over = self.level().0 - THROTTLE_STRIKES;
        (over > 0.0).then(|| DELAY_PER_STRIKE.mul_f64(over).min(MAX_DELAY))
    }

    pub fn is_cut_off(&self) -> bool {
        self.cut_off.load(Ordering::Acquire)
    }

    /// Cuts the peer off: its appends are refused and its connection closes.
    pub fn cut_off(&self) {
        if self.exempt || self.cut_off.swap(true, Ordering::AcqRel) {
            return;
        }
        tracing::warn!(
            peer = self.id,
            addr = ?self.addr,
            "client cut off: too many events failed signature verification"
        );
        crate::metrics::peer_cut_off();
        self.waker.wake();
    }

    /// For the connection: true once cut off; otherwise wakes `cx` when that happens.
    pub fn poll_cut_off(&self, cx: &std::task::Context<'_>) -> bool {
        if self.is_cut_off() {
            return true;
        }
        self.waker.register(cx.waker());
        self.is_cut_off()
    }
}

/// What [`FairQueue::take`] hands the verifier: appends (round robin over peers) and, after
/// them, at most one control message; `closed` once the queue is closed and empty.
pub struct Taken<T, C> {
    pub items: Vec<(Arc<Peer>, T)>,
    /// Whether some of `items` came from a caller waiting alone for its answer
    /// ([`FairQueue::try_push`]).
    pub urgent: bool,
    pub control: Option<C>,
    pub closed: bool,
}

/// Why an item was not queued.
pub enum PushError<T> {
    Full(T),
    Closed(T),
}

/// A queued item: its place in the global order, whether its caller waits alone for it
/// ([`FairQueue::try_push`]), and the item.
struct Queued<T> {
    seq: u64,
    urgent: bool,
    item: T,
}

struct PeerQueue<T> {
    peer: Arc<Peer>,
    items: VecDeque<Queued<T>>,
}

struct State<T, C> {
    queues: HashMap<u64, PeerQueue<T>>,
    /// Peers with queued items, in the order they are served.
    ring: VecDeque<u64>,
    /// Control messages; each runs after every item queued before it.
    control: VecDeque<(u64, C)>,
    len: usize,
    /// How many of the `len` items are urgent.
    urgent: usize,
    next_seq: u64,
    closed: bool,
}

/// Bounded per-peer FIFO queues served round robin, plus ordered control messages.
pub struct FairQueue<T, C> {
    state: Mutex<State<T, C>>,
    ready: Condvar,
    room: tokio::sync::Notify,
    capacity: usize,
}

impl<T, C> FairQueue<T, C> {
    pub fn new(capacity: usize) -> Self {
        FairQueue {
            state: Mutex::new(State {
                queues: HashMap::new(),
                ring: VecDeque::new(),
                control: VecDeque::new(),
                len: 0,
                urgent: 0,
                next_seq: 0,
                closed: false,
            }),
            ready: Condvar::new(),
            room: tokio::sync::Notify::new(),
            capacity: capacity.max(1),
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Items queued (all peers).
    pub fn len(&self) -> usize {
        self.state.lock().expect("queue lock").len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether an item from [`FairQueue::try_push`] (a caller waiting alone for its answer) is
    /// queued.
    pub fn urgent_waiting(&self) -> bool {
        self.state.lock().expect("queue lock").urgent > 0
    }

    /// Queues `item` for `peer` unless the queue is full or closed. For a caller that waits
    /// alone for its answer (a unary append): the item is urgent.
    pub fn try_push(&self, peer: &Arc<Peer>, item: T) -> Result<(), PushError<T>> {
        self.push(peer, item, true)
    }

    fn push(&self, peer: &Arc<Peer>, item: T, urgent: bool) -> Result<(), PushError<T>> {
        let mut s = self.state.lock().expect("queue lock");
        if s.closed {
            return Err(PushError::Closed(item));
        }
        if s.len >= self.capacity {
            return Err(PushError::Full(item));
        }
        let seq = s.next_seq;
        s.next_seq += 1;
        s.len += 1;
        s.urgent += usize::from(urgent);
        let q = s.queues.entry(peer.id).or_insert_with(|| PeerQueue {
            peer: peer.clone(),
            items: VecDeque::new(),
        });
        q.items.push_back(Queued { seq, urgent, item });
        if q.items.len() == 1 {
            s.ring.push_back(peer.id);
        }
        drop(s);
        self.ready.notify_one();
        Ok(())
    }

    /// Queues `item`, waiting for room; `Err(item)` once the queue is closed. For a stream's
    /// items (not urgent).
    pub async fn push_wait(&self, peer: &Arc<Peer>, mut item: T) -> Result<(), T> {
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            match self.push(peer, item, false) {
                Ok(()) => return Ok(()),
                Err(PushError::Closed(i)) => return Err(i),
                Err(PushError::Full(i)) => item = i,
            }
            room.await;
        }
    }

    /// Queues a control message behind every item queued so far (not bounded: control
    /// messages are few). `Err` once the queue is closed.
    pub fn push_control(&self, c: C) -> Result<(), C> {
        let mut s = self.state.lock().expect("queue lock");
        if s.closed {
            return Err(c);
        }
        let seq = s.next_seq;
        s.next_seq += 1;
        s.control.push_back((seq, c));
        drop(s);
        self.ready.notify_one();
        Ok(())
    }

    /// Refuses further pushes; what is queued can still be taken.
    pub fn close(&self) {
        self.state.lock().expect("queue lock").closed = true;
        self.ready.notify_all();
        self.room.notify_waiters();
    }

    /// Blocks until there is work, then takes up to `max_items` items round robin (one per
    /// peer in turn). While more than one peer has items, stops once the items' `cost` reaches
    /// `shared_budget`. Items queued after a pending control message stay queued; the control
    /// message is returned once every item before it has been taken.
    pub fn take(
        &self,
        max_items: usize,
        shared_budget: usize,
        cost: impl Fn(&T) -> usize,
    ) -> Taken<T, C> {
        let mut s = self.state.lock().expect("queue lock");
        while s.len == 0 && s.control.is_empty() && !s.closed {
            s = self.ready.wait(s).expect("queue lock");
        }
        let barrier = s.control.front().map(|(seq, _)| *seq);
        let shared = s.ring.len() > 1;
        let mut items = Vec::new();
        let mut urgent = false;
        let mut spent = 0usize;
        let mut skipped = 0;
        while items.len() < max_items.max(1) && skipped < s.ring.len() {
            if shared && spent >= shared_budget {
                break;
            }
            let Some(id) = s.ring.pop_front() else { break };
            let q = s
                .queues
                .get_mut(&id)
                .expect("a peer in the ring has a queue");
            let eligible = q
                .items
                .front()
                .is_some_and(|i| barrier.is_none_or(|b| i.seq < b));
            if !eligible {
                // Everything this peer queued is behind the control message.
                s.ring.push_back(id);
                skipped += 1;
                continue;
            }
            skipped = 0;
            let Queued {
                urgent: was_urgent,
                item,
                ..
            } = q.items.pop_front().expect("checked non-empty");
            spent += cost(&item);
            let peer = q.peer.clone();
            if q.items.is_empty() {
                s.queues.remove(&id);
            } else {
                s.ring.push_back(id);
            }
            s.len -= 1;
            s.urgent -= usize::from(was_urgent);
            urgent |= was_urgent;
            items.push((peer, item));
        }
        let before_barrier_left = barrier.is_some_and(|b| {
            s.queues
                .values()
                .any(|q| q.items.front().is_some_and(|i| i.seq < b))
        });
        let control = if barrier.is_some() && !before_barrier_left {
            s.control.pop_front().map(|(_, c)| c)
        } else {
            None
        };
        let closed = s.closed && s.len == 0 && s.control.is_empty() && control.is_none();
        drop(s);
        if !items.is_empty() {
            self.room.notify_waiters();
        }
        Taken {
            items,
            urgent,
            control,
            closed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(t: &Taken<u32, &'static str>) -> Vec<u32> {
        t.items.iter().map(|(_, i)| *i).collect()
    }

    #[test]
    fn peers_are_served_round_robin() {
        let q: FairQueue<u32, &str> = FairQueue::new(100);
        let (a, b) = (Peer::local(), Peer::local());
        for i in 0..5 {
            q.try_push(&a, i).ok().unwrap();
        }
        q.try_push(&b, 100).ok().unwrap();
        let t = q.take(3, usize::MAX, |_| 1);
        assert_eq!(ids(&t), vec![0, 100, 1]);
        let t = q.take(10, usize::MAX, |_| 1);
        assert_eq!(ids(&t), vec![2, 3, 4]);
    }

    #[test]
    fn a_shared_group_stops_at_the_budget_a_lone_peer_does_not() {
        let q: FairQueue<u32, &str> = FairQueue::new(100);
        let (a, b) = (Peer::local(), Peer::local());
        for i in 0..10 {
            q.try_push(&a, i).ok().unwrap();
        }
        q.try_push(&b, 100).ok().unwrap();
        let t = q.take(100, 4, |_| 2);
        assert_eq!(ids(&t), vec![0, 100]);
        let t = q.take(100, 4, |_| 2);
        assert_eq!(t.items.len(), 9, "alone, a peer fills the group");
    }

    #[tokio::test]
    async fn a_take_says_whether_it_holds_an_item_whose_caller_waits_alone() {
        let q: FairQueue<u32, &str> = FairQueue::new(100);
        let (stream, station) = (Peer::local(), Peer::local());
        for i in 0..4 {
            q.push_wait(&stream, i).await.ok().unwrap();
        }
        assert!(!q.urgent_waiting(), "streamed items are not urgent");
        let t = q.take(2, usize::MAX, |_| 1);
        assert!(!t.urgent);
        q.try_push(&station, 100).ok().unwrap();
        assert!(q.urgent_waiting());
        let t = q.take(1, usize::MAX, |_| 1);
        assert_eq!(ids(&t), vec![2], "round robin: the stream's turn first");
        assert!(!t.urgent && q.urgent_waiting());
        let t = q.take(1, usize::MAX, |_| 1);
        assert_eq!(ids(&t), vec![100]);
        assert!(t.urgent);
        assert!(!q.urgent_waiting(), "the urgent item was taken");
    }

    #[test]
    fn control_runs_after_everything_queued_before_it() {
        let q: FairQueue<u32, &str> = FairQueue::new(100);
        let (a, b) = (Peer::local(), Peer::local());
        q.try_push(&a, 1).ok().unwrap();
        q.try_push(&b, 2).ok().unwrap();
        q.push_control("stop").unwrap();
        q.try_push(&a, 3).ok().unwrap();
        let t = q.take(100, usize::MAX, |_| 1);
        assert_eq!(ids(&t), vec![1, 2]);
        assert_eq!(t.control, Some("stop"));
        let t = q.take(100, usize::MAX, |_| 1);
        assert_eq!(ids(&t), vec![3]);
        assert!(t.control.is_none());
    }

    #[test]
    fn full_and_closed_queues_refuse() {
        let q: FairQueue<u32, &str> = FairQueue::new(2);
        let a = Peer::local();
        q.try_push(&a, 1).ok().unwrap();
        q.try_push(&a, 2).ok().unwrap();
        assert!(matches!(q.try_push(&a, 3), Err(PushError::Full(3))));
        q.close();
        assert!(matches!(q.try_push(&a, 4), Err(PushError::Closed(4))));
        let t = q.take(10, usize::MAX, |_| 1);
        assert_eq!(ids(&t), vec![1, 2]);
        assert!(q.take(10, usize::MAX, |_| 1).closed);
    }

    #[test]
    fn strikes_throttle_then_cut_off_a_remote_peer_but_never_the_local_one() {
        let p = Peer::remote("127.0.0.1:1".parse().unwrap());
        p.strike(5);
        assert!(p.delay().is_none());
        p.strike(10);
        assert!(p.delay().is_some());
        assert!(!p.is_cut_off());
        p.strike(40);
        assert!(p.is_cut_off());
        let local = Peer::local();
        local.strike(1000);
        assert!(!local.is_cut_off() && local.delay().is_none());
    }
}
