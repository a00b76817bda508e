//! The history of a run and the checker over it.
//!
//! Clients record every append they made and how it ended; readers record
//! every record they read (with its offset). After the run the cluster is
//! healed, every log is recovered and sealed by a fresh owner and read in
//! full from the cache nodes: the final log. The checker asserts:
//! * every acknowledged append is in the final log, once, at the offsets
//!   its acknowledgement gave (and at its `expected_offset`, if it had one);
//! * no record (acknowledged or not) is in the final log twice;
//! * offsets are dense: segments follow one another without gap or
//!   overlap, entries within a segment too, and each sealed segment ends
//!   where its last entry ends;
//! * every record a reader saw is the final log's record at that offset
//!   (so no two readers saw different records at an offset, and nothing a
//!   reader saw at or below the LAC disappeared later);
//! * the sealed end of every segment covers its acknowledged entries (an
//!   acknowledged offset beyond the log's end is reported as lost);
//! * in an incarnation deleted during the run (no final log), no two
//!   acknowledgements and no two reads disagree on an offset's record.
//!
//! Logs are keyed by incarnation (`name#log_id`): a log deleted and
//! created again is another log, starting at offset 0.

use std::collections::BTreeMap;

/// How an append ended for its client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Acked { first: u64, last: u64 },
    Failed(String),
}

/// One append of one record.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub client: usize,
    pub log: String,
    pub payload: String,
    pub expected: Option<u64>,
    pub outcome: Outcome,
}

/// One record a reader read.
#[derive(Debug, Clone)]
pub struct Observation {
    pub reader: usize,
    pub log: String,
    pub offset: u64,
    pub payload: String,
}

/// A sealed segment of the final log, as read back.
#[derive(Debug, Clone)]
pub struct FinalSegment {
    pub segment_id: u64,
    pub start_offset: u64,
    pub end_offset: u64,
    /// `(first_offset, payloads)` of each entry, in entry order.
    pub entries: Vec<(u64, Vec<String>)>,
}

/// Everything that happened in a run.
#[derive(Debug, Default)]
pub struct History {
    pub attempts: Vec<Attempt>,
    pub observations: Vec<Observation>,
    /// Log → its segments read back after the run.
    pub finals: BTreeMap<String, Vec<FinalSegment>>,
}

