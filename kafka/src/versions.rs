//! The APIs and versions the listener answers, as `ApiVersions` advertises
//! them. Clients pick the highest version both sides know, so these ranges
//! decide every message shape the handlers see.
//!
//! The upper bounds stop before versions that name topics only by id
//! (Fetch 13+, Produce 13) or need features the listener lacks; the lower
//! bounds are those of the kafka-protocol crate (Kafka 4 dropped the older
//! ones too).

use kafka_protocol::messages::ApiKey;

/// `(api, min, max)` of every API the listener answers.
pub(crate) const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 9),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 6),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 5),
    (ApiKey::FindCoordinator, 0, 3),
    (ApiKey::JoinGroup, 0, 5),
    (ApiKey::SyncGroup, 0, 3),
    (ApiKey::Heartbeat, 0, 3),
    (ApiKey::LeaveGroup, 0, 3),
    (ApiKey::OffsetCommit, 2, 7),
    (ApiKey::OffsetFetch, 1, 7),
    (ApiKey::InitProducerId, 0, 4),
];

/// The supported range of `api`, if the listener answers it.
pub(crate) fn range(api: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED
        .iter()
        .find(|(key, _, _)| *key == api)
        .map(|(_, min, max)| (*min, *max))
}

/// Whether the listener answers `api` at `version`.
pub(crate) fn supports(api: ApiKey, version: i16) -> bool {
    range(api).is_some_and(|(min, max)| (min..=max).contains(&version))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_advertised_range_is_one_the_crate_can_encode() {
        for (api, min, max) in SUPPORTED {
            let known = api.valid_versions();
            assert!(min <= max, "{api:?}");
            assert!(
                known.min <= *min && *max <= known.max,
                "{api:?}: {min}..={max}"
            );
        }
        assert!(supports(ApiKey::Fetch, 12));
        assert!(!supports(ApiKey::Fetch, 13));
        assert!(supports(ApiKey::JoinGroup, 0));
        assert!(!supports(ApiKey::EndTxn, 0));
    }
}
