//! One watch per kind, shared by every controller that needs it. Each watch is a long-lived
//! connection to the API server and a stream of decoded objects; seven controllers with their own
//! watches held 26 of them (Jobs three times). Sharing them is what keeps the operator small
//! (docs/benchmarks.md, bench/operator.sh).
//!
//! Kinds the controllers reconcile are kept whole (their stores feed the controllers and the
//! backup index); kinds that only wake a controller are watched as metadata, since every
//! reconciler reads the child it needs by name. `managedFields` are dropped from what is kept:
//! nothing reads them and they are often the largest part of an object.

use std::fmt::Debug;
use std::hash::Hash;

use futures::{Stream, StreamExt};
use kube::Resource;
use kube::runtime::reflector::{self, ReflectHandle, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};

/// How many changes a slow subscriber may fall behind before the watch waits for it.
const SUBSCRIBER_BUFFER: usize = 256;

pub struct SharedWatch<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + Hash + Clone + Default,
{
    store: Store<K>,
    writer: Writer<K>,
}

impl<K> SharedWatch<K>
where
    K: Resource + Clone + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Default + Send + Sync,
{
    pub fn new() -> Self {
        let (store, writer) = reflector::store_shared(SUBSCRIBER_BUFFER);
        Self { store, writer }
    }

    /// A stream of every object that changes; take every subscription before `start`.
    pub fn subscribe(&self) -> ReflectHandle<K> {
        self.writer
            .subscribe()
            .expect("a shared store always hands out subscriptions")
    }

    pub fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// Runs the watch in the background for as long as the operator runs (it retries with
    /// backoff when the API server is away).
    pub fn start<S>(self, events: S)
    where
        S: Stream<Item = watcher::Result<watcher::Event<K>>> + Send + 'static,
    {
        let stream = events
            .default_backoff()
            .modify(|object| object.meta_mut().managed_fields = None)
            .reflect_shared(self.writer)
            .for_each(|event| {
                if let Err(e) = event {
                    tracing::warn!(error = %e, "watch failed; retrying");
                }
                futures::future::ready(())
            });
        tokio::spawn(stream);
    }
}

impl<K> Default for SharedWatch<K>
where
    K: Resource + Clone + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Default + Send + Sync,
{
    fn default() -> Self {
        Self::new()
    }
}
