//! The AWS half of the executor's observations, read in the background for
//! every rollout a coordinator drives.
//!
//! EC2 and Auto Scaling have no change feed, so the executor must poll
//! them; but a step woken by Consul (a health change, a timer) must not
//! wait for a describe to act on it: under load one describe takes longer
//! than the gate it would delay. The [`Informer`] reads every group a drive
//! follows ([`Informer::follow`]) every poll interval, and each drive steps
//! with the latest view of its group, telling the machine when that view
//! was read (`Observation::aws_read_at`).
//!
//! One read serves every group: one `DescribeAutoScalingGroups` for all of
//! them (`Fleet::describe_groups`), then one `DescribeInstances` of the
//! members not described yet and of the longest-described others, up to
//! [`DESCRIBE_PER_READ`] (see [`Informer::run`]). A coordinator rolling out
//! twenty services at once makes about as many AWS calls as one rolling
//! out one: the rate limits of both APIs are per account, shared with
//! everything else that reads them.
//!
//! Where staleness could mislead, a drive asks for a view read after a
//! given instant and waits for it ([`Following::view`]): after its own
//! actions that change AWS (it must see their effect, as it always did),
//! and at its start. What a stale view can still get wrong is caught where
//! it always was: an action on an instance that has gone (protection,
//! termination) fails or is a no-op, the tick fails, and the next tick
//! waits for a fresh view. A failed read is never hidden behind an older
//! view: the next [`Following::view`] of every group it concerned answers
//! the error, and the executor retries from KV and a fresh observation as
//! after any failure.
//!
//! It must never act: reads only.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::plan::now_ms;
use crate::aws::{self, Fleet};

/// How many instances one read describes in EC2 at most, besides the
/// members not described yet (see [`Informer::run`]).
pub const DESCRIBE_PER_READ: usize = 200;

/// One read of a group and its members.
#[derive(Debug)]
pub struct AwsView {
    /// The group, from `Fleet::describe_groups`.
    pub group: aws::Group,
    /// The EC2 view of its members that EC2 reported.
    pub instances: Vec<aws::Instance>,
    /// When the read started (the view shows the group at that moment or
    /// later): what "read after" is measured against. The EC2 part of a
    /// member described earlier may be older (see [`Informer::run`]).
    pub started: Instant,
    /// The same moment on the wall clock (ms since the epoch), for the
    /// machine.
    pub started_ms: u64,
}

/// A followed group's latest read.
#[derive(Debug, Default)]
struct Latest {
    /// Drives following it; the group is read while there is one.
    followers: usize,
    view: Option<Arc<AwsView>>,
    /// A failed read, until the drive has been told.
    error: Option<aws::Error>,
}

/// Reads the followed groups in the background; see the module
/// documentation.
#[derive(Debug)]
pub struct Informer<F> {
    fleet: Arc<F>,
    poll: Duration,
    /// [`DESCRIBE_PER_READ`], or fewer in tests.
    describe_per_read: usize,
    groups: Mutex<BTreeMap<String, Latest>>,
    /// Bumped after every read, successful or not.
    reads: watch::Sender<u64>,
    /// Asks for a read now.
    poke: Notify,
}

impl<F: Fleet> Informer<F> {
    /// An informer reading every `poll` once [`Informer::run`] runs.
    pub fn new(fleet: Arc<F>, poll: Duration) -> Self {
        Self {
            fleet,
            poll,
            describe_per_read: DESCRIBE_PER_READ,
            groups: Mutex::new(BTreeMap::new()),
            reads: watch::Sender::new(0),
            poke: Notify::new(),
        }
    }

