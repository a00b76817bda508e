//! Generated protobuf and gRPC code of package `dlog.v1` (see `infra/wire/proto`).
//!
//! Payload fields are `bytes::Bytes`, so records move from the wire to the
//! journal without copies. Nothing outside the service edges should use these
//! types directly: convert them with the `TryFrom` impls in [`crate::record`]
//! and [`crate::names`], which validate names and limits.

#![allow(missing_docs, missing_debug_implementations, clippy::all)]

tonic::include_proto!("dlog.v1");

/// Encoded `FileDescriptorSet` of every `dlog.v1` proto, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("dlog_descriptor");
