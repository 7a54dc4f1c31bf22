//! A model-based property test: any sequence of appends, acknowledgements
//! and restarts against a plain queue.

use std::collections::VecDeque;

use proptest::prelude::*;
use tempfile::TempDir;
use webhook_spool::SpoolConfig;

use crate::{numbers, open, read_all, webhook};

#[derive(Clone, Debug)]
enum Op {
    Append(u8),
    /// Acknowledge through the n-th unacknowledged record (modulo depth).
    Ack(u8),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1_u8..5).prop_map(Op::Append),
        3 => any::<u8>().prop_map(Op::Ack),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Any sequence of appends, acknowledgements and restarts leaves exactly
    /// the unacknowledged records, in order.
    #[test]
    fn the_spool_keeps_exactly_the_unacknowledged_records_in_order(
        ops in proptest::collection::vec(op(), 1..25),
        segment_bytes in prop_oneof![Just(1_u64), Just(300), Just(1 << 20)],
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let dir = TempDir::new().unwrap();
            let cfg = SpoolConfig { segment_bytes, ..SpoolConfig::new(dir.path(), 1 << 20) };
            let mut spool = open(&cfg);
            let mut model: VecDeque<u64> = VecDeque::new();
            let mut next = 0;
            for op in ops {
                match op {
                    Op::Append(k) => {
                        for _ in 0..k {
                            spool.append(&webhook(next)).await.unwrap();
                            model.push_back(next);
                            next += 1;
                        }
                    }
                    Op::Ack(n) => {
                        if !model.is_empty() {
                            let i = usize::from(n) % model.len();
                            let entries = read_all(&spool).await;
                            spool.ack(&entries[i]).await.unwrap();
                            model.drain(..=i);
                        }
                    }
                    Op::Reopen => {
                        drop(spool);
                        spool = open(&cfg);
                    }
                }
                let expected: Vec<u64> = model.iter().copied().collect();
                prop_assert_eq!(numbers(&spool).await, expected);
                let stats = spool.stats();
                prop_assert_eq!(stats.entries, model.len() as u64);
                prop_assert_eq!(
                    stats.oldest_received_at,
                    model.front().map(|&n| webhook(n).received_at)
                );
            }
            Ok(())
        })?;
    }
}
