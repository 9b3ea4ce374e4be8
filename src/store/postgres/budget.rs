//! What one daemon holds of the deployment-wide counters, so that a send writes no row every
//! other send writes too (migrations/postgres/0013): blocks of the shared quotas' budgets
//! (leases), spent one slot per send, and the breaker's send counts, added to the database every
//! few sends. docs/performance.md states what this costs in exactness and proves the bounds.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use crate::quota::{PumpingRule, Quota, Scope, SendGuard};

/// The largest block a daemon asks for. The database grants a sixty-fourth of what is left of
/// the limit when that is less, so blocks shrink near a limit: this size only matters for
/// limits of 16,384 and more.
pub(super) const BLOCK: i32 = 256;

/// A daemon adds the sends it counted for a breaker to the database every this many sends (and
/// judges a send in the database when it is this close to tripping on what it knows).
pub(super) const FLUSH: u32 = 16;

/// Sends of one country a daemon judges in memory at most at once (counted and not added yet,
/// or not finished): the breaker can trip late by at most this many sends per daemon, never
/// early. Past it, sends are judged by the database.
pub(super) const HELD: u32 = 64;

/// Counters with a lease at once. Past this (a limit of 1024 or more per client address, and
/// that many addresses within one window), further counters are counted per send as in
/// version 12: correct, only slower.
const MAX_LEASES: usize = 4096;

/// `Lease::last` before a window's first grant.
const NOT_YET: u32 = u32::MAX;

/// Whether the database shares a quota's count across shards (`verifyd_is_shared` in
/// migrations/postgres/0008): only those are leased.
pub(super) fn shared(q: &Quota) -> bool {
    match q.scope {
        Scope::Global | Scope::Country => true,
        Scope::IpSends | Scope::PrefixSends | Scope::IpChecks => q.limit >= 1024,
        _ => false,
    }
}

/// The breaker's rule (`verifyd_pumping_trips`), with the same float arithmetic.
fn trips(sends: u64, approvals: u64, rule: &PumpingRule) -> bool {
    sends >= u64::from(rule.min_sample) && (approvals as f64) < rule.min_conversion * sends as f64
}

/// A block granted to this daemon in one window of one counter.
struct Lease {
    /// The limit it was granted under: a quota with another limit asks for its own.
    limit: u32,
    /// The database's end of the window, and the instant on this daemon's clock by which that
    /// window has surely ended (measured from before the grant was asked for).
    end: SystemTime,
    until: Instant,
    /// Slots not spent, by the count before the send that spends one; the lowest goes first.
    free: BTreeSet<u32>,
    /// The size of the last block granted: half of it left asks for the next one, so that the
    /// next block comes before this one runs out. Blocks of one slot (the limit is less than 128
    /// away) or none (it is reached) are not asked for again in the window: near a limit the
    /// daemon counts each send in the database, exactly, as without leases. `NOT_YET` before
    /// the first grant of a window.
    last: u32,
    /// A grant is being asked for: concurrent sends count per send meanwhile instead of asking
    /// for more blocks, so that a daemon holds at most one block of a counter.
    granting: bool,
}

/// One country's breaker as this daemon last saw it, plus what it counted since.
struct Tally {
    end: SystemTime,
    until: Instant,
    sends: u32,
    approvals: u32,
    tripped: bool,
    /// Sends this daemon issued and has not added to the database yet.
    unflushed: u32,
    /// Sends judged here and not finished yet.
    in_flight: u32,
    /// Sends being added to the database by sends not finished yet. Until they are, the other
    /// daemons cannot see them either.
    flushing: u32,
}

/// What this daemon holds. One per store; its sends share it.
#[derive(Default)]
pub(super) struct Budgets {
    leases: Mutex<HashMap<(Scope, String), Lease>>,
    tallies: Mutex<HashMap<String, Tally>>,
}

