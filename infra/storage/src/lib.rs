//! `dlog-storage`: where sealed segments live once offloaded.
//!
//! | module | owns |
//! |---|---|
//! | [`segment_file`] | the Parquet form of a segment: schema, object keys, encoding and decoding |
//! | [`objstore`] | object stores built from a URL (`s3://`, `file://`, `memory://`) |

pub mod objstore;
pub mod segment_concat;
pub mod segment_file;
