//! The handled mark against a model that keeps one flag per row: whatever
//! order rows are committed, started (in any order, twice, or long gone),
//! marked one by one and pruned in, across two instances, the store
//! answers what the flags say.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

#[derive(Debug, Clone)]
enum Op {
    /// `n` new rows for the instance.
    Commit(usize, u8),
    /// These rows (indices into the instance's rows ever made) started,
    /// reported in one batch.
    Start(usize, Vec<u16>),
    /// Marked one by one (rows no script runs for).
    MarkOne(usize, Vec<u16>),
    /// Keep at most this many rows by count.
    Prune(usize, u8),
}

fn op() -> impl Strategy<Value = Op> {
    let inst = 0..2usize;
    prop_oneof![
        3 => (inst.clone(), 1..6u8).prop_map(|(i, n)| Op::Commit(i, n)),
        4 => (inst.clone(), prop::collection::vec(0..64u16, 0..6)).prop_map(|(i, v)| Op::Start(i, v)),
        1 => (inst.clone(), prop::collection::vec(0..64u16, 0..3)).prop_map(|(i, v)| Op::MarkOne(i, v)),
        1 => (inst, 0..8u8).prop_map(|(i, k)| Op::Prune(i, k)),
    ]
}

const NAMES: [&str; 2] = ["a", "b"];

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn the_store_agrees_with_a_flag_per_row(ops in prop::collection::vec(op(), 1..60)) {
        let s = Store::open_in_memory().expect("store");
        for name in NAMES {
            s.ensure_instance(name, "console", 1).expect("instance");
        }
        // Per instance: every row ever made (seq), and the live ones'
        // handled flags.
        let mut made: [Vec<i64>; 2] = [Vec::new(), Vec::new()];
        let mut live: [BTreeMap<i64, bool>; 2] = [BTreeMap::new(), BTreeMap::new()];
        let mut next_id = 0u32;
        let pick = |made: &[i64], idx: &[u16]| -> Vec<i64> {
            if made.is_empty() {
                return Vec::new();
            }
            idx.iter().map(|i| made[usize::from(*i) % made.len()]).collect()
        };
        for op in &ops {
            match op {
                Op::Commit(i, n) => {
                    let ids: Vec<String> = (0..*n).map(|_| { next_id += 1; next_id.to_string() }).collect();
                    let items: Vec<InboxItem<'_>> = ids
                        .iter()
                        .map(|id| InboxItem { chat: "c", sender: "s", id, message: "m" })
                        .collect();
                    for seq in s.inbox_commit(NAMES[*i], &items, 5).expect("commit") {
                        let seq = seq.expect("new");
                        made[*i].push(seq);
                        live[*i].insert(seq, false);
                    }
                }
                Op::Start(i, idx) | Op::MarkOne(i, idx) => {
                    let rows = pick(&made[*i], idx);
                    if matches!(op, Op::Start(..)) {
                        s.commit_handling(NAMES[*i], &rows, &[], &[], 6).expect("start");
                    } else {
                        s.inbox_mark_handled(NAMES[*i], &rows, 6).expect("mark");
                    }
                    for r in rows {
                        if let Some(h) = live[*i].get_mut(&r) {
                            *h = true;
                        }
                    }
                }
                Op::Prune(i, keep) => {
                    s.delivery_prune(NAMES[*i], 1_000_000, u64::from(*keep), 10).expect("prune");
                    // Handled rows at or below the keep-th newest go.
                    let keep = usize::from(*keep);
                    let seqs: Vec<i64> = live[*i].keys().copied().collect();
                    if seqs.len() > keep {
                        let bound = seqs[seqs.len() - 1 - keep];
                        live[*i].retain(|seq, h| *seq > bound || !*h);
                    }
                }
            }
            for i in 0..2 {
                let want: Vec<i64> = live[i].iter().filter(|(_, h)| !**h).map(|(s, _)| *s).collect();
                let got: Vec<i64> = s
                    .inbox_unhandled(NAMES[i], 0, 10_000)
                    .expect("unhandled")
                    .iter()
                    .map(|r| r.seq)
                    .collect();
                prop_assert_eq!(&got, &want, "unhandled rows of {} after {:?}", NAMES[i], op);
                for (seq, h) in &live[i] {
                    prop_assert_eq!(s.inbox_handled(NAMES[i], *seq).expect("handled"), Some(*h));
                }
            }
        }
    }
}