/// How one send uses the budgets: what goes to the database and what was taken here.
pub(super) struct SendPlan<'g> {
    /// The hard and soft quotas the database counts (those no lease covers), in guard order.
    pub hard: Vec<&'g Quota>,
    pub soft: Vec<&'g Quota>,
    /// Parallel to `hard` then `soft`: the block to ask for (0: count this send alone).
    pub blocks: Vec<i32>,
    /// The slots spent from leases ask for a challenge (see `verifyd_send`).
    pub covered_challenge: bool,
    /// Slots taken: (counter, window end, count before this send).
    covered: Vec<((Scope, String), SystemTime, u32)>,
    /// Counters a grant is asked for, and among them those this send has a slot of already.
    granting: Vec<(Scope, String)>,
    refills: Vec<(Scope, String)>,
    /// The breaker's country, if the send has one.
    country: Option<String>,
    pub pump: PumpPlan,
}

/// A plan whose send or check is under way. It is settled with the answer, or as lost when the
/// request is dropped before (a client that went away, a timeout): either way nothing stays
/// marked as being asked for or in flight.
pub(super) struct Pending<'b, 'g> {
    budgets: &'b Budgets,
    plan: Option<SendPlan<'g>>,
}

impl<'g> Pending<'_, 'g> {
    pub fn plan(&self) -> &SendPlan<'g> {
        self.plan
            .as_ref()
            .expect("a pending plan is settled once, by value")
    }

    /// Settles the plan with the database's answer (see [`Budgets::finish`]).
    pub fn settle(mut self, result: Result<&SendResult, ()>) {
        if let Some(plan) = self.plan.take() {
            self.budgets.finish(&plan, result);
        }
    }
}

impl Drop for Pending<'_, '_> {
    fn drop(&mut self) {
        if let Some(plan) = self.plan.take() {
            self.budgets.finish(&plan, Err(()));
        }
    }
}

/// The breaker's part of a send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PumpPlan {
    /// Judged here (and counted here once issued); otherwise the database judges it.
    pub local: bool,
    /// Sends counted here that the database adds first, in the window ending at `flush_end`.
    pub flush: i32,
    pub flush_end: Option<SystemTime>,
}

/// A grant the database made: counts `pos .. pos + count` in the window ending at `end`.
pub(super) struct Grant {
    pub scope: Scope,
    pub key: String,
    pub end: SystemTime,
    pub pos: u32,
    pub count: u32,
}

/// A breaker window as the database reported it.
pub(super) struct Seen {
    pub end: SystemTime,
    pub sends: u32,
    pub approvals: u32,
    pub tripped: bool,
}

/// What came back from the database for a send.
pub(super) struct SendResult {
    pub issued: bool,
    pub grants: Vec<Grant>,
    pub seen: Option<Seen>,
    /// The database's clock when it answered, and this daemon's before it asked.
    pub db_now: SystemTime,
    pub asked_at: Instant,
}

/// The instant by which a window ending at `end` (database clock, read at `db_now`) has surely
/// ended on this daemon's clock: measured from before the question, so never late.
fn until(asked_at: Instant, end: SystemTime, db_now: SystemTime) -> Instant {
    asked_at + end.duration_since(db_now).unwrap_or(Duration::ZERO)
}