    /// Follows `group` until the answer is dropped; its first read comes at
    /// once.
    pub fn follow(&self, group: &str) -> Following<'_, F> {
        self.lock().entry(group.to_owned()).or_default().followers += 1;
        self.poke.notify_one();
        Following {
            informer: self,
            group: group.to_owned(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Latest>> {
        self.groups.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads the followed groups every poll interval, or at once when
    /// asked; never returns (drop it to stop).
    ///
    /// Each read describes the groups, then in EC2 the members not
    /// described yet (their image is what the gate checks; it never
    /// changes) and, up to [`DESCRIBE_PER_READ`] instances in all, the
    /// members described longest ago. With up to that many members every
    /// read describes them all; with more, an EC2 state (an instance lost
    /// behind its group's back, which the group shows as leaving soon
    /// after) is at most members / [`DESCRIBE_PER_READ`] reads old. What a
    /// drive's own actions change shows in the group part, which every
    /// read reads: new members, capacity, protection, `Terminating`.
    pub async fn run(&self) {
        // Each member's EC2 view, with the read that described it.
        let mut described: BTreeMap<String, (aws::Instance, u64)> = BTreeMap::new();
        let mut reads = 0u64;
        loop {
            let names: Vec<String> = self
                .lock()
                .iter()
                .filter(|(_, l)| l.followers > 0)
                .map(|(g, _)| g.clone())
                .collect();
            if !names.is_empty() {
                reads += 1;
                let started = Instant::now();
                let started_ms = now_ms();
                let read = async {
                    let groups = self.fleet.describe_groups(&names).await?;
                    let ask = to_describe(&groups, &described, self.describe_per_read);
                    let fresh = self.fleet.describe_instances(&ask).await?;
                    Ok::<_, aws::Error>((groups, fresh))
                }
                .await;
                match read {
                    Ok((groups, fresh)) => {
                        described.extend(
                            fresh
                                .into_iter()
                                .map(|i| (i.instance_id.clone(), (i, reads))),
                        );
                        described.retain(|id, _| {
                            groups
                                .iter()
                                .any(|g| g.instances.iter().any(|m| m.instance_id == *id))
                        });
                        let mut latest = self.lock();
                        for name in &names {
                            let Some(l) = latest.get_mut(name) else {
                                continue;
                            };
                            match groups.iter().find(|g| g.name == *name) {
                                Some(group) => {
                                    let instances = group
                                        .instances
                                        .iter()
                                        .filter_map(|m| {
                                            described.get(&m.instance_id).map(|(i, _)| i.clone())
                                        })
                                        .collect();
                                    l.view = Some(Arc::new(AwsView {
                                        group: group.clone(),
                                        instances,
                                        started,
                                        started_ms,
                                    }));
                                    l.error = None;
                                }
                                None => {
                                    l.view = None;
                                    l.error = Some(aws::Error::not_found(
                                        "autoscaling:DescribeAutoScalingGroups",
                                        format!("group {name}"),
                                        "",
                                    ));
                                }
                            }
                        }
                    }
                    Err(e) => {
                        let mut latest = self.lock();
                        for name in &names {
                            if let Some(l) = latest.get_mut(name) {
                                l.view = None;
                                l.error = Some(e.clone());
                            }
                        }
                    }
                }
                self.reads.send_modify(|n| *n += 1);
            }
            tokio::select! {
                () = self.poke.notified() => {}
                () = tokio::time::sleep(self.poll) => {}
            }
        }
    }
}

/// The ids one read describes in EC2: every member not described yet, then
/// the members described longest ago, up to `limit` in all.
fn to_describe(
    groups: &[aws::Group],
    described: &BTreeMap<String, (aws::Instance, u64)>,
    limit: usize,
) -> Vec<String> {
    let members = groups
        .iter()
        .flat_map(|g| &g.instances)
        .map(|m| &m.instance_id);
    let (mut ask, mut known): (Vec<&String>, Vec<(u64, &String)>) = (Vec::new(), Vec::new());
    for id in members {
        match described.get(id) {
            None => ask.push(id),
            Some((_, read)) => known.push((*read, id)),
        }
    }
    known.sort();
    let room = limit.saturating_sub(ask.len());
    ask.extend(known.into_iter().take(room).map(|(_, id)| id));
    ask.into_iter().cloned().collect()
}

/// One drive's following of its group; see [`Informer::follow`].
#[derive(Debug)]
pub struct Following<'i, F> {
    informer: &'i Informer<F>,
    group: String,
}

impl<F> Drop for Following<'_, F> {
    fn drop(&mut self) {
        let mut groups = self
            .informer
            .groups
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(l) = groups.get_mut(&self.group) {
            l.followers = l.followers.saturating_sub(1);
            if l.followers == 0 {
                groups.remove(&self.group);
            }
        }
    }
}

impl<F: Fleet> Following<'_, F> {
    /// The group it follows.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The latest view, if it was read (started) at or after `after`;
    /// otherwise asks for a read and waits for one that was. A failed read
    /// is answered once, as the error it was.
    pub async fn view(&self, after: Instant) -> Result<Arc<AwsView>, aws::Error> {
        loop {
            let mut reads = self.informer.reads.subscribe();
            {
                let mut groups = self.informer.lock();
                if let Some(l) = groups.get_mut(&self.group) {
                    if let Some(e) = l.error.take() {
                        return Err(e);
                    }
                    if let Some(v) = l.view.as_ref().filter(|v| v.started >= after) {
                        return Ok(Arc::clone(v));
                    }
                }
            }
            self.informer.poke.notify_one();
            // The sender lives as long as the informer, which outlives
            // this borrow of it.
            let _ = reads.changed().await;
        }
    }

