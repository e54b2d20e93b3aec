//! A work queue in the style of client-go's: keys are deduplicated while queued, a key is never
//! processed by two workers at once (a key added while in flight is re-queued when done), and
//! delayed requeues keep only the earliest deadline per key.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

struct Inner<K> {
    queue: VecDeque<K>,
    queued: HashSet<K>,
    processing: HashSet<K>,
    dirty: HashSet<K>,
    delayed: HashMap<K, Instant>,
}

/// The queue; share it behind an `Arc`.
pub struct WorkQueue<K> {
    inner: Mutex<Inner<K>>,
    notify: Notify,
}

impl<K: Clone + Eq + Hash + Send + 'static> WorkQueue<K> {
    /// An empty queue.
    pub fn new() -> Arc<Self> {
        Arc::new(WorkQueue {
            inner: Mutex::new(Inner {
                queue: VecDeque::new(),
                queued: HashSet::new(),
                processing: HashSet::new(),
                dirty: HashSet::new(),
                delayed: HashMap::new(),
            }),
            notify: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<K>> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues `key` now.
    pub fn add(&self, key: K) {
        let mut g = self.lock();
        if g.processing.contains(&key) {
            g.dirty.insert(key);
            return;
        }
        if g.queued.insert(key.clone()) {
            g.queue.push_back(key);
            drop(g);
            self.notify.notify_one();
        }
    }

    /// Queues `key` after `delay`; an earlier pending deadline for the same key wins.
    pub fn add_after(self: &Arc<Self>, key: K, delay: Duration) {
        if delay.is_zero() {
            self.add(key);
            return;
        }
        let deadline = Instant::now() + delay;
        {
            let mut g = self.lock();
            match g.delayed.get(&key) {
                Some(d) if *d <= deadline => return,
                _ => {
                    g.delayed.insert(key.clone(), deadline);
                }
            }
        }
        let q = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep_until(deadline).await;
            let fire = {
                let mut g = q.lock();
                if g.delayed.get(&key) == Some(&deadline) {
                    g.delayed.remove(&key);
                    true
                } else {
                    false
                }
            };
            if fire {
                q.add(key);
            }
        });
    }

    /// Waits for the next key and marks it in flight; call [`WorkQueue::done`] after processing.
    pub async fn next(&self) -> K {
        loop {
            let notified = self.notify.notified();
            {
                let mut g = self.lock();
                if let Some(k) = g.queue.pop_front() {
                    g.queued.remove(&k);
                    g.processing.insert(k.clone());
                    if !g.queue.is_empty() {
                        self.notify.notify_one();
                    }
                    return k;
                }
            }
            notified.await;
        }
    }

    /// Marks `key` processed; re-queues it if it was added meanwhile.
    pub fn done(&self, key: &K) {
        let requeue = {
            let mut g = self.lock();
            g.processing.remove(key);
            g.dirty.remove(key)
        };
        if requeue {
            self.add(key.clone());
        }
    }

    /// Number of keys waiting (not counting in-flight or delayed ones).
    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dedupes_and_requeues_dirty_keys() {
        let q = WorkQueue::new();
        q.add("a");
        q.add("a");
        q.add("b");
        assert_eq!(q.len(), 2);
        let k = q.next().await;
        assert_eq!(k, "a");
        q.add("a"); // while in flight: deferred
        assert_eq!(q.len(), 1);
        q.done(&"a");
        assert_eq!(q.len(), 2);
        assert_eq!(q.next().await, "b");
        assert_eq!(q.next().await, "a");
    }

    #[tokio::test(start_paused = true)]
    async fn delayed_adds_keep_the_earliest_deadline() {
        let q = WorkQueue::new();
        q.add_after("a", Duration::from_secs(10));
        q.add_after("a", Duration::from_secs(2));
        q.add_after("a", Duration::from_secs(5));
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(q.len(), 1);
        assert_eq!(q.next().await, "a");
        q.done(&"a");
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert_eq!(q.len(), 0, "the later deadlines were dropped");
    }
}