impl Budgets {
    /// Decides, for a send under `guard`, which quotas a lease covers (taking a slot of each),
    /// which ask for a block, and how the breaker is judged.
    pub fn plan<'g>(&self, guard: &'g SendGuard, now: Instant) -> Pending<'_, 'g> {
        let mut plan = self.plan_quotas(
            &guard.quotas,
            &guard.soft,
            guard.challenge.when_suspicious,
            now,
        );
        plan.country = guard.pumping.as_ref().map(|p| p.country.clone());
        if let Some(rule) = &guard.pumping {
            plan.pump = self.plan_pump(rule, now);
        }
        Pending {
            budgets: self,
            plan: Some(plan),
        }
    }

    /// The same for a check's quotas (all hard, no breaker): `finish` then takes `issued` as
    /// "the quotas were taken" (the check was not refused by one, and found its session).
    pub fn plan_check<'g>(&self, quotas: &'g [Quota], now: Instant) -> Pending<'_, 'g> {
        Pending {
            budgets: self,
            plan: Some(self.plan_quotas(quotas, &[], false, now)),
        }
    }

    fn plan_quotas<'g>(
        &self,
        hard: &'g [Quota],
        soft: &'g [Quota],
        when_suspicious: bool,
        now: Instant,
    ) -> SendPlan<'g> {
        let mut plan = SendPlan {
            hard: vec![],
            soft: vec![],
            blocks: vec![],
            covered_challenge: false,
            covered: vec![],
            granting: vec![],
            refills: vec![],
            country: None,
            pump: PumpPlan {
                local: false,
                flush: 0,
                flush_end: None,
            },
        };
        let mut soft_blocks = vec![];
        {
            let mut leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
            let hard = hard.iter().map(|q| (q, true));
            for (q, is_hard) in hard.chain(soft.iter().map(|q| (q, false))) {
                let block = if shared(q) {
                    match take(&mut leases, q, now) {
                        Taken::Slot(end, pos, refill) => {
                            let spent_soft = !is_hard && pos >= q.limit;
                            let suspicious = when_suspicious && q.scope.suspicious_at(pos, q.limit);
                            plan.covered_challenge |= spent_soft || suspicious;
                            plan.covered.push(((q.scope, q.key.clone()), end, pos));
                            if !refill {
                                continue;
                            }
                            plan.granting.push((q.scope, q.key.clone()));
                            plan.refills.push((q.scope, q.key.clone()));
                            -BLOCK
                        }
                        Taken::Ask => {
                            plan.granting.push((q.scope, q.key.clone()));
                            BLOCK
                        }
                        Taken::PerSend => 0,
                    }
                } else {
                    0
                };
                if is_hard {
                    plan.hard.push(q);
                    plan.blocks.push(block);
                } else {
                    plan.soft.push(q);
                    soft_blocks.push(block);
                }
            }
        }
        plan.blocks.extend(soft_blocks);
        plan
    }

    fn plan_pump(&self, rule: &PumpingRule, now: Instant) -> PumpPlan {
        let mut tallies = self.tallies.lock().unwrap_or_else(|e| e.into_inner());
        let exact = |flush: u32, flush_end: Option<SystemTime>| PumpPlan {
            local: false,
            flush: i32::try_from(flush).unwrap_or(i32::MAX),
            flush_end,
        };
        let Some(t) = tallies.get_mut(&rule.country) else {
            return exact(0, None);
        };
        if t.until <= now {
            // Its window is over, and what was counted in it with it.
            tallies.remove(&rule.country);
            return exact(0, None);
        }
        // Sends the database cannot see yet; with this one and the ones it reported, what this
        // daemon knows was sent.
        let unseen = t.unflushed + t.in_flight + t.flushing;
        let known = u64::from(t.sends) + u64::from(unseen) + 1;
        let near = trips(known + u64::from(FLUSH), u64::from(t.approvals), rule);
        if t.tripped || near || t.unflushed + 1 >= FLUSH || unseen >= HELD {
            let flush = std::mem::take(&mut t.unflushed);
            t.flushing += flush;
            return exact(flush, Some(t.end));
        }
        t.in_flight += 1;
        PumpPlan {
            local: true,
            flush: 0,
            flush_end: Some(t.end),
        }
    }

    /// Settles a send: returns the slots of a send that was not issued, keeps the blocks
    /// granted, counts a locally judged send that was issued, and remembers the breaker as the
    /// database reported it. With `Err` (the answer was lost, the send may have been issued)
    /// nothing is given back: a lost slot or count errs on the side of refusing.
    fn finish(&self, plan: &SendPlan<'_>, result: Result<&SendResult, ()>) {
        let mut leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        for k in &plan.granting {
            if let Some(l) = leases.get_mut(k) {
                l.granting = false;
            }
        }
        if let Ok(r) = result {
            if !r.issued {
                for (k, end, pos) in &plan.covered {
                    if let Some(l) = leases.get_mut(k).filter(|l| l.end == *end) {
                        l.free.insert(*pos);
                    }
                }
            }
            for g in &r.grants {
                let k = (g.scope, g.key.clone());
                let refill = plan.refills.contains(&k);
                let spent = r.issued && !refill;
                let first = if spent { g.pos + 1 } else { g.pos };
                let mut slots = first..g.pos.saturating_add(g.count);
                if g.count == 1 && !refill && !r.issued {
                    // The database took a single slot back with the refused send, as it takes
                    // back a count near a limit.
                    slots = 0..0;
                }
                let limit = plan
                    .hard
                    .iter()
                    .chain(&plan.soft)
                    .find(|q| q.scope == g.scope && q.key == g.key)
                    .map_or(0, |q| q.limit);
                let l = leases.entry(k).or_insert_with(|| Lease {
                    limit,
                    end: g.end,
                    until: r.asked_at,
                    free: BTreeSet::new(),
                    last: NOT_YET,
                    granting: false,
                });
                if l.end != g.end || l.limit != limit {
                    l.free.clear();
                }
                l.limit = limit;
                l.end = g.end;
                l.until = until(r.asked_at, g.end, r.db_now);
                l.last = g.count;
                l.free.extend(slots);
            }
        }
        drop(leases);
        self.finish_pump(plan, result.ok());
    }

    fn finish_pump(&self, plan: &SendPlan<'_>, r: Option<&SendResult>) {
        let Some(country) = plan.country.as_deref() else {
            return;
        };
        let mut tallies = self.tallies.lock().unwrap_or_else(|e| e.into_inner());
        let flushed = u32::try_from(plan.pump.flush).unwrap_or(0);
        if flushed > 0 {
            // Added, or lost with the answer: either way no longer this daemon's to add.
            if let Some(t) = tallies
                .get_mut(country)
                .filter(|t| Some(t.end) == plan.pump.flush_end)
            {
                t.flushing = t.flushing.saturating_sub(flushed);
            }
        }
        if plan.pump.local {
            if let Some(t) = tallies
                .get_mut(country)
                .filter(|t| Some(t.end) == plan.pump.flush_end)
            {
                t.in_flight = t.in_flight.saturating_sub(1);
                if r.is_some_and(|r| r.issued) {
                    t.unflushed += 1;
                }
            }
            return;
        }
        let Some(seen) = r.and_then(|r| r.seen.as_ref().map(|s| (r, s))) else {
            return;
        };
        let (r, seen) = seen;
        let until = until(r.asked_at, seen.end, r.db_now);
        match tallies.get_mut(country) {
            Some(t) if t.end == seen.end => {
                // Answers can arrive out of order: an older one must not make the counts go
                // back (sends and approvals only grow within a window, but for the rare send
                // taken back).
                if seen.sends >= t.sends {
                    t.tripped = seen.tripped;
                }
                t.sends = t.sends.max(seen.sends);
                t.approvals = t.approvals.max(seen.approvals);
                t.until = t.until.min(until);
            }
            // An answer about a window older than the one already seen.
            Some(t) if t.end > seen.end => {}
            _ => {
                tallies.insert(
                    country.to_owned(),
                    Tally {
                        end: seen.end,
                        until,
                        sends: seen.sends,
                        approvals: seen.approvals,
                        tripped: seen.tripped,
                        unflushed: 0,
                        in_flight: 0,
                        flushing: 0,
                    },
                );
            }
        }
    }

    /// Takes back one send counted here for `country`'s breaker and not yet added to the
    /// database (a send whose delivery failed); false when there is none to take.
    pub fn unsend(&self, country: &str) -> bool {
        let mut tallies = self.tallies.lock().unwrap_or_else(|e| e.into_inner());
        match tallies.get_mut(country) {
            Some(t) if t.unflushed > 0 => {
                t.unflushed -= 1;
                true
            }
            _ => false,
        }
    }

    /// The breaker counts not yet added to the database, taken out: (country, window end,
    /// sends).
    pub fn take_unflushed(&self) -> Vec<(String, SystemTime, i32)> {
        let mut tallies = self.tallies.lock().unwrap_or_else(|e| e.into_inner());
        tallies
            .iter_mut()
            .filter(|(_, t)| t.unflushed > 0)
            .map(|(c, t)| {
                let n = std::mem::take(&mut t.unflushed);
                (c.clone(), t.end, i32::try_from(n).unwrap_or(i32::MAX))
            })
            .collect()
    }

    /// Forgets a country's breaker (an operator reset it).
    pub fn forget_breaker(&self, country: &str) {
        self.tallies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(country);
    }

    /// The unspent slots of every lease, taken out: (scope, key, window end, slots).
    pub fn take_unspent(&self) -> Vec<(Scope, String, SystemTime, i32)> {
        let mut leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        leases
            .drain()
            .filter(|(_, l)| !l.free.is_empty())
            .map(|((s, k), l)| (s, k, l.end, i32::try_from(l.free.len()).unwrap_or(i32::MAX)))
            .collect()
    }
}

