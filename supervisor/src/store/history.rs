//! The watch history: the most recent events, bounded both by count and by their size as
//! JSON, so that a crash-looping VM with large objects cannot grow the daemon's memory.

use std::collections::VecDeque;
use std::sync::Arc;

use super::WatchEvent;

/// At most this many events are kept.
const MAX_EVENTS: usize = 20_000;
/// At most this many bytes of (serialized) objects are kept. In memory a `serde_json::Value`
/// takes a few times its JSON size, so this bounds the history to roughly 100 MiB at worst.
const MAX_BYTES: usize = 32 << 20;

/// Recent events, oldest first. Watches that resume from a resourceVersion older than
/// [`History::floor`] get 410 Gone and must list again, as with the Kubernetes API server.
pub(super) struct History {
    events: VecDeque<(Arc<WatchEvent>, usize)>,
    bytes: usize,
    /// Oldest resourceVersion from which the history is complete.
    floor: u64,
    max_events: usize,
    max_bytes: usize,
}

impl History {
    /// An empty history that is complete from `rv` on (the store's version when it opened).
    pub(super) fn new(rv: u64) -> History {
        History::with_limits(rv, MAX_EVENTS, MAX_BYTES)
    }

    fn with_limits(rv: u64, max_events: usize, max_bytes: usize) -> History {
        History {
            events: VecDeque::new(),
            bytes: 0,
            floor: rv,
            max_events,
            max_bytes,
        }
    }

    /// Oldest resourceVersion a watch can resume from.
    pub(super) fn floor(&self) -> u64 {
        self.floor
    }

    /// Appends an event whose object is `size` bytes of JSON, then drops the oldest events
    /// until both limits hold again. The newest event is always kept.
    pub(super) fn push(&mut self, ev: Arc<WatchEvent>, size: usize) {
        self.events.push_back((ev, size));
        self.bytes += size;
        while self.events.len() > 1
            && (self.events.len() > self.max_events || self.bytes > self.max_bytes)
        {
            if let Some((old, size)) = self.events.pop_front() {
                self.bytes -= size;
                self.floor = old.resource_version;
            }
        }
    }

    /// The events after `since`, or `None` when some of them were already dropped.
    pub(super) fn since(&self, since: u64) -> Option<Vec<Arc<WatchEvent>>> {
        if since < self.floor {
            return None;
        }
        Some(
            self.events
                .iter()
                .filter(|(e, _)| e.resource_version > since)
                .map(|(e, _)| e.clone())
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::kinds::Kind;
    use crate::store::{EventType, ObjectKey};

    fn ev(rv: u64) -> Arc<WatchEvent> {
        Arc::new(WatchEvent {
            key: ObjectKey::new(Kind::Vmi, "ns", "v"),
            event_type: EventType::Modified,
            object: Arc::new(Value::Null),
            resource_version: rv,
        })
    }

    fn versions(h: &History, since: u64) -> Option<Vec<u64>> {
        h.since(since)
            .map(|v| v.iter().map(|e| e.resource_version).collect())
    }

    #[test]
    fn limits_drop_the_oldest_events_and_raise_the_floor() {
        // (max_events, max_bytes, sizes of events rv 11.., expected floor, kept versions)
        type Case = (usize, usize, &'static [usize], u64, &'static [u64]);
        let cases: &[Case] = &[
            (10, 1000, &[10, 10, 10], 10, &[11, 12, 13]),
            (2, 1000, &[10, 10, 10], 11, &[12, 13]),
            (10, 25, &[10, 10, 10], 11, &[12, 13]),
            (10, 25, &[10, 10, 30], 12, &[13]),
            // One event larger than the byte limit is still kept: a watch must see it.
            (10, 5, &[100], 10, &[11]),
        ];
        for &(max_events, max_bytes, sizes, floor, kept) in cases {
            let mut h = History::with_limits(10, max_events, max_bytes);
            for (i, &size) in sizes.iter().enumerate() {
                h.push(ev(11 + i as u64), size);
            }
            let case = format!("{max_events} events, {max_bytes} bytes, sizes {sizes:?}");
            assert_eq!(h.floor(), floor, "{case}");
            assert_eq!(versions(&h, floor).as_deref(), Some(kept), "{case}");
            assert!(h.since(floor.saturating_sub(1)).is_none(), "{case}");
            assert_eq!(h.bytes, h.events.iter().map(|(_, s)| s).sum::<usize>());
        }
    }

    #[test]
    fn since_returns_only_newer_events() {
        let mut h = History::new(0);
        for rv in 1..=5 {
            h.push(ev(rv), 1);
        }
        assert_eq!(versions(&h, 0), Some(vec![1, 2, 3, 4, 5]));
        assert_eq!(versions(&h, 3), Some(vec![4, 5]));
        assert_eq!(versions(&h, 5), Some(vec![]));
    }
}
