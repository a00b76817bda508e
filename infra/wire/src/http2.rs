//! HTTP/2 flow-control windows and limits of every dlog server (`dlog
//! serve`, `dlog standalone`) and client (the SDK, nodes reaching cache
//! nodes).
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

/// Streams one connection may have open at once on a server, by default
/// (`node.max_streams_per_connection`): a client that opens more waits for
/// one to close. High enough for a reader node's streams to a cache node
/// at its default 10 000 reads.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 16_384;
/// Bytes of request headers a server takes (names and values, with
/// HTTP/2's 32 bytes per field); larger requests are refused.
pub const MAX_HEADER_LIST_BYTES: u32 = 64 * 1024;
