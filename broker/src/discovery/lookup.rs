//! Node lookup for terminals (gopush's `/server/get`): which comet(s) a terminal should dial.
//!
//! Rendezvous (highest-random-weight) hashing over the live comets that serve the terminal's
//! transport: every (node, terminal) pair gets a score from a fixed hash, the terminal's list is
//! the nodes by score, highest first. The primary is stable while it lives; when a node goes, only
//! the terminals whose primary it was move (each to its own next choice), and a new node takes
//! over about `1/n` of the terminals. The rest of the list is the terminal's fallback order.
//! The hash is FNV-1a with a 64-bit finaliser, fixed here so every node and every version of the
//! broker computes the same answer.

use crate::terminal::{Address, Kind};

use super::{NodeInfo, NodeView, Role};

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// The splitmix64 finaliser: spreads FNV's weak low bits over the whole word.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The rendezvous score of `node_id` for `terminal` (deterministic across processes).
pub fn score(node_id: &str, terminal: Address) -> u64 {
    let h = fnv1a(FNV_OFFSET, node_id.as_bytes());
    let h = fnv1a(h, &[0, terminal.kind.as_u8()]);
    mix(fnv1a(h, &terminal.id.to_be_bytes()))
}

/// Whether `node` serves a transport the terminal kind uses (devices: UDP or device WebSocket;
/// phones: app WebSocket).
pub fn serves(node: &NodeInfo, kind: Kind) -> bool {
    match kind {
        Kind::Device => node.addr.udp.is_some() || node.addr.ws.is_some(),
        Kind::Phone => node.addr.app_ws.is_some(),
    }
}

/// Up to `max` comets for `terminal`, primary first (see module docs). Empty when no live comet
/// serves the terminal's kind.
pub fn lookup(view: &NodeView, terminal: Address, max: usize) -> Vec<&NodeInfo> {
    let mut scored: Vec<(u64, &NodeInfo)> = view
        .with_role(Role::Comet)
        .filter(|n| serves(n, terminal.kind))
        .map(|n| (score(&n.id, terminal), n))
        .collect();
    // Ties (practically impossible) are broken by id so the order is total.
    scored.sort_unstable_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.id.cmp(&b.1.id)));
    scored.into_iter().take(max).map(|(_, n)| n).collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::discovery::NodeAddr;

    fn comet(id: &str) -> NodeInfo {
        NodeInfo {
            id: id.into(),
            role: Role::Comet,
            addr: NodeAddr {
                udp: Some(format!("{id}:8083")),
                ws: Some(format!("ws://{id}:8081/")),
                app_ws: Some(format!("ws://{id}:8082/")),
                link: None,
            },
            load: 0,
        }
    }

    fn view(ids: &[&str]) -> NodeView {
        NodeView {
            nodes: ids.iter().map(|i| comet(i)).collect(),
            healthy: true,
        }
    }

    fn primary(v: &NodeView, t: Address) -> String {
        lookup(v, t, 1)[0].id.clone()
    }

    #[test]
    fn score_is_a_fixed_function() {
        // Pinned so every broker version agrees on placement; changing the hash moves terminals.
        assert_eq!(
            score("a", Address::device(1)),
            score("a", Address::device(1))
        );
        assert_ne!(
            score("a", Address::device(1)),
            score("a", Address::phone(1))
        );
        assert_ne!(
            score("a", Address::device(1)),
            score("b", Address::device(1))
        );
        assert_eq!(fnv1a(FNV_OFFSET, b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn list_is_every_serving_comet_primary_first_and_stable() {
        let v = view(&["a", "b", "c"]);
        let t = Address::device(42);
        let list = lookup(&v, t, 10);
        assert_eq!(list.len(), 3);
        let scores: Vec<u64> = list.iter().map(|n| score(&n.id, t)).collect();
        assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
        assert_eq!(lookup(&v, t, 2).len(), 2);
        // Input order does not matter.
        let mut rev = v.clone();
        rev.nodes.reverse();
        assert_eq!(lookup(&rev, t, 10), list);
    }

    #[test]
    fn only_comets_serving_the_kind_are_returned() {
        let mut v = view(&["a", "b"]);
        v.nodes[0].addr.app_ws = None;
        let mut bus = comet("m");
        bus.role = Role::Msgbus;
        v.nodes.push(bus);
        let phones: Vec<&str> = lookup(&v, Address::phone(7), 10)
            .iter()
            .map(|n| n.id.as_str())
            .collect();
        assert_eq!(phones, ["b"]);
        assert_eq!(lookup(&v, Address::device(7), 10).len(), 2);
        assert!(lookup(&view(&[]), Address::device(7), 3).is_empty());
    }

    #[test]
    fn spreads_evenly_and_moves_only_the_dead_nodes_terminals() {
        let ids = ["a", "b", "c", "d"];
        let v = view(&ids);
        let before: Vec<String> = (0..4000u32)
            .map(|i| primary(&v, Address::device(i)))
            .collect();
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for p in &before {
            *counts.entry(p.as_str()).or_default() += 1;
        }
        for id in ids {
            let c = counts[id];
            assert!((800..=1200).contains(&c), "{id} got {c} of 4000");
        }

        // "c" dies: its terminals move to their own second choice, nobody else moves.
        let v2 = view(&["a", "b", "d"]);
        for (i, p) in before.iter().enumerate() {
            let t = Address::device(i as u32);
            let now = primary(&v2, t);
            if p == "c" {
                assert_eq!(
                    now,
                    lookup(&v, t, 2)[1].id,
                    "falls back to its second choice"
                );
            } else {
                assert_eq!(&now, p, "terminal {i} moved although its node lives");
            }
        }

        // "e" joins: only terminals that now prefer "e" move, about a fifth of them.
        let v3 = view(&["a", "b", "c", "d", "e"]);
        let moved = before
            .iter()
            .enumerate()
            .filter(|(i, p)| primary(&v3, Address::device(*i as u32)) != **p)
            .inspect(|(i, _)| assert_eq!(primary(&v3, Address::device(*i as u32)), "e"))
            .count();
        assert!((600..=1000).contains(&moved), "{moved} of 4000 moved");
    }
}
