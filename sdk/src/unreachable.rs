//! What a call says when no node answered it: each endpoint tried, once
//! however many retries went to it, the role the client expected there, and
//! why it could not be reached, e.g. "cannot reach the ingest endpoint
//! http://127.0.0.1:1 (tcp connect error: Connection refused (os error
//! 111))". A bare "tcp connect error" tells a person neither which address
//! nor which setting to fix.

use crate::client::failure_kind;

/// The role of the nodes a list of endpoints is expected to hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Nodes serving `LogService` and `AdminService`: writes and admin.
    Ingest,
    /// Nodes serving `ReadService`: reads and subscriptions.
    Reader,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Ingest => "ingest",
            Role::Reader => "reader",
        }
    }
}

/// The endpoints one call (or one stretch of a read between progress)
/// could not reach, in the order first tried, each with its last cause.
#[derive(Debug)]
pub(crate) struct Unreachable {
    role: Role,
    tried: Vec<(String, String)>,
}

impl Unreachable {
    pub(crate) fn new(role: Role) -> Unreachable {
        Unreachable {
            role,
            tried: Vec::new(),
        }
    }

    /// Notes a failure of an attempt at `address` when it is the client's
    /// own (refused connection, timeout, broken connection); a server's
    /// answer is not noted.
    pub(crate) fn note(&mut self, address: &str, status: &tonic::Status) {
        let Some(cause) = own_failure(status) else {
            return;
        };
        match self.tried.iter_mut().find(|(tried, _)| tried == address) {
            Some((_, last)) => *last = cause,
            None => self.tried.push((address.to_owned(), cause)),
        }
    }

    /// The status a call ends with after `last`: as it is when a server
    /// answered it, else one line naming every endpoint tried, followed by
    /// what a server answered before (`earlier`), if one did. It keeps the
    /// kind the retries gave `last` (without its source a transport
    /// failure would read as the server's own `UNKNOWN` or `INTERNAL`).
    pub(crate) fn status(&self, last: tonic::Status, earlier: Option<&str>) -> tonic::Status {
        if own_failure(&last).is_none() || self.tried.is_empty() {
            return last;
        }
        let mut message = self.describe();
        if let Some(earlier) = earlier {
            message.push_str("; before that, ");
            message.push_str(earlier);
        }
        let code = failure_kind(&last).code();
        tonic::Status::with_metadata(code, message, last.metadata().clone())
    }

    fn describe(&self) -> String {
        let role = self.role.name();
        let addresses = || {
            let list = self.tried.iter().map(|(address, _)| address.as_str());
            list.collect::<Vec<_>>().join(", ")
        };
        let one_cause = self.tried.windows(2).all(|pair| pair[0].1 == pair[1].1);
        match self.tried.as_slice() {
            [(address, cause)] => format!("cannot reach the {role} endpoint {address} ({cause})"),
            [(_, cause), ..] if one_cause => {
                format!(
                    "cannot reach the {role} endpoints {} ({cause})",
                    addresses()
                )
            }
            tried => {
                let each = tried
                    .iter()
                    .map(|(address, cause)| format!("{address} ({cause})"));
                let each = each.collect::<Vec<_>>().join(", ");
                format!("cannot reach the {role} endpoints {each}")
            }
        }
    }
}

/// Why an attempt failed without an answer, down to the root cause (the
/// status's message and each cause under it that adds something); `None`
/// for a status a server sent, which never carries a source.
fn own_failure(status: &tonic::Status) -> Option<String> {
    let mut next = std::error::Error::source(status);
    next?;
    let mut cause = status.message().to_owned();
    while let Some(err) = next {
        next = err.source();
        let text = err.to_string();
        // tonic's wrapper of the error below it says nothing of its own.
        let wrapper = text == "transport error" && next.is_some();
        if !wrapper && !cause.contains(&text) {
            cause.push_str(": ");
            cause.push_str(&text);
        }
    }
    Some(cause)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A status as tonic makes it from a failed connection attempt.
    fn refused() -> tonic::Status {
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        tonic::Status::from_error(Box::new(io))
    }

    #[test]
    fn each_endpoint_is_named_once_with_its_role() {
        let mut unreachable = Unreachable::new(Role::Ingest);
        for _ in 0..3 {
            unreachable.note("http://127.0.0.1:1", &refused());
            unreachable.note("http://127.0.0.1:2", &refused());
        }
        let status = unreachable.status(refused(), None);
        let message = status.message();
        assert!(
            message.starts_with(
                "cannot reach the ingest endpoints http://127.0.0.1:1, http://127.0.0.1:2 ("
            ),
            "{message}"
        );
        assert_eq!(message.matches("127.0.0.1:1").count(), 1, "{message}");
        assert_eq!(status.code(), tonic::Code::Unavailable);

        let mut reader = Unreachable::new(Role::Reader);
        reader.note("http://r:1", &refused());
        let message = reader.status(refused(), Some("http://r:2 answered: busy"));
        assert!(
            (message.message()).starts_with("cannot reach the reader endpoint http://r:1 ("),
            "{message}"
        );
        assert!(
            (message.message()).ends_with("; before that, http://r:2 answered: busy"),
            "{message}"
        );
    }

    #[test]
    fn different_causes_are_named_per_endpoint_and_answers_left_alone() {
        let mut unreachable = Unreachable::new(Role::Ingest);
        unreachable.note("http://a:1", &refused());
        let timeout =
            tonic::Status::from_error(Box::new(std::io::Error::from(std::io::ErrorKind::TimedOut)));
        unreachable.note("http://b:1", &timeout);
        let message = unreachable.status(timeout, None).message().to_owned();
        assert!(message.contains("http://a:1 (") && message.contains("http://b:1 ("));
        assert!(
            message.contains("refused") && message.contains("timed out"),
            "{message}"
        );

        // A server's answer is not a failure to reach it, and stays as it is.
        let answered = tonic::Status::not_found("log ns/a not found");
        unreachable.note("http://c:1", &answered);
        assert!(!unreachable.describe().contains("http://c:1"));
        assert_eq!(
            unreachable.status(answered, None).message(),
            "log ns/a not found"
        );
    }
}
