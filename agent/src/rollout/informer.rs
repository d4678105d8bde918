//! The AWS half of the executor's observation, read in the background.
//!
//! EC2 and Auto Scaling have no change feed, so the executor must poll
//! them; but a step woken by Consul (a health change, a timer) must not
//! wait for a describe to act on it: under load one describe takes longer
//! than the gate it would delay. The [`Informer`] reads the group and its
//! members (`DescribeAutoScalingGroups`, then `DescribeInstances` of the
//! members it has not described yet, and of all of them every few reads:
//! one coordinator rolls out many services, and EC2's rate limits are per
//! account) every poll interval, and the executor steps with the latest view it holds,
//! telling the machine when that view was read (`Observation::aws_read_at`).
//!
//! Where staleness could mislead, the executor asks for a view read after
//! a given instant and waits for it ([`Informer::view`]): after its own
//! actions that change AWS (it must see their effect, as it always did),
//! and at the start of a drive. What a stale view can still get wrong is
//! caught where it always was: an action on an instance that has gone
//! (protection, termination) fails or is a no-op, the tick fails, and the
//! next tick waits for a fresh view. A failed read is never hidden behind
//! an older view: the next [`Informer::view`] answers the error, and the
//! executor retries from KV and a fresh observation as after any failure.
//!
//! It must never act: reads only.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::plan::now_ms;
use crate::aws::{self, Fleet};

/// Every how many reads in the background all members are described in
/// EC2 again (see [`Informer::run`]).
pub const FULL_EVERY: u32 = 5;

/// One read of the group and its members.
#[derive(Debug)]
pub struct AwsView {
    /// `Fleet::describe_group`.
    pub group: aws::Group,
    /// `Fleet::describe_members` of that group.
    pub instances: Vec<aws::Instance>,
    /// When the read started (the view shows the world at that moment or
    /// later): what "read after" is measured against. For a read that
    /// described only new members in EC2, the start of the last read that
    /// described them all.
    pub started: Instant,
    /// The same moment on the wall clock (ms since the epoch), for the
    /// machine.
    pub started_ms: u64,
}

/// The latest read.
#[derive(Debug, Default)]
struct Latest {
    view: Option<Arc<AwsView>>,
    /// A failed read, until the executor has been told.
    error: Option<aws::Error>,
}

/// Reads one group in the background; see the module documentation.
#[derive(Debug)]
pub struct Informer<'a, F> {
    fleet: &'a F,
    group: String,
    poll: Duration,
    latest: Mutex<Latest>,
    /// Bumped after every read, successful or not.
    reads: watch::Sender<u64>,
    /// Asks for a read now.
    poke: Notify,
}

impl<'a, F: Fleet> Informer<'a, F> {
    /// An informer of `group`, reading every `poll` once [`Informer::run`]
    /// runs.
    pub fn new(fleet: &'a F, group: &str, poll: Duration) -> Self {
        Self {
            fleet,
            group: group.to_owned(),
            poll,
            latest: Mutex::new(Latest::default()),
            reads: watch::Sender::new(0),
            poke: Notify::new(),
        }
    }

