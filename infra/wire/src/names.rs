//! Validated namespace and log names.
//!
//! A full log name is `ns/log`; each part matches `[A-Za-z0-9._-]{1,128}` and
//! is neither `.` nor `..` (names become object-store folders and etcd key
//! segments, so nothing else may slip through). Holding a [`LogName`] means
//! the name was checked.

use std::fmt;
use std::str::FromStr;

use crate::error::{Classify, ErrorKind};

/// Longest namespace or log part, in bytes.
pub const MAX_NAME_PART_LEN: usize = 128;

/// A name failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {name:?}: {reason}")]
pub struct NameError {
    pub what: &'static str,
    pub name: String,
    pub reason: &'static str,
}

impl Classify for NameError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidArgument
    }
}

fn check_part(what: &'static str, part: &str) -> Result<(), NameError> {
    let fail = |reason| {
        Err(NameError {
            what,
            name: part.to_owned(),
            reason,
        })
    };
    if part.is_empty() {
        return fail("must not be empty");
    }
    if part.len() > MAX_NAME_PART_LEN {
        return fail("longer than 128 bytes");
    }
    if part == "." || part == ".." {
        return fail("must not be . or ..");
    }
    if !part
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return fail("only A-Z a-z 0-9 . _ - are allowed");
    }
    Ok(())
}

/// A namespace name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Namespace(String);

impl Namespace {
    pub fn new(name: &str) -> Result<Self, NameError> {
        check_part("namespace", name)?;
        Ok(Namespace(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A full log name `ns/log`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LogName {
    namespace: Namespace,
    log: String,
}

impl LogName {
    /// The log a gRPC request names; `INVALID_ARGUMENT` with the reason
    /// when the name is not valid.
    pub fn from_request(name: &str) -> Result<Self, tonic::Status> {
        name.parse().map_err(|err| crate::error::to_status(&err))
    }

    pub fn new(namespace: &str, log: &str) -> Result<Self, NameError> {
        let namespace = Namespace::new(namespace)?;
        check_part("log name", log)?;
        Ok(LogName {
            namespace,
            log: log.to_owned(),
        })
    }

    pub fn namespace(&self) -> &Namespace {
        &self.namespace
    }

    /// The part after the slash.
    pub fn log(&self) -> &str {
        &self.log
    }
}

impl FromStr for LogName {
    type Err = NameError;

    fn from_str(full: &str) -> Result<Self, NameError> {
        match full.split_once('/') {
            Some((ns, log)) if !log.contains('/') => {
                LogName::new(ns, log).map_err(|mut err| {
                    // Report the whole name the user typed, keep the reason.
                    err.what = "log name";
                    err.name = full.to_owned();
                    err
                })
            }
            _ => Err(NameError {
                what: "log name",
                name: full.to_owned(),
                reason: "expected NS/LOG",
            }),
        }
    }
}

impl TryFrom<&str> for LogName {
    type Error = NameError;

    fn try_from(full: &str) -> Result<Self, NameError> {
        full.parse()
    }
}

impl fmt::Display for LogName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.log)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A name is echoed back (to the client, and into node logs) only
    /// escaped: a hostile name cannot forge log lines or terminal colours.
    #[test]
    fn invalid_names_are_echoed_escaped() {
        for hostile in [
            "ns\n2026-12-01 INFO forged/x",
            "ns/\u{1b}[31mred",
            "ns/a\rb",
        ] {
            let err = hostile.parse::<LogName>().unwrap_err().to_string();
            assert!(
                !err.contains(['\n', '\r', '\u{1b}']),
                "{hostile:?} echoed raw: {err:?}"
            );
        }
    }

    #[test]
    fn accepts_valid_names() {
        let name: LogName = "orders.eu-1/payments_v2".parse().unwrap();
        assert_eq!(name.namespace().as_str(), "orders.eu-1");
        assert_eq!(name.log(), "payments_v2");
        assert_eq!(name.to_string(), "orders.eu-1/payments_v2");
    }

    #[test]
    fn rejects_invalid_names_with_precise_reasons() {
        let cases = [
            ("nolog", "expected NS/LOG"),
            ("a/b/c", "expected NS/LOG"),
            ("/log", "must not be empty"),
            ("ns/", "must not be empty"),
            ("ns/..", "must not be . or .."),
            ("./log", "must not be . or .."),
            ("ns/lo g", "only A-Z a-z 0-9 . _ - are allowed"),
            ("ns/ü", "only A-Z a-z 0-9 . _ - are allowed"),
        ];
        for (input, reason) in cases {
            let err = input.parse::<LogName>().unwrap_err();
            assert_eq!(err.reason, reason, "for {input:?}");
            assert_eq!(err.name, input);
            assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        }
        let long = format!("ns/{}", "x".repeat(129));
        assert_eq!(
            long.parse::<LogName>().unwrap_err().reason,
            "longer than 128 bytes"
        );
        assert!(format!("ns/{}", "x".repeat(128)).parse::<LogName>().is_ok());
        assert_eq!(
            "ns/a b".parse::<LogName>().unwrap_err().to_string(),
            "invalid log name \"ns/a b\": only A-Z a-z 0-9 . _ - are allowed"
        );
    }

    proptest! {
        #[test]
        fn valid_names_round_trip(ns in "[A-Za-z0-9._-]{1,128}", log in "[A-Za-z0-9._-]{1,128}") {
            prop_assume!(ns != "." && ns != ".." && log != "." && log != "..");
            let full = format!("{ns}/{log}");
            let name: LogName = full.parse().unwrap();
            prop_assert_eq!(name.to_string(), full);
        }
    }
}
