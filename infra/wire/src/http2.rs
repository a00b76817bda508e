//! HTTP/2 flow-control windows of every dlog server (`dlog serve`,
//! `dlog standalone`) and client (the SDK, nodes reaching cache nodes).
//!
//! The h2 library closes a connection (GOAWAY `ENHANCE_YOUR_CALM`,
//! "too_many_data_frames") once the small DATA frames (under 256 bytes) it
//! holds unread cost more than half the connection window: each such frame
//! is charged 256 bytes minus its length. An ingest node's replication
//! stream sends many small messages (LAC updates are about 40 bytes), and
//! a cache node that is busy for a moment holds them unread. With hyper's
//! default windows (1 MiB each) about 2 500 such frames closed the
//! connection and failed every replica on it at once. Clients are exposed
//! the same way: a thousand tailing reads on one connection receive many
//! small frames.
//!
//! With these windows, one stream the server does not read can hold at most
//! [`STREAM_WINDOW`] bytes, and its small frames (a gRPC message is at least
//! 5 bytes; ours at least 20) are charged at most 1 MiB / 20 × 236 ≈ 12 MiB,
//! within the budget of [`CONNECTION_WINDOW`] / 2 = 16 MiB.

/// Bytes a peer may send on one connection before the server reads them.
pub const CONNECTION_WINDOW: u32 = 32 * 1024 * 1024;
/// Bytes a peer may send on one stream before the server reads them.
pub const STREAM_WINDOW: u32 = 1024 * 1024;
