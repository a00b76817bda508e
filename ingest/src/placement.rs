//! Where a segment's replicas go: the choice of an ensemble among the live
//! cache nodes by their zones (ARCHITECTURE.md, "Replica placement").
//!
//! A pure function of the live nodes, the ensemble size E and a seed (the
//! log id), so that it is tested on its own and the same inputs always give
//! the same ensemble. The rules, in order of precedence:
//!
//! 1. **ensemble size**: E nodes, or every live node if fewer are live (the
//!    caller refuses fewer than the ack quorum);
//! 2. **distinct zones**: the ensemble spans min(E, zones live) zones: nodes
//!    are taken one per zone, round by round, so no zone holds a second
//!    replica while a zone with a live node holds none;
//! 3. **spread**: the seed rotates the order of the zones and the order of
//!    the nodes inside each zone, so logs spread over zones and nodes.
//!
//! A cluster where no live node has a zone (`--zone` unset) has no zone
//! rule in force, and nothing is reported about it. Nodes without a zone
//! beside nodes with one come last, and an ensemble that takes one counts
//! it as sharing a zone (the rule gave way): it may sit in any of them. When a rule gives way (too few
//! nodes, too few zones), [`Placement::relaxed`] says which, so the owner
//! can log it and count it (`dlog_ingest_placement_relaxed_total`).
//!
//! [`spread`] is the same order without the cut at E: recovery takes its
//! replacements from it, zones the kept replicas lack first
//! ([`prefer_missing_zones`]).

use std::collections::BTreeMap;

use dlog_meta::manifest::NodeInfo;

/// A rule of placement that could not be met.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Relaxed {
    /// Fewer live nodes than the ensemble size: a smaller ensemble.
    EnsembleSize { wanted: usize, live: usize },
    /// Fewer live zones than replicas: some zone holds two replicas.
    DistinctZones { replicas: usize, zones: usize },
}

impl Relaxed {
    /// The rule's name, the `rule` label of the metric.
    pub fn rule(&self) -> &'static str {
        match self {
            Relaxed::EnsembleSize { .. } => "ensemble_size",
            Relaxed::DistinctZones { .. } => "distinct_zones",
        }
    }
}

impl std::fmt::Display for Relaxed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Relaxed::EnsembleSize { wanted, live } => write!(
                f,
                "rule ensemble_size gave way: {live} cache nodes live, ensemble size {wanted}"
            ),
            Relaxed::DistinctZones { replicas, zones } => write!(
                f,
                "rule distinct_zones gave way: {replicas} replicas over {zones} live zones"
            ),
        }
    }
}

/// An ensemble and the rules it had to relax.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The chosen nodes, in slot order.
    pub nodes: Vec<NodeInfo>,
    pub relaxed: Vec<Relaxed>,
}

impl Placement {
    /// The zone of each chosen node, in slot order.
    pub fn zones(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.zone.clone()).collect()
    }
}

/// A 64-bit mix of `x` (splitmix64's finaliser): the zone rotation and the
/// rotation inside zones come from different mixes of one seed, so they do
/// not move in step.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Every node of `live`, ordered for placement: one node of each zone per
/// round (zones sorted by name, then rotated by `seed`; the nodes of a zone
/// sorted by id, then rotated by a mix of `seed`). The first k nodes span
/// min(k, zones) zones, for every k.
pub fn spread(live: &[NodeInfo], seed: u64) -> Vec<NodeInfo> {
    let mut zones: BTreeMap<&str, Vec<&NodeInfo>> = BTreeMap::new();
    for node in live {
        zones.entry(node.zone.as_str()).or_default().push(node);
    }
    // Nodes without a zone beside nodes with one (a cluster half rolled
    // onto `--zone`) sit in some zone nobody knows: they come after every
    // node of a known zone, so they never pass for a zone of their own.
    let unknown = if zones.len() > 1 {
        zones.remove("")
    } else {
        None
    };
    let node_seed = mix(seed ^ 0x5a5a_5a5a_5a5a_5a5a);
    // Each zone's nodes rotate by a mix of its own (by the zone's place in
    // name order), so zones of equal size do not move in step and logs
    // meet every combination of their nodes.
    fn rotated(node_seed: u64, index: usize, mut group: Vec<&NodeInfo>) -> Vec<&NodeInfo> {
        group.sort_by(|a, b| a.id.cmp(&b.id));
        let turn = (mix(node_seed.wrapping_add(index as u64)) % group.len() as u64) as usize;
        group.rotate_left(turn);
        group
    }
    let mut groups: Vec<Vec<&NodeInfo>> = (zones.into_values().enumerate())
        .map(|(index, group)| rotated(node_seed, index, group))
        .collect();
    if groups.is_empty() {
        return Vec::new();
    }
    let zone_turn = (mix(seed) % groups.len() as u64) as usize;
    groups.rotate_left(zone_turn);
    let rounds = groups.iter().map(Vec::len).max().unwrap_or(0);
    let mut ordered = Vec::with_capacity(live.len());
    for round in 0..rounds {
        for group in &groups {
            if let Some(node) = group.get(round) {
                ordered.push((*node).clone());
            }
        }
    }
    let unknown = unknown.map(|group| rotated(node_seed, usize::MAX, group));
    ordered.extend(unknown.into_iter().flatten().cloned());
    ordered
}