    /// The group it reads.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// Reads the group every poll interval, or at once when asked; never
    /// returns (drop it to stop).
    ///
    /// A read in the background describes in EC2 only the members it has
    /// not described yet: an instance's image never changes, and its
    /// leaving shows first in the group's lifecycle states. Every
    /// [`FULL_EVERY`]th read, the first, the one after a failure and a
    /// read the executor asks for ([`Informer::view`]) describe them all,
    /// so an EC2 state (an instance lost behind the group's back) is at
    /// most that many poll intervals old. A view from a partial read is
    /// dated at the start of the last full one (`AwsView::started`): it is
    /// never taken for fresher than its oldest part, so `view(after)` waits
    /// for a full read after `after`, and the machine judges deadlines that
    /// rest on AWS as it always did.
    pub async fn run(&self) {
        let mut described: BTreeMap<String, aws::Instance> = BTreeMap::new();
        let mut since_full = 0u32;
        let mut full = true;
        // When the last full read started: a partial view is dated then,
        // its oldest EC2 state's time, so neither `view(after)` nor the
        // machine's AWS deadlines take it for fresher than it is.
        let mut full_started = (Instant::now(), now_ms());
        loop {
            let (started, started_ms) = if full {
                (Instant::now(), now_ms())
            } else {
                full_started
            };
            let read = async {
                let group = self.fleet.describe_group(&self.group).await?;
                let ask: Vec<String> = group
                    .instances
                    .iter()
                    .map(|m| &m.instance_id)
                    .filter(|id| full || !described.contains_key(*id))
                    .cloned()
                    .collect();
                let fresh = self.fleet.describe_instances(&ask).await?;
                Ok::<_, aws::Error>((group, fresh))
            }
            .await;
            let read = read.map(|(group, fresh)| {
                if full {
                    described.clear();
                }
                described.extend(fresh.into_iter().map(|i| (i.instance_id.clone(), i)));
                described.retain(|id, _| group.instances.iter().any(|m| m.instance_id == *id));
                let instances = group
                    .instances
                    .iter()
                    .filter_map(|m| described.get(&m.instance_id).cloned())
                    .collect();
                (group, instances)
            });
            let failed = read.is_err();
            if full && !failed {
                full_started = (started, started_ms);
            }
            {
                let mut latest = self.latest.lock().unwrap_or_else(PoisonError::into_inner);
                match read {
                    Ok((group, instances)) => {
                        latest.view = Some(Arc::new(AwsView {
                            group,
                            instances,
                            started,
                            started_ms,
                        }));
                        latest.error = None;
                    }
                    Err(e) => {
                        latest.view = None;
                        latest.error = Some(e);
                    }
                }
            }
            self.reads.send_modify(|n| *n += 1);
            since_full = if full { 0 } else { since_full + 1 };
            let asked = tokio::select! {
                () = self.poke.notified() => true,
                () = tokio::time::sleep(self.poll) => false,
            };
            full = asked || failed || since_full + 1 >= FULL_EVERY;
        }
    }

    /// The latest view, if it was read (started) at or after `after`;
    /// otherwise asks for a read and waits for one that was. A failed read
    /// is answered once, as the error it was.
    pub async fn view(&self, after: Instant) -> Result<Arc<AwsView>, aws::Error> {
        loop {
            let mut reads = self.reads.subscribe();
            {
                let mut latest = self.latest.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(e) = latest.error.take() {
                    return Err(e);
                }
                if let Some(v) = latest.view.as_ref().filter(|v| v.started >= after) {
                    return Ok(Arc::clone(v));
                }
            }
            self.poke.notify_one();
            // The sender lives as long as `self`: `changed` cannot fail
            // while we borrow it.
            let _ = reads.changed().await;
        }
    }

