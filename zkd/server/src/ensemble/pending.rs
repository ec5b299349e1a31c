//! The peer's outputs waiting to be carried out behind a sync barrier, and
//! group commit: when a sync is carried out, the log appends queued after
//! it, up to the next other persist, join its write (writing a txn to the
//! log earlier only makes it durable sooner), so a burst of proposals costs
//! one fsync and the syncs they brought find nothing left to write.
//!
//! The queue is searched for those appends incrementally: each entry is
//! looked at once, and a taken append leaves a hole that `pop` skips.
//! Searching the whole queue at each sync (as zkd did) is quadratic in a
//! long queue: a follower that fell behind under 16x32 set load (3 members
//! on 2 cores) spent seconds of its only worker thread in those passes, its
//! reads of the leader's stream stopped, it fell 84k txns behind and took
//! the leader for dead.

use std::collections::VecDeque;

use zkd_zab::peer::{Output, Persist};

#[derive(Default)]
pub struct Pending {
    /// `None`: an append already taken into a write.
    queue: VecDeque<Option<Output>>,
    /// Leading entries already searched for appends: none left among them.
    searched: usize,
}

impl Pending {
    pub fn push(&mut self, outs: Vec<Output>) {
        self.queue.extend(outs.into_iter().map(Some));
    }

    pub fn pop(&mut self) -> Option<Output> {
        loop {
            let o = self.queue.pop_front()?;
            self.searched = self.searched.saturating_sub(1);
            if o.is_some() {
                return o;
            }
        }
    }

    /// At a sync just popped: moves the appends queued after it, up to the
    /// first other persist, into `job` (its write).
    pub fn take_appends(&mut self, job: &mut Vec<Persist>) {
        while let Some(slot) = self.queue.get_mut(self.searched) {
            match slot {
                Some(Output::Persist(Persist::Append(_))) => {
                    if let Some(Output::Persist(p)) = slot.take() {
                        job.push(p);
                    }
                }
                // Not past it: the search resumes here once it is popped.
                Some(Output::Persist(_)) => return,
                _ => {}
            }
            self.searched += 1;
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.queue.iter().filter(|o| o.is_some()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zkd_zab::types::Txn;

    fn append(z: u64) -> Output {
        Output::Persist(Persist::Append(vec![Txn {
            zxid: z,
            data: vec![].into(),
        }]))
    }

    fn zxids(job: &[Persist]) -> Vec<u64> {
        job.iter()
            .flat_map(|p| match p {
                Persist::Append(t) => t.iter().map(|t| t.zxid).collect(),
                _ => Vec::new(),
            })
            .collect()
    }

    fn is_append(o: Option<Output>) -> bool {
        matches!(o, Some(Output::Persist(Persist::Append(_))))
    }

    #[test]
    fn a_sync_takes_the_appends_after_it_up_to_another_persist() {
        let mut p = Pending::default();
        let mut job = Vec::new();
        p.push(vec![
            append(1),
            Output::Sync,
            append(2),
            Output::Sync,
            append(3),
        ]);
        p.push(vec![
            Output::Persist(Persist::Applied(1)),
            append(4),
            Output::Sync,
        ]);
        assert!(is_append(p.pop()));
        assert!(matches!(p.pop(), Some(Output::Sync)));
        p.take_appends(&mut job);
        assert_eq!(zxids(&job), vec![2, 3], "not past the applied mark");
        // The appends taken are gone from the line; the rest is in order.
        assert!(matches!(p.pop(), Some(Output::Sync)));
        assert!(matches!(
            p.pop(),
            Some(Output::Persist(Persist::Applied(1)))
        ));
        assert!(is_append(p.pop()));
        assert!(matches!(p.pop(), Some(Output::Sync)));
        assert!(p.pop().is_none());
    }

    #[test]
    fn the_search_resumes_past_a_persist_once_it_is_carried_out() {
        let mut p = Pending::default();
        let mut job = Vec::new();
        p.push(vec![
            Output::Sync,
            Output::Persist(Persist::CurrentEpoch(2)),
            append(5),
            Output::Sync,
        ]);
        assert!(matches!(p.pop(), Some(Output::Sync)));
        p.take_appends(&mut job);
        assert!(job.is_empty(), "nothing passes the epoch");
        assert!(matches!(
            p.pop(),
            Some(Output::Persist(Persist::CurrentEpoch(2)))
        ));
        p.push(vec![append(6), Output::Sync]);
        assert!(is_append(p.pop()), "append 5 comes out in its place");
        assert!(matches!(p.pop(), Some(Output::Sync)));
        p.take_appends(&mut job);
        assert_eq!(
            zxids(&job),
            vec![6],
            "and 6, queued later, joins the next sync"
        );
        assert!(matches!(p.pop(), Some(Output::Sync)));
        assert_eq!(p.len(), 0);
    }

    #[test]
    fn appends_arriving_after_a_search_are_found_by_the_next_one() {
        let mut p = Pending::default();
        let mut job = Vec::new();
        p.push(vec![Output::Sync, Output::Send(2, dummy_env())]);
        assert!(matches!(p.pop(), Some(Output::Sync)));
        p.take_appends(&mut job);
        p.push(vec![append(7), Output::Sync]);
        assert!(matches!(p.pop(), Some(Output::Send(..))));
        assert!(
            is_append(p.pop()),
            "not taken: no sync was carried out since it came"
        );
        assert!(matches!(p.pop(), Some(Output::Sync)));
        p.push(vec![append(8), Output::Sync, append(9)]);
        p.take_appends(&mut job);
        assert_eq!(zxids(&job), vec![8, 9]);
    }

    fn dummy_env() -> zkd_zab::peer::Envelope {
        zkd_zab::peer::Envelope {
            conn: 0,
            seq: 0,
            msg: zkd_zab::types::Msg::PingAck,
        }
    }
}
