//! `dlog-meta`: the cluster's metadata and who is in the cluster.
//!
//! | module | owns |
//! |---|---|
//! | [`metastore`] | the `MetaStore` KV trait with etcd semantics; etcd and embedded backends |
//! | [`manifest`] | logs, epochs, segments, owners, nodes, trim points, subscriptions on a `MetaStore` |
//! | [`cache_clients`] | connections to the cache nodes the manifest names, by id; suspects |
//! | [`auth`] | client tokens with scopes: the node's token table, grants, checks |
//! | [`transport`] | how a cache client reaches its node: gRPC, or in-process (simulation) |
//! | [`tls`] | a node's certificate, key and CA, reloaded when they change; peers' roles |

pub mod auth;
pub mod cache_clients;
pub mod manifest;
pub mod metastore;
pub mod tls;
pub mod transport;