/// Checks the history; returns the violations found.
pub fn check<'a>(history: &'a History) -> Vec<String> {
    let mut violations = Vec::new();
    let mut logs: BTreeMap<&'a str, BTreeMap<u64, &'a str>> = BTreeMap::new();
    for (log, segments) in &history.finals {
        let mut records = BTreeMap::new();
        let mut next: Option<u64> = None;
        for segment in segments {
            if let Some(next) = next
                && segment.start_offset != next
            {
                violations.push(format!(
                    "{log}: segment {} starts at {} but the one before ends at {next}",
                    segment.segment_id, segment.start_offset
                ));
            }
            let mut at = segment.start_offset;
            for (first, payloads) in &segment.entries {
                if *first != at {
                    violations.push(format!(
                        "{log}: segment {} has an entry at offset {first} where {at} was due",
                        segment.segment_id
                    ));
                    at = *first;
                }
                for payload in payloads {
                    records.insert(at, payload.as_str());
                    at += 1;
                }
            }
            if at != segment.end_offset {
                violations.push(format!(
                    "{log}: segment {} is sealed at end {} but its entries end at {at}",
                    segment.segment_id, segment.end_offset
                ));
            }
            next = Some(segment.end_offset);
        }
        logs.insert(log.as_str(), records);
    }

    // No record twice.
    for (log, records) in &logs {
        let mut seen: BTreeMap<&str, u64> = BTreeMap::new();
        for (offset, payload) in records {
            if let Some(before) = seen.insert(payload, *offset) {
                violations.push(format!(
                    "{log}: record {payload:?} is in the log twice, at {before} and {offset}"
                ));
            }
        }
    }

    // Incarnations deleted during the run have no final log: what was
    // acknowledged in them and what readers saw there must agree.
    let mut gone: BTreeMap<&str, BTreeMap<u64, (&str, String)>> = BTreeMap::new();
    let mut agree = |log: &'a str, offset: u64, payload: &'a str, who: String| {
        let seen = gone.entry(log).or_default();
        match seen.get(&offset) {
            Some((other, by)) if *other != payload => violations.push(format!(
                "{log} (deleted later): {who} {payload:?} at offset {offset}, but {by} {other:?} there"
            )),
            Some(_) => {}
            None => {
                seen.insert(offset, (payload, who));
            }
        }
    };
    for attempt in &history.attempts {
        if let Outcome::Acked { first, .. } = attempt.outcome
            && !logs.contains_key(attempt.log.as_str())
        {
            let who = format!("client {} had acknowledged", attempt.client);
            agree(&attempt.log, first, &attempt.payload, who);
        }
    }
    for seen in &history.observations {
        if !logs.contains_key(seen.log.as_str()) {
            let who = format!("reader {} saw", seen.reader);
            agree(&seen.log, seen.offset, &seen.payload, who);
        }
    }

    // Every acknowledged append of a live log, at its offsets.
    for attempt in &history.attempts {
        let Outcome::Acked { first, last } = attempt.outcome else {
            continue;
        };
        if !logs.contains_key(attempt.log.as_str()) {
            continue; // a deleted incarnation (above)
        }
        let records = logs.get(attempt.log.as_str());
        let found = records.and_then(|r| r.get(&first).copied());
        if first != last {
            violations.push(format!(
                "{}: one record acknowledged at offsets {first}..={last}",
                attempt.log
            ));
        }
        match found {
            Some(payload) if payload == attempt.payload => {}
            Some(other) => violations.push(format!(
                "{}: acknowledged record {:?} (client {}) at offset {first}, but the log has {other:?} there",
                attempt.log, attempt.payload, attempt.client
            )),
            None => violations.push(format!(
                "{}: acknowledged record {:?} (client {}) at offset {first} was lost (the log ends at {})",
                attempt.log,
                attempt.payload,
                attempt.client,
                records
                    .and_then(|r| r.keys().next_back())
                    .map_or(0, |last| last + 1)
            )),
        }
        if let Some(expected) = attempt.expected
            && expected != first
        {
            violations.push(format!(
                "{}: record {:?} appended with expected_offset {expected} was acknowledged at {first}",
                attempt.log, attempt.payload
            ));
        }
    }

    // What readers saw is what the log holds.
    for seen in &history.observations {
        if !logs.contains_key(seen.log.as_str()) {
            continue; // a deleted incarnation (above)
        }
        let found = logs
            .get(seen.log.as_str())
            .and_then(|r| r.get(&seen.offset).copied());
        if found != Some(seen.payload.as_str()) {
            violations.push(format!(
                "{}: reader {} saw {:?} at offset {}, but the log has {found:?} there",
                seen.log, seen.reader, seen.payload, seen.offset
            ));
        }
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history() -> History {
        let mut history = History::default();
        history.finals.insert(
            "l".into(),
            vec![FinalSegment {
                segment_id: 1,
                start_offset: 0,
                end_offset: 2,
                entries: vec![(0, vec!["a".into()]), (1, vec!["b".into()])],
            }],
        );
        history.attempts.push(Attempt {
            client: 0,
            log: "l".into(),
            payload: "b".into(),
            expected: Some(1),
            outcome: Outcome::Acked { first: 1, last: 1 },
        });
        history
    }

    #[test]
    fn a_consistent_history_passes() {
        assert_eq!(check(&history()), Vec::<String>::new());
    }

    #[test]
    fn a_lost_ack_a_gap_a_duplicate_and_a_divergent_read_are_found() {
        let mut history = history();
        history.attempts.push(Attempt {
            client: 1,
            log: "l".into(),
            payload: "c".into(),
            expected: None,
            outcome: Outcome::Acked { first: 2, last: 2 },
        });
        history.observations.push(Observation {
            reader: 0,
            log: "l".into(),
            offset: 0,
            payload: "x".into(),
        });
        let segments = history.finals.get_mut("l").unwrap();
        segments.push(FinalSegment {
            segment_id: 2,
            start_offset: 3,
            end_offset: 4,
            entries: vec![(3, vec!["a".into()])],
        });
        let violations = check(&history);
        assert_eq!(violations.len(), 4, "{violations:#?}");
    }
}