    /// Resolves when a read completes after this call.
    pub async fn next_read(&self) {
        let mut reads = self.reads.subscribe();
        let _ = reads.changed().await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::aws::memory::MemoryFleet;

    async fn fleet() -> (MemoryFleet, Vec<String>) {
        let fleet = MemoryFleet::new();
        let v1 = fleet.add_template("web", "ami-old");
        fleet.add_group("web-asg", &v1.template_id, 1, 2, 4, 2);
        let ids = fleet
            .describe_group("web-asg")
            .await
            .unwrap()
            .instances
            .into_iter()
            .map(|m| m.instance_id)
            .collect();
        (fleet, ids)
    }

    /// Drives `informer.run()` beside `f`, the way the executor does.
    async fn beside<T>(
        informer: &Informer<'_, MemoryFleet>,
        f: impl std::future::Future<Output = T>,
    ) -> T {
        tokio::select! {
            () = informer.run() => unreachable!("run never returns"),
            out = f => out,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_cached_view_is_served_without_a_new_read_until_a_fresher_one_is_asked_for() {
        let (fleet, ids) = fleet().await;
        let informer = Informer::new(&fleet, "web-asg", Duration::from_secs(1));
        let start = Instant::now();
        let (first, cached, second) = beside(&informer, async {
            let first = informer.view(start).await.unwrap();
            // A member terminated in AWS after that read: a view that may
            // be cached still shows it (staleness is allowed)...
            fleet.lose_instance(&ids[0]);
            let cached = informer.view(start).await.unwrap();
            // ...but a view asked for after it never does.
            tokio::time::advance(Duration::from_millis(1)).await;
            let second = informer.view(Instant::now()).await.unwrap();
            (first, cached, second)
        })
        .await;
        assert!(
            Arc::ptr_eq(&first, &cached),
            "served from the cache, no read"
        );
        assert!(
            first
                .group
                .instances
                .iter()
                .any(|m| m.instance_id == ids[0])
        );
        assert!(
            second
                .group
                .instances
                .iter()
                .all(|m| m.instance_id != ids[0] || m.lifecycle_state.starts_with("Terminat")),
            "a fresh view shows {} gone: {:?}",
            ids[0],
            second.group.instances
        );
        assert!(second.started >= first.started);
    }

    #[tokio::test(start_paused = true)]
    async fn the_view_is_refreshed_every_poll_interval_in_the_background() {
        let (fleet, _) = fleet().await;
        let informer = Informer::new(&fleet, "web-asg", Duration::from_secs(1));
        let start = Instant::now();
        let (first, later) = beside(&informer, async {
            let first = informer.view(start).await.unwrap();
            tokio::time::sleep(Duration::from_millis(2500)).await;
            (first, informer.view(start).await.unwrap())
        })
        .await;
        assert!(
            !Arc::ptr_eq(&first, &later),
            "more reads happened without being asked for"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_read_is_answered_as_its_error_not_hidden_behind_an_older_view() {
        let (fleet, _) = fleet().await;
        let informer = Informer::new(&fleet, "web-asg", Duration::from_secs(1));
        let start = Instant::now();
        let (error, after) = beside(&informer, async {
            informer.view(start).await.unwrap();
            fleet.fail_next("autoscaling:DescribeAutoScalingGroups", 1);
            informer.next_read().await;
            let error = informer.view(start).await.expect_err("the failed read");
            (error, informer.view(start).await)
        })
        .await;
        assert!(
            error.to_string().contains("DescribeAutoScalingGroups"),
            "{error}"
        );
        assert!(after.is_ok(), "the next read answers again: {after:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn background_reads_describe_only_new_members_and_all_of_them_every_few_reads() {
        let (fleet, _) = fleet().await;
        let informer = Informer::new(&fleet, "web-asg", Duration::from_secs(1));
        let start = Instant::now();
        let outcomes = beside(&informer, async {
            informer.view(start).await.unwrap();
            // Two reads on: the second comes from the timer, whether or not
            // the first was one this view asked for.
            informer.next_read().await;
            informer.next_read().await;
            // From now on the next DescribeInstances fails: a read that
            // makes one answers an error.
            fleet.fail_next("ec2:DescribeInstances", 1);
            let mut outcomes = Vec::new();
            for _ in 0..FULL_EVERY {
                informer.next_read().await;
                outcomes.push(informer.view(start).await.is_ok());
            }
            outcomes
        })
        .await;
        // The next background read describes nobody (no member is new);
        // within FULL_EVERY reads one describes them all.
        assert!(outcomes[0], "{outcomes:?}");
        assert_eq!(
            outcomes.iter().filter(|ok| !**ok).count(),
            1,
            "{outcomes:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_background_read_describes_a_new_member_at_once() {
        let (fleet, ids) = fleet().await;
        let informer = Informer::new(&fleet, "web-asg", Duration::from_secs(1));
        let start = Instant::now();
        let later = beside(&informer, async {
            informer.view(start).await.unwrap();
            // EC2 replaces a lost member: the replacement is new.
            fleet.lose_instance(&ids[0]);
            informer.next_read().await;
            informer.view(start).await.unwrap()
        })
        .await;
        let members: Vec<&str> = later
            .group
            .instances
            .iter()
            .map(|m| m.instance_id.as_str())
            .collect();
        let described: Vec<&str> = later
            .instances
            .iter()
            .map(|i| i.instance_id.as_str())
            .collect();
        assert!(!members.contains(&ids[0].as_str()), "{members:?}");
        assert_eq!(
            members, described,
            "every member described, the new one too"
        );
    }
}