enum Taken {
    /// A slot of a live lease: its window's end, the count before this send, and whether the
    /// send asks for the next block too (the lease is running low).
    Slot(SystemTime, u32, bool),
    /// No slot: ask the database for a block.
    Ask,
    /// No slot, and none to ask for now: the database counts this send alone.
    PerSend,
}

fn take(leases: &mut HashMap<(Scope, String), Lease>, q: &Quota, now: Instant) -> Taken {
    let k = (q.scope, q.key.clone());
    if let Some(l) = leases.get_mut(&k) {
        let live = l.until > now && l.limit == q.limit;
        if live {
            if let Some(pos) = l.free.pop_first() {
                let low = l.free.len() as u32 <= l.last / 2;
                let refill = low && l.last > 1 && !l.granting;
                l.granting |= refill;
                return Taken::Slot(l.end, pos, refill);
            }
        } else {
            l.last = NOT_YET;
        }
        if l.granting || l.last <= 1 {
            return Taken::PerSend;
        }
        l.granting = true;
        return Taken::Ask;
    }
    if leases.len() >= MAX_LEASES {
        leases.retain(|_, l| l.until > now || l.granting);
        if leases.len() >= MAX_LEASES {
            return Taken::PerSend;
        }
    }
    leases.insert(
        k,
        Lease {
            limit: q.limit,
            end: SystemTime::UNIX_EPOCH,
            until: now,
            free: BTreeSet::new(),
            last: NOT_YET,
            granting: true,
        },
    );
    Taken::Ask
}

