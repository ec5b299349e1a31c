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

use zkd_zab::peer::{Envelope, Output, Persist};
use zkd_zab::types::{Id, Msg};

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

    /// The next output if `may` allows it now.
    pub fn pop_if(&mut self, may: impl Fn(&Output) -> bool) -> Option<Output> {
        self.trim();
        if self.queue.front()?.as_ref().is_some_and(may) {
            self.pop()
        } else {
            None
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

    /// At a sync just popped, after `take_appends`: the acks to one peer
    /// (the leader) right behind it, and behind the later syncs whose
    /// appends joined its write. `take_appends` took every append up to
    /// the first other persist, so a sync met before any other output has
    /// nothing left to write and is dropped. Anything else ends the search:
    /// it must be carried out before the acks after it.
    pub fn take_acks(&mut self) -> Option<(Id, Vec<Envelope>)> {
        let mut leader = None;
        let mut acks = Vec::new();
        loop {
            self.trim();
            match self.queue.front() {
                Some(Some(Output::Sync)) => {}
                Some(Some(Output::Send(to, env)))
                    if matches!(env.msg, Msg::Ack { .. }) && leader.is_none_or(|l| l == *to) =>
                {
                    leader = Some(*to);
                }
                _ => break,
            }
            if let Some(Some(Output::Send(_, env))) = self.queue.pop_front() {
                acks.push(env);
            }
            self.searched = self.searched.saturating_sub(1);
        }
        leader.map(|l| (l, acks))
    }

    /// Drops the holes at the front.
    fn trim(&mut self) {
        while let Some(None) = self.queue.front() {
            self.queue.pop_front();
            self.searched = self.searched.saturating_sub(1);
        }
    }

    pub fn is_empty(&mut self) -> bool {
        self.trim();
        self.queue.is_empty()
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

    fn ack(to: u64, z: u64) -> Output {
        Output::Send(
            to,
            Envelope {
                conn: 1,
                seq: z,
                msg: Msg::Ack { zxid: z },
            },
        )
    }

    #[test]
    fn the_acks_a_write_covers_are_taken_up_to_any_other_output() {
        let mut p = Pending::default();
        let mut job = Vec::new();
        p.push(vec![append(1), Output::Sync, ack(3, 1)]);
        p.push(vec![append(2), Output::Sync, ack(3, 2)]);
        p.push(vec![Output::Persist(Persist::Applied(1))]);
        p.push(vec![append(3), Output::Sync, ack(3, 3)]);
        assert!(is_append(p.pop()));
        assert!(matches!(p.pop(), Some(Output::Sync)));
        p.take_appends(&mut job);
        assert_eq!(zxids(&job), vec![2]);
        let (to, acks) = p.take_acks().expect("acks");
        assert_eq!(to, 3);
        let acked: Vec<u64> = acks.iter().map(|e| e.seq).collect();
        assert_eq!(acked, vec![1, 2], "not past the applied mark");
        // What is left is in order: the applied mark, then the third txn.
        assert!(matches!(
            p.pop(),
            Some(Output::Persist(Persist::Applied(1)))
        ));
        assert!(is_append(p.pop()));
        assert!(matches!(p.pop(), Some(Output::Sync)));
        assert!(matches!(p.pop(), Some(Output::Send(3, _))));
        assert!(p.pop().is_none());
        assert!(p.is_empty());
    }

    #[test]
    fn only_what_may_pass_a_sync_is_taken_while_one_runs() {
        let mut p = Pending::default();
        let t = Txn {
            zxid: 2,
            data: vec![].into(),
        };
        p.push(vec![
            Output::DeliverCommitted(t.clone()),
            Output::Persist(Persist::Applied(2)),
            Output::Sync,
            Output::DeliverCommitted(t),
        ]);
        let may = Output::may_pass_sync;
        assert!(matches!(p.pop_if(may), Some(Output::DeliverCommitted(_))));
        assert!(matches!(
            p.pop_if(may),
            Some(Output::Persist(Persist::Applied(2)))
        ));
        assert!(p.pop_if(may).is_none(), "not past the sync");
        assert_eq!(p.len(), 2);
        assert!(matches!(p.pop(), Some(Output::Sync)));
    }

    #[test]
    fn no_acks_means_nothing_is_taken_and_another_peer_ends_the_search() {
        let mut p = Pending::default();
        p.push(vec![append(1)]);
        assert!(p.take_acks().is_none());
        assert_eq!(p.len(), 1);
        let mut p = Pending::default();
        p.push(vec![ack(3, 1), Output::Sync, ack(2, 2), ack(3, 3)]);
        let (to, acks) = p.take_acks().expect("acks");
        assert_eq!((to, acks.len()), (3, 1));
        assert!(matches!(p.pop(), Some(Output::Send(2, _))));
        assert_eq!(p.len(), 1);
    }
}
