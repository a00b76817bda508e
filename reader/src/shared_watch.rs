//! One background task per key, shared by every reader of that key, that
//! publishes the latest value through a `watch` channel and stops when the
//! last subscriber goes away. The reader uses it for a log's manifest view
//! (one manifest watch per log per reader node) and a segment's LAC (one
//! long-poll per open segment per reader node), so a thousand tailing
//! clients cost the manifest and the cache tier what one client costs.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

/// Keyed publishers; see the module docs.
#[derive(Debug)]
pub struct SharedWatches<K, V> {
    senders: Arc<Mutex<HashMap<K, Arc<watch::Sender<V>>>>>,
}

impl<K, V> Default for SharedWatches<K, V> {
    fn default() -> Self {
        SharedWatches {
            senders: Arc::default(),
        }
    }
}

impl<K, V> SharedWatches<K, V>
where
    K: Eq + Hash + Clone + Send + 'static,
    V: Send + Sync + 'static,
{
    /// A subscription to `key`'s publisher. The first subscriber starts it:
    /// `first` is the initial value and `publish` the task that keeps the
    /// sender up to date; it is stopped once nobody is subscribed.
    pub fn subscribe<F, Fut>(&self, key: K, first: V, publish: F) -> watch::Receiver<V>
    where
        F: FnOnce(Arc<watch::Sender<V>>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let mut senders = self.senders.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(sender) = senders.get(&key) {
            return sender.subscribe();
        }
        let (sender, receiver) = watch::channel(first);
        let sender = Arc::new(sender);
        senders.insert(key.clone(), sender.clone());
        let work = publish(sender.clone());
        let registry = self.senders.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = work => {}
                _ = sender.closed() => {}
            }
            // Subscribers arrive under the lock, so none is lost between the
            // check and the removal; a late one restarts the publisher.
            let mut senders = registry.lock().unwrap_or_else(|p| p.into_inner());
            if senders.get(&key).is_some_and(|s| Arc::ptr_eq(s, &sender)) {
                senders.remove(&key);
            }
        });
        receiver
    }

    /// The publisher of `key`, if one runs (to offer it a fresher value).
    pub fn sender(&self, key: &K) -> Option<Arc<watch::Sender<V>>> {
        let senders = self.senders.lock().unwrap_or_else(|p| p.into_inner());
        senders.get(key).cloned()
    }

    /// How many keys have a running publisher.
    pub fn len(&self) -> usize {
        self.senders.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn one_publisher_per_key_stopped_with_its_last_subscriber() {
        let watches: SharedWatches<&'static str, u64> = SharedWatches::default();
        let started = Arc::new(AtomicUsize::new(0));
        let publisher = |started: Arc<AtomicUsize>| {
            move |sender: Arc<watch::Sender<u64>>| async move {
                started.fetch_add(1, Ordering::SeqCst);
                for i in 1.. {
                    sender.send_replace(i);
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
            }
        };
        let mut a = watches.subscribe("log", 0, publisher(started.clone()));
        let mut b = watches.subscribe("log", 0, publisher(started.clone()));
        a.changed().await.unwrap();
        b.changed().await.unwrap();
        assert_eq!(
            started.load(Ordering::SeqCst),
            1,
            "the second subscriber shares the first publisher"
        );
        assert_eq!(watches.len(), 1);

        drop(a);
        drop(b);
        for _ in 0..100 {
            if watches.is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert!(
            watches.is_empty(),
            "the publisher stops with its last subscriber"
        );

        let mut c = watches.subscribe("log", 0, publisher(started.clone()));
        c.changed().await.unwrap();
        assert_eq!(
            started.load(Ordering::SeqCst),
            2,
            "a later subscriber starts a new one"
        );
    }
}