#[cfg(test)]
mod tests {
    use super::*;

    fn global() -> SendGuard {
        SendGuard {
            quotas: vec![Quota {
                scope: Scope::Global,
                key: "*".into(),
                limit: 1_000_000,
                window: Duration::from_secs(3600),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn a_dropped_request_leaves_nothing_asked_for() {
        let budgets = Budgets::default();
        let guard = global();
        let now = Instant::now();
        let first = budgets.plan(&guard, now);
        assert_eq!(
            first.plan().blocks,
            [BLOCK],
            "the first send asks for a block"
        );
        let second = budgets.plan(&guard, now);
        assert_eq!(second.plan().blocks, [0], "meanwhile, a send counts alone");
        drop(second);
        // The request that asked went away before the answer came.
        drop(first);
        let third = budgets.plan(&guard, now);
        assert_eq!(third.plan().blocks, [BLOCK], "the next send asks again");
    }

    #[test]
    fn a_dropped_request_is_no_longer_in_flight_for_the_breaker() {
        let budgets = Budgets::default();
        let rule = PumpingRule {
            country: "+86".into(),
            window: Duration::from_secs(3600),
            min_sample: 1000,
            min_conversion: 0.5,
        };
        let guard = SendGuard {
            pumping: Some(rule),
            ..Default::default()
        };
        let now = Instant::now();
        let first = budgets.plan(&guard, now);
        assert!(
            !first.plan().pump.local,
            "nothing known yet: the database judges"
        );
        let seen = SendResult {
            issued: true,
            grants: vec![],
            seen: Some(Seen {
                end: SystemTime::now() + Duration::from_secs(3600),
                sends: 1,
                approvals: 1,
                tripped: false,
            }),
            db_now: SystemTime::now(),
            asked_at: now,
        };
        first.settle(Ok(&seen));
        for _ in 0..HELD {
            let p = budgets.plan(&guard, now);
            assert!(p.plan().pump.local);
            drop(p);
        }
        let tallies = budgets.tallies.lock().unwrap();
        let t = &tallies["+86"];
        assert_eq!(
            (t.in_flight, t.unflushed),
            (0, 0),
            "dropped sends are not counted"
        );
    }
}