/// The ensemble of `size` nodes (at least one) among `live` for `seed`,
/// and the rules that gave way.
pub fn place(live: &[NodeInfo], size: usize, seed: u64) -> Placement {
    let size = size.max(1);
    let mut nodes = spread(live, seed);
    nodes.truncate(size);
    let mut relaxed = Vec::new();
    if live.len() < size {
        relaxed.push(Relaxed::EnsembleSize {
            wanted: size,
            live: live.len(),
        });
    }
    let zones_in_force = live.iter().any(|n| !n.zone.is_empty());
    // A node without a zone, chosen beside zoned ones, may share a zone
    // with any of them: it counts as no zone of its own.
    let mut chosen_zones: Vec<&str> = (nodes.iter().map(|n| n.zone.as_str()))
        .filter(|zone| !zone.is_empty())
        .collect();
    chosen_zones.sort_unstable();
    chosen_zones.dedup();
    if zones_in_force && chosen_zones.len() < nodes.len() {
        relaxed.push(Relaxed::DistinctZones {
            replicas: nodes.len(),
            zones: chosen_zones.len(),
        });
    }
    Placement { nodes, relaxed }
}

/// `candidates` (in [`spread`] order) with those in a zone none of
/// `kept_zones` is in first, the rest after, each part in its order.
pub fn prefer_missing_zones(candidates: Vec<NodeInfo>, kept_zones: &[String]) -> Vec<NodeInfo> {
    let (missing, held): (Vec<NodeInfo>, Vec<NodeInfo>) = candidates
        .into_iter()
        .partition(|node| !kept_zones.contains(&node.zone));
    missing.into_iter().chain(held).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeSet, HashMap};

    fn node(id: &str, zone: &str) -> NodeInfo {
        NodeInfo {
            id: id.to_owned(),
            address: format!("http://{id}"),
            zone: zone.to_owned(),
            capacity: 0,
            kafka: None,
        }
    }

    /// A small deterministic generator (xorshift64*), for clusters of
    /// random shape.
    struct Gen(u64);

    impl Gen {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
        }
    }

    /// `counts[z]` nodes in zone `z{z}`, ids `n{z}-{i}`.
    fn cluster(counts: &[usize]) -> Vec<NodeInfo> {
        counts
            .iter()
            .enumerate()
            .flat_map(|(z, &count)| {
                (0..count).map(move |i| node(&format!("n{z}-{i}"), &format!("z{z}")))
            })
            .collect()
    }

    fn distinct_zones(nodes: &[NodeInfo]) -> usize {
        nodes.iter().map(|n| &n.zone).collect::<BTreeSet<_>>().len()
    }

    #[test]
    fn ensembles_span_min_of_e_and_the_live_zones_over_many_shapes_and_seeds() {
        let mut generator = Gen(0x1234_5678_9abc_def1);
        for _ in 0..2000 {
            let zones = 1 + generator.below(5) as usize;
            let counts: Vec<usize> = (0..zones)
                .map(|_| 1 + generator.below(4) as usize)
                .collect();
            let mut live = cluster(&counts);
            // The registrations' order must not matter.
            let shift = generator.below(live.len() as u64) as usize;
            live.rotate_left(shift);
            let size = 1 + generator.below(5) as usize;
            let seed = generator.below(u64::MAX);
            let placement = place(&live, size, seed);
            let nodes = &placement.nodes;
            assert_eq!(nodes.len(), size.min(live.len()), "{counts:?} E={size}");
            let ids: BTreeSet<&str> = nodes.iter().map(|n| n.id.as_str()).collect();
            assert_eq!(ids.len(), nodes.len(), "a node twice: {nodes:?}");
            assert_eq!(
                distinct_zones(nodes),
                size.min(zones),
                "{counts:?} E={size} seed={seed}: {nodes:?}"
            );
            // No zone holds two replicas more than another live zone holds.
            let mut per_zone: HashMap<&str, usize> = HashMap::new();
            for n in nodes {
                *per_zone.entry(n.zone.as_str()).or_default() += 1;
            }
            for (z, count) in counts.iter().enumerate() {
                let held = per_zone.get(format!("z{z}").as_str()).copied().unwrap_or(0);
                let most = per_zone.values().copied().max().unwrap_or(0);
                assert!(
                    held + 1 >= most || held == *count,
                    "zone z{z} holds {held} of {count} while another holds {most}: {nodes:?}"
                );
            }
            let expect_size = live.len() < size;
            let expect_zones = size.min(live.len()) > zones;
            assert_eq!(
                placement
                    .relaxed
                    .iter()
                    .map(Relaxed::rule)
                    .collect::<Vec<_>>(),
                [
                    expect_size.then_some("ensemble_size"),
                    expect_zones.then_some("distinct_zones")
                ]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>(),
                "{counts:?} E={size}"
            );
            assert_eq!(place(&live, size, seed), placement, "deterministic");
        }
    }

    #[test]
    fn seeds_spread_ensembles_over_every_node() {
        // Three zones of two nodes, E = 3: every node leads some ensembles
        // and holds about half of them.
        let live = cluster(&[2, 2, 2]);
        let mut held: HashMap<String, usize> = HashMap::new();
        let mut first: HashMap<String, usize> = HashMap::new();
        let seeds = 6000;
        for seed in 0..seeds {
            let placement = place(&live, 3, seed);
            assert_eq!(distinct_zones(&placement.nodes), 3);
            assert!(placement.relaxed.is_empty(), "{placement:?}");
            *first.entry(placement.nodes[0].id.clone()).or_default() += 1;
            for n in placement.nodes {
                *held.entry(n.id).or_default() += 1;
            }
        }
        assert_eq!(held.len(), 6, "{held:?}");
        for (id, count) in &held {
            // Each node is in about half the ensembles (3 of 6 slots).
            assert!(
                (2500..=3500).contains(count),
                "{id} in {count} of {seeds} ensembles: {held:?}"
            );
        }
        for (id, count) in &first {
            assert!(
                (700..=1300).contains(count),
                "{id} first in {count} of {seeds}: {first:?}"
            );
        }
    }

    #[test]
    fn uneven_zones_relax_the_zone_rule_and_say_so() {
        // Two zones, E = 3: both zones hold a replica, one holds two.
        let live = vec![
            node("a1", "a"),
            node("a2", "a"),
            node("a3", "a"),
            node("b1", "b"),
        ];
        for seed in 0..100 {
            let placement = place(&live, 3, seed);
            assert_eq!(distinct_zones(&placement.nodes), 2, "{placement:?}");
            assert!(placement.nodes.iter().any(|n| n.zone == "b"));
            assert_eq!(
                placement.relaxed,
                [Relaxed::DistinctZones {
                    replicas: 3,
                    zones: 2
                }]
            );
            assert_eq!(placement.zones().len(), 3);
        }
        // Two nodes live, E = 3: a smaller ensemble, both rules met as far
        // as they can be but the size.
        let placement = place(&live[2..], 3, 7);
        assert_eq!(placement.nodes.len(), 2);
        assert_eq!(
            placement.relaxed,
            [Relaxed::EnsembleSize { wanted: 3, live: 2 }]
        );
        assert!(placement.relaxed[0].to_string().contains("ensemble_size"));
    }

    #[test]
    fn without_zones_no_zone_rule_is_reported() {
        let live: Vec<NodeInfo> = (0..5).map(|i| node(&format!("n{i}"), "")).collect();
        for seed in 0..50 {
            let placement = place(&live, 3, seed);
            assert_eq!(placement.nodes.len(), 3);
            assert!(placement.relaxed.is_empty(), "{placement:?}");
        }
        // Some nodes without a zone: the zoned ones first, then one of them.
        let mixed = vec![node("x", ""), node("y", ""), node("a", "a"), node("b", "b")];
        for seed in 0..50 {
            let placement = place(&mixed, 3, seed);
            assert_eq!(distinct_zones(&placement.nodes), 3, "{placement:?}");
        }
    }

    #[test]
    fn nodes_without_a_zone_beside_zoned_ones_come_last_and_relax_the_rule() {
        let mut live = cluster(&[1, 1]);
        live.extend((0..3).map(|i| node(&format!("u{i}"), "")));
        for seed in 0..200 {
            let placement = place(&live, 3, seed);
            let zones = placement.zones();
            assert_eq!(
                zones.iter().filter(|z| z.is_empty()).count(),
                1,
                "{zones:?}"
            );
            assert!(zones[..2].iter().all(|z| !z.is_empty()), "{zones:?}");
            assert_eq!(
                placement.relaxed,
                [Relaxed::DistinctZones {
                    replicas: 3,
                    zones: 2
                }]
            );
        }
    }

    #[test]
    fn zones_of_equal_size_do_not_rotate_in_step() {
        // 3 zones of 2 nodes: every one of the 8 node combinations is used.
        let live = cluster(&[2, 2, 2]);
        let combinations: BTreeSet<Vec<String>> = (0..2000)
            .map(|seed| {
                let mut ids: Vec<String> = (place(&live, 3, seed).nodes.into_iter())
                    .map(|n| n.id)
                    .collect();
                ids.sort();
                ids
            })
            .collect();
        assert_eq!(combinations.len(), 8, "{combinations:?}");
    }

    #[test]
    fn replacements_come_from_zones_the_kept_replicas_lack_first() {
        let live = cluster(&[2, 2, 2]);
        for seed in 0..100 {
            let kept = vec!["z0".to_owned(), "z1".to_owned()];
            let spares: Vec<NodeInfo> = spread(&live, seed)
                .into_iter()
                .filter(|n| n.id != "n0-0" && n.id != "n1-0" && n.id != "n2-0")
                .collect();
            let ordered = prefer_missing_zones(spares, &kept);
            assert_eq!(ordered[0].zone, "z2", "{ordered:?}");
            assert_eq!(ordered.len(), 3);
        }
        assert!(spread(&[], 3).is_empty());
        assert!(place(&[], 3, 3).nodes.is_empty());
    }
}
