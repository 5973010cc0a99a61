//! Which shards an engine process should hold: a pure function of the
//! cluster's members and leases as last read, run by every engine on every
//! heartbeat.
//!
//! Each live engine's fair share is the shards divided by the live engines,
//! the first (in id order) taking one more while some are left over, so every
//! engine computes the same shares without talking to the others. An engine
//! renews what it holds up to its share, gives up the rest (its highest
//! shards first), and takes free or expired shards (lowest first) up to its
//! share. It never takes a shard whose lease still runs: the owner gives it
//! up itself once it sees the newcomer, so two engines never both believe
//! they hold a shard; and the fencing token in every commit refuses an owner
//! whose lease was taken after it expired.

use crate::store::{LeaseRow, MemberRow};

/// What to do about leases now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Held and kept: renew them.
    pub renew: Vec<u32>,
    /// Free or expired: take them.
    pub take: Vec<u32>,
    /// Held beyond the fair share: stop their workers, then give them up.
    pub release: Vec<u32>,
    /// How many shards this engine should hold.
    pub share: u32,
}

/// The plan of engine `me` over `shards` shards at `now` (ms), from the
/// members with the engine role and every lease. `me` counts as alive
/// whatever its row says.
pub fn plan(me: &str, shards: u32, engines: &[MemberRow], leases: &[LeaseRow], now: u64) -> Plan {
    let mut alive: Vec<&str> = engines
        .iter()
        .filter(|m| m.expires_at > now)
        .map(|m| m.id.as_str())
        .collect();
    if !alive.contains(&me) {
        alive.push(me);
    }
    alive.sort_unstable();
    alive.dedup();
    let n = alive.len() as u32;
    let rank = alive.iter().position(|m| *m == me).unwrap_or(0) as u32;
    let share = shards / n + u32::from(rank < shards % n);

    let mut held: Vec<u32> = leases
        .iter()
        .filter(|l| l.owner == me && l.expires_at > now && l.shard < shards)
        .map(|l| l.shard)
        .collect();
    held.sort_unstable();
    let keep = held.len().min(share as usize);
    let release = held.split_off(keep);
    let mut taken: Vec<bool> = vec![false; shards as usize];
    for l in leases {
        if l.expires_at > now
            && let Some(t) = taken.get_mut(l.shard as usize)
        {
            *t = true;
        }
    }
    let wanted = share as usize - held.len();
    let take = (0..shards)
        .filter(|s| !taken[*s as usize])
        .take(wanted)
        .collect();
    Plan {
        renew: held,
        take,
        release,
        share,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, expires_at: u64) -> MemberRow {
        MemberRow {
            id: id.into(),
            roles: "engine".into(),
            started_at: 0,
            expires_at,
        }
    }

    fn lease(shard: u32, owner: &str, expires_at: u64) -> LeaseRow {
        LeaseRow {
            shard,
            owner: owner.into(),
            token: 1,
            expires_at,
        }
    }

    #[test]
    fn alone_an_engine_takes_every_shard() {
        let p = plan("a", 4, &[], &[], 100);
        assert_eq!(p.take, [0, 1, 2, 3]);
        assert_eq!(p.share, 4);
        assert!(p.renew.is_empty() && p.release.is_empty());
    }

    #[test]
    fn shares_add_up_and_differ_by_at_most_one() {
        for n in 1..=7u32 {
            let ids: Vec<String> = (0..n).map(|i| format!("e{i}")).collect();
            let engines: Vec<MemberRow> = ids.iter().map(|i| member(i, 1_000)).collect();
            let shares: Vec<u32> = ids
                .iter()
                .map(|me| plan(me, 1024, &engines, &[], 10).share)
                .collect();
            assert_eq!(shares.iter().sum::<u32>(), 1024, "{n} engines");
            let (lo, hi) = (shares.iter().min().unwrap(), shares.iter().max().unwrap());
            assert!(hi - lo <= 1, "{n} engines: {shares:?}");
        }
    }

    #[test]
    fn a_newcomer_waits_for_the_owner_to_give_shards_up() {
        let engines = [member("a", 1_000), member("b", 1_000)];
        let leases: Vec<LeaseRow> = (0..4).map(|s| lease(s, "a", 1_000)).collect();
        // b takes nothing that a still holds.
        let b = plan("b", 4, &engines, &leases, 10);
        assert!(b.take.is_empty(), "{b:?}");
        // a keeps its share and gives up the rest, highest first.
        let a = plan("a", 4, &engines, &leases, 10);
        assert_eq!((a.renew, a.release), (vec![0, 1], vec![2, 3]));
        // Once given up (expired at once), b takes them.
        let mut leases = leases;
        leases[2].expires_at = 0;
        leases[3].expires_at = 0;
        let b = plan("b", 4, &engines, &leases, 10);
        assert_eq!(b.take, [2, 3]);
    }

    #[test]
    fn a_dead_engines_shards_go_to_the_living_once_its_leases_expire() {
        let engines = [member("a", 1_000), member("b", 50)];
        let leases = vec![
            lease(0, "a", 1_000),
            lease(1, "a", 1_000),
            lease(2, "b", 80),
            lease(3, "b", 80),
        ];
        // b's row expired but its leases run until 80: not yet.
        let a = plan("a", 4, &engines, &leases, 60);
        assert_eq!((a.share, a.take.clone()), (4, vec![]));
        let a = plan("a", 4, &engines, &leases, 90);
        assert_eq!((a.renew, a.take), (vec![0, 1], vec![2, 3]));
    }

    #[test]
    fn leases_beyond_the_shard_count_are_ignored() {
        let leases = [lease(7, "a", 1_000)];
        let p = plan("a", 2, &[], &leases, 10);
        assert_eq!((p.renew, p.take), (vec![], vec![0, 1]));
    }
}