    /// Resolves when a read completes after this call.
    pub async fn next_read(&self) {
        let mut reads = self.informer.reads.subscribe();
        let _ = reads.changed().await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::aws::memory::MemoryFleet;

    async fn fleet() -> (Arc<MemoryFleet>, Vec<String>) {
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
        (Arc::new(fleet), ids)
    }

    /// Drives `informer.run()` beside `f`, the way the executor does.
    async fn beside<T>(
        informer: &Informer<MemoryFleet>,
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
        let informer = Informer::new(Arc::clone(&fleet), Duration::from_secs(1));
        let web = informer.follow("web-asg");
        let start = Instant::now();
        let (first, cached, second) = beside(&informer, async {
            let first = web.view(start).await.unwrap();
            // A member terminated in AWS after that read: a view that may
            // be cached still shows it (staleness is allowed)...
            fleet.lose_instance(&ids[0]);
            let cached = web.view(start).await.unwrap();
            // ...but a view asked for after it never does.
            tokio::time::advance(Duration::from_millis(1)).await;
            let second = web.view(Instant::now()).await.unwrap();
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
        let informer = Informer::new(Arc::clone(&fleet), Duration::from_secs(1));
        let web = informer.follow("web-asg");
        let start = Instant::now();
        let (first, later) = beside(&informer, async {
            let first = web.view(start).await.unwrap();
            tokio::time::sleep(Duration::from_millis(2500)).await;
            (first, web.view(start).await.unwrap())
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
        let informer = Informer::new(Arc::clone(&fleet), Duration::from_secs(1));
        let web = informer.follow("web-asg");
        let start = Instant::now();
        let (error, after) = beside(&informer, async {
            web.view(start).await.unwrap();
            fleet.fail_next("autoscaling:DescribeAutoScalingGroups", 1);
            web.next_read().await;
            let error = web.view(start).await.expect_err("the failed read");
            (error, web.view(start).await)
        })
        .await;
        assert!(
            error.to_string().contains("DescribeAutoScalingGroups"),
            "{error}"
        );
        assert!(after.is_ok(), "the next read answers again: {after:?}");
    }

    #[tokio::test]
    async fn a_read_describes_new_members_then_the_longest_described_up_to_its_limit() {
        let (fleet, ids) = fleet().await;
        let group = fleet.describe_group("web-asg").await.unwrap();
        let ec2 = fleet.describe_instances(&ids).await.unwrap();
        // ids[0] never described; ids[1] described by read 3.
        let mut described = BTreeMap::new();
        described.insert(ids[1].clone(), (ec2[1].clone(), 3));
        let groups = vec![group];
        assert_eq!(
            to_describe(&groups, &described, 1),
            vec![ids[0].clone()],
            "the new member first"
        );
        assert_eq!(
            to_describe(&groups, &described, 0),
            vec![ids[0].clone()],
            "a new member even beyond the limit"
        );
        assert_eq!(
            to_describe(&groups, &described, 200),
            vec![ids[0].clone(), ids[1].clone()]
        );
        // Of the described ones, the longest described first.
        described.insert(ids[0].clone(), (ec2[0].clone(), 5));
        assert_eq!(to_describe(&groups, &described, 1), vec![ids[1].clone()]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_background_read_describes_a_new_member_at_once() {
        let (fleet, ids) = fleet().await;
        let informer = Informer::new(Arc::clone(&fleet), Duration::from_secs(1));
        let web = informer.follow("web-asg");
        let start = Instant::now();
        let later = beside(&informer, async {
            web.view(start).await.unwrap();
            // EC2 replaces a lost member: the replacement is new.
            fleet.lose_instance(&ids[0]);
            web.next_read().await;
            web.view(start).await.unwrap()
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

    #[tokio::test(start_paused = true)]
    async fn one_read_serves_every_followed_group_and_a_failure_reaches_each() {
        let (fleet, _) = fleet().await;
        let v1 = fleet.add_template("api", "ami-old");
        fleet.add_group("api-asg", &v1.template_id, 1, 2, 4, 2);
        let informer = Informer::new(Arc::clone(&fleet), Duration::from_secs(1));
        let web = informer.follow("web-asg");
        let api = informer.follow("api-asg");
        let gone = informer.follow("no-such-asg");
        let start = Instant::now();
        let (w, a, missing, failed) = beside(&informer, async {
            let w = web.view(start).await.unwrap();
            let a = api.view(start).await.unwrap();
            let missing = gone.view(start).await.expect_err("no such group");
            fleet.fail_next("autoscaling:DescribeAutoScalingGroups", 1);
            web.next_read().await;
            let failed = (
                web.view(start).await.is_err(),
                api.view(start).await.is_err(),
            );
            (w, a, missing, failed)
        })
        .await;
        assert_eq!(w.group.name, "web-asg");
        assert_eq!(a.group.name, "api-asg");
        assert_eq!(w.started, a.started, "the same read");
        assert!(missing.is_not_found(), "{missing}");
        assert_eq!(
            failed,
            (true, true),
            "a failed read reaches every group it concerned"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_group_nobody_follows_any_more_is_not_read() {
        let (fleet, _) = fleet().await;
        let informer = Informer::new(Arc::clone(&fleet), Duration::from_secs(1));
        let start = Instant::now();
        beside(&informer, async {
            let web = informer.follow("web-asg");
            web.view(start).await.unwrap();
            drop(web);
            assert!(
                informer.lock().is_empty(),
                "forgotten with its last follower"
            );
            // The next two describes fail. None is made while nobody
            // follows (three poll intervals), so the new follower's first
            // reads (its own and the one it asks for) are the ones to fail.
            fleet.fail_next("autoscaling:DescribeAutoScalingGroups", 2);
            tokio::time::sleep(Duration::from_secs(3)).await;
            let again = informer.follow("web-asg");
            assert!(again.view(Instant::now()).await.is_err());
        })
        .await;
    }
}
