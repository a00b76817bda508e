//! How many reads may run at once: on the whole node, and per client. A
//! read holds a [`ReadPermit`] for its whole life (including while it
//! follows an idle log) and gives it back when it ends or its client goes
//! away; a read over either bound is refused with `RESOURCE_EXHAUSTED`,
//! which clients retry later.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{Error, Result};

/// Reads running per client.
type ClientCounts = Arc<Mutex<HashMap<String, usize>>>;

/// The bounds and what is in use.
#[derive(Debug)]
pub struct Admission {
    node: Arc<Semaphore>,
    max_node: usize,
    per_client: usize,
    clients: ClientCounts,
}

/// One admitted read.
#[derive(Debug)]
pub struct ReadPermit {
    _node: OwnedSemaphorePermit,
    client: Option<(ClientCounts, String)>,
}

impl Drop for ReadPermit {
    fn drop(&mut self) {
        if let Some((clients, client)) = &self.client {
            let mut clients = clients.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(count) = clients.get_mut(client) {
                *count -= 1;
                if *count == 0 {
                    clients.remove(client);
                }
            }
        }
    }
}

impl Admission {
    pub fn new(max_node: usize, per_client: usize) -> Admission {
        let max_node = max_node.clamp(1, Semaphore::MAX_PERMITS);
        Admission {
            node: Arc::new(Semaphore::new(max_node)),
            max_node,
            per_client: per_client.max(1),
            clients: Arc::default(),
        }
    }

    /// Admits one more read of `client` (its address; `None`: unknown,
    /// counted against the node only), or says which bound it hit.
    pub fn admit(&self, client: Option<&str>) -> Result<ReadPermit> {
        let node = self.node.clone().try_acquire_owned().map_err(|_| {
            Error::Busy(format!(
                "this reader node runs {} reads, its maximum; retry later",
                self.max_node
            ))
        })?;
        let client = match client {
            None => None,
            Some(client) => {
                let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
                let count = clients.entry(client.to_owned()).or_default();
                if *count >= self.per_client {
                    return Err(Error::Busy(format!(
                        "client {client} runs {} reads on this node, its maximum; retry later",
                        self.per_client
                    )));
                }
                *count += 1;
                Some((self.clients.clone(), client.to_owned()))
            }
        };
        Ok(ReadPermit {
            _node: node,
            client,
        })
    }

    /// Reads running now.
    pub fn running(&self) -> usize {
        self.max_node - self.node.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use dlog_wire::error::{Classify, ErrorKind};

    use super::*;

    #[test]
    fn reads_are_bounded_per_node_and_per_client_and_given_back() {
        let admission = Admission::new(3, 2);
        let a1 = admission.admit(Some("a")).unwrap();
        let _a2 = admission.admit(Some("a")).unwrap();
        let err = admission.admit(Some("a")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ResourceExhausted, "{err}");
        let _b1 = admission.admit(Some("b")).unwrap();
        let err = admission.admit(None).unwrap_err();
        assert!(
            err.to_string().contains("reader node runs 3 reads"),
            "{err}"
        );
        assert_eq!(admission.running(), 3);
        drop(a1);
        assert_eq!(admission.running(), 2);
        let _a3 = admission.admit(Some("a")).unwrap();
    }
}
