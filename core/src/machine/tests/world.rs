//! A fake world, pure and deterministic: an Auto Scaling group that
//! launches and scales in like AWS (oldest unprotected first), EC2 images,
//! launch template versions and Consul health decided per instance by the
//! test. It performs the machine's actions and checks the invariants that
//! must hold whatever happens (capacity, no unknown or repeated
//! terminations).

use std::cell::Cell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use crate::fleet::{Group, GroupInstance, Instance, LaunchTemplateRef};
use crate::health::CheckStatus;
use crate::machine::{
    Action, Capacity, Change, CheckFailure, Health, Observation, OperatorCommand, Params, Rollout,
    RolloutEvent, RolloutSpec, StableRef, State, Step, Timestamp, step,
};

/// The start of every test's clock.
pub const T0: Timestamp = Timestamp(1_700_000_000_000);
pub const OLD: &str = "ami-old";
pub const NEW: &str = "ami-new";

/// What a health rule sees of an instance.
pub struct Probe<'a> {
    pub id: &'a str,
    pub image: &'a str,
    /// The template version that launched it (1 for the initial members).
    pub template: i64,
    /// Since launch.
    pub age: Duration,
    pub now: Timestamp,
}

type HealthRule = Box<dyn Fn(&Probe<'_>) -> Option<Health>>;

pub struct World {
    pub now: Timestamp,
    pub group: Group,
    /// Instance ID to (image, launched at).
    pub ec2: BTreeMap<String, (String, Timestamp)>,
    /// Template version to (image, what made it: "initial", "terraform" or
    /// the idempotency token of a created version, which names its base).
    pub templates: BTreeMap<i64, (String, String)>,
    pub created: Option<i64>,
    /// Instance ID to the template version the group launched it from (the
    /// machine never sees this: AWS's per-instance report is unreliable).
    pub launched_from: BTreeMap<String, i64>,
    pub boot: Duration,
    pub health: HealthRule,
    pub commands: Vec<OperatorCommand>,
    /// Every action performed, with its time.
    pub performed: Vec<(Timestamp, Action)>,
    /// Instances a `Terminate` actually took down, in order.
    pub terminated: Vec<String>,
    /// Instances the group launched, in order.
    pub launched: Vec<String>,
    pub min_desired: i32,
    pub min_serving: usize,
    pub stable_recorded: Vec<(i64, String, String)>,
    next_id: u32,
}

pub fn passing() -> Health {
    Health::passing()
}

pub fn critical(id: &str) -> Health {
    Health {
        all_passing: false,
        failing: vec![CheckFailure {
            check_id: format!("web-{id}:agent"),
            name: "web rollgate agent probe".into(),
            status: CheckStatus::Critical,
            output: "GET http://127.0.0.1:8080/health answered 500".into(),
        }],
    }
}

/// Fast parameters for tests: batch 2, 10s healthy, 5m deadline.
pub fn params() -> Params {
    Params {
        batch_size: 2,
        min_healthy_time: Duration::from_secs(10),
        healthy_deadline: Duration::from_secs(300),
        // Off: these tests are about the deadlines; failing fast has its
        // own (tests/fail_fast.rs).
        failure_time: Duration::ZERO,
        progress_deadline: Duration::from_secs(600),
        canary: 0,
        auto_promote: false,
        bake_time: Duration::from_secs(30),
        auto_revert: true,
    }
}

pub fn spec(world: &World, params: Params) -> RolloutSpec {
    let g = &world.group;
    RolloutSpec {
        id: "web-7".into(),
        service: "web".into(),
        group: g.name.clone(),
        launch_template_id: "lt-1".into(),
        target_image: NEW.into(),
        target_version: "2.0.0".into(),
        target_template_version: None,
        base_template_version: Some(1),
        change: Change::Image,
        stable: StableRef {
            template_version: 1,
            image: OLD.into(),
            version: "1.0.0".into(),
        },
        params,
        original: Capacity {
            min: g.min_size,
            max: g.max_size,
            desired: g.desired_capacity,
        },
        instances_to_replace: world
            .ec2
            .iter()
            .filter(|(_, (img, _))| img != NEW)
            .map(|(id, _)| id.clone())
            .collect(),
    }
}

impl World {
    /// `old` instances on the old image and `on_target` already on the new
    /// one, InService and passing; desired = max = their number, min 2.
    pub fn new(old: usize, on_target: usize) -> Self {
        let n = old + on_target;
        let mut w = Self {
            now: T0,
            group: Group {
                name: "web-asg".into(),
                min_size: i32::try_from(n.min(2)).unwrap(),
                max_size: i32::try_from(n).unwrap(),
                desired_capacity: i32::try_from(n).unwrap(),
                launch_template: Some(LaunchTemplateRef {
                    id: "lt-1".into(),
                    name: "web".into(),
                    version: "1".into(),
                }),
                instances: Vec::new(),
                suspended_processes: Vec::new(),
            },
            ec2: BTreeMap::new(),
            templates: BTreeMap::from([(1, (OLD.to_owned(), "initial".to_owned()))]),
            created: None,
            launched_from: BTreeMap::new(),
            boot: Duration::from_secs(20),
            health: Box::new(|_| None),
            commands: Vec::new(),
            performed: Vec::new(),
            terminated: Vec::new(),
            launched: Vec::new(),
            min_desired: i32::MAX,
            min_serving: usize::MAX,
            stable_recorded: Vec::new(),
            next_id: 100,
        };
        let day_ago = Timestamp(T0.0 - 86_400_000);
        for i in 0..n {
            let id = format!("i-old{i}");
            let image = if i < old { OLD } else { NEW };
            w.ec2.insert(id.clone(), (image.into(), day_ago));
            w.launched_from.insert(id.clone(), 1);
            w.group.instances.push(member(&id, "InService"));
        }
        w.healthy_after_boot();
        w.check();
        w
    }

    /// Target-image instances pass once booted; others always pass.
    /// New-image instances answer 500 forever once booted; old ones pass.
    pub fn broken_new_image(&mut self) {
        let boot = self.boot;
        self.health = Box::new(move |p| {
            (p.age >= boot).then(|| {
                if p.image == NEW {
                    critical(p.id)
                } else {
                    passing()
                }
            })
        });
    }

    pub fn healthy_after_boot(&mut self) {
        let boot = self.boot;
        self.health = Box::new(move |p| (p.age >= boot).then(passing));
    }

    pub fn observe(&self) -> Observation {
        let mut health = BTreeMap::new();
        let mut instances = Vec::new();
        for m in &self.group.instances {
            let (image, at) = &self.ec2[&m.instance_id];
            instances.push(Instance {
                instance_id: m.instance_id.clone(),
                image_id: image.clone(),
                state: if m.lifecycle_state == "Terminating" {
                    "shutting-down"
                } else {
                    "running"
                }
                .into(),
                private_ip: None,
                availability_zone: "eu-west-1a".into(),
                launch_time: None,
            });
            if m.lifecycle_state == "Terminating" {
                continue;
            }
            let probe = Probe {
                id: &m.instance_id,
                image,
                template: self.launched_from[&m.instance_id],
                age: self.now.since(*at),
                now: self.now,
            };
            if let Some(h) = (self.health)(&probe) {
                health.insert(m.instance_id.clone(), h);
            }
        }
        Observation {
            group: self.group.clone(),
            instances,
            health,
            commands: self.commands.clone(),
            created_template_version: self.created,
            aws_read_at: None,
            health_read_at: None,
        }
    }

    /// Performs actions as the executor would (all of them, in order).
    pub fn perform(&mut self, actions: &[Action]) {
        for a in actions {
            self.apply(a);
        }
    }

    pub fn apply(&mut self, a: &Action) {
        self.performed.push((self.now, a.clone()));
        let g = &mut self.group;
        match a {
            Action::SuspendProcesses(ps) => {
                assert!(!ps.is_empty(), "empty list suspends everything");
                for p in ps {
                    if !g.suspended_processes.contains(p) {
                        g.suspended_processes.push(p.clone());
                    }
                }
            }
            Action::ResumeProcesses(ps) => {
                assert!(!ps.is_empty(), "empty list resumes everything");
                g.suspended_processes.retain(|p| !ps.contains(p));
            }
            Action::CreateTemplateVersion {
                base_version,
                image,
                rollout_id,
                ..
            } => {
                assert!(
                    self.templates.contains_key(base_version),
                    "unknown base version {base_version}"
                );
                // As AWS with a client token: the same request gets the
                // version the first one created.
                let token = format!("{rollout_id}: {image} from {base_version}");
                let found = self.templates.iter().find(|(_, (_, t))| *t == token);
                let v = match found {
                    Some((v, _)) => *v,
                    None => {
                        let v = self.templates.keys().max().unwrap() + 1;
                        self.templates.insert(v, (image.clone(), token));
                        v
                    }
                };
                self.created = Some(v);
            }
            Action::SetGroupTemplate { version, .. } => {
                assert!(
                    self.templates.contains_key(version),
                    "unknown version {version}"
                );
                g.launch_template.as_mut().unwrap().version = version.to_string();
            }
            Action::SetCapacity { min, max, desired } => {
                g.min_size = min.unwrap_or(g.min_size);
                g.max_size = max.unwrap_or(g.max_size);
                g.desired_capacity = desired.unwrap_or(g.desired_capacity);
                assert!(
                    g.min_size <= g.desired_capacity && g.desired_capacity <= g.max_size,
                    "AWS rejects {a:?} on {g:?}"
                );
            }
            Action::Protect(ids) | Action::Unprotect(ids) => {
                let on = matches!(a, Action::Protect(_));
                for id in ids {
                    let m = g.instances.iter_mut().find(|m| &m.instance_id == id);
                    m.unwrap_or_else(|| panic!("protect unknown {id}"))
                        .protected_from_scale_in = on;
                }
            }
            Action::Terminate { ids, decrement } => {
                for id in ids {
                    let m = g.instances.iter_mut().find(|m| &m.instance_id == id);
                    let m = m.unwrap_or_else(|| panic!("terminate of an unknown instance {id}"));
                    if m.lifecycle_state == "Terminating" {
                        continue; // the Fleet's contract: already done, no decrement
                    }
                    m.lifecycle_state = "Terminating".into();
                    self.terminated.push(id.clone());
                    if *decrement {
                        g.desired_capacity -= 1;
                        assert!(g.desired_capacity >= g.min_size, "below min");
                    }
                }
            }
            Action::RecordStable {
                template_version,
                image,
                version,
            } => self
                .stable_recorded
                .push((*template_version, image.clone(), version.clone())),
            Action::MarkImageFailed { .. } | Action::Notify(_) => {}
        }
        self.reconcile();
        self.check();
    }

    /// What the group does on its own: launch up to desired from the pinned
    /// template; scale in the oldest unprotected instances above it.
    fn reconcile(&mut self) {
        let alive = |g: &Group| {
            g.instances
                .iter()
                .filter(|m| m.lifecycle_state != "Terminating")
                .count()
        };
        let desired = usize::try_from(self.group.desired_capacity).unwrap();
        while alive(&self.group) < desired {
            let v: i64 = self
                .group
                .launch_template
                .as_ref()
                .unwrap()
                .version
                .parse()
                .unwrap();
            let image = self.templates[&v].0.clone();
            let id = format!("i-{:04}", self.next_id);
            self.next_id += 1;
            self.ec2.insert(id.clone(), (image, self.now));
            self.launched_from.insert(id.clone(), v);
            self.group.instances.push(member(&id, "Pending"));
            self.launched.push(id);
        }
        while alive(&self.group) > desired {
            let ec2 = &self.ec2;
            let victim = self
                .group
                .instances
                .iter_mut()
                .filter(|m| m.lifecycle_state != "Terminating" && !m.protected_from_scale_in)
                .min_by_key(|m| (ec2[&m.instance_id].1, m.instance_id.clone()));
            let Some(v) = victim else { break };
            v.lifecycle_state = "Terminating".into();
        }
    }

    /// Time passes: terminating instances leave, booted ones go InService.
    pub fn tick(&mut self, dt: Duration) {
        self.now = self.now.plus(dt);
        self.group
            .instances
            .retain(|m| m.lifecycle_state != "Terminating");
        let (now, boot, ec2) = (self.now, self.boot, &self.ec2);
        for m in &mut self.group.instances {
            if m.lifecycle_state == "Pending" && now.since(ec2[&m.instance_id].1) >= boot {
                m.lifecycle_state = "InService".into();
            }
        }
        self.reconcile();
        self.check();
    }

    /// AWS takes an instance away (health replacement, spot, a person).
    pub fn aws_terminates(&mut self, id: &str) {
        let m = self
            .group
            .instances
            .iter_mut()
            .find(|m| m.instance_id == id)
            .unwrap();
        m.lifecycle_state = "Terminating".into();
        self.check();
    }

    fn check(&mut self) {
        self.min_desired = self.min_desired.min(self.group.desired_capacity);
        let obs = self.observe();
        let serving = obs
            .group
            .instances
            .iter()
            .filter(|m| obs.passing(&m.instance_id))
            .count();
        self.min_serving = self.min_serving.min(serving);
    }

    /// One executor iteration: observe, step, perform, consume commands.
    pub fn step(&mut self, r: &Rollout) -> Step {
        let obs = self.observe();
        let s = step(r, &obs, self.now);
        self.perform(&s.actions);
        self.commands.clear();
        s
    }

    /// Steps once per second until `until` holds or the rollout ends, at
    /// most `limit` of simulated time.
    pub fn run_until(
        &mut self,
        mut r: Rollout,
        limit: Duration,
        until: impl Fn(&Rollout, &World) -> bool,
    ) -> Rollout {
        let end = self.now.plus(limit);
        while self.now < end && !r.is_terminal() && !until(&r, self) {
            r = self.step(&r).next;
            self.tick(Duration::from_secs(1));
        }
        r
    }

    /// Runs to the end (or panics after two simulated hours).
    pub fn run(&mut self, r: Rollout) -> Rollout {
        let r = self.run_until(r, Duration::from_secs(7200), |_, _| false);
        assert!(r.is_terminal(), "did not finish: {:?}", r.state);
        r
    }

    pub fn actions(&self) -> impl Iterator<Item = &Action> {
        self.performed.iter().map(|(_, a)| a)
    }

    pub fn events(&self) -> Vec<RolloutEvent> {
        let mut out: Vec<RolloutEvent> = Vec::new();
        for a in self.actions() {
            if let Action::Notify(e) = a {
                // The outbox deduplicates: a replayed notice is one message.
                if !out.contains(e) {
                    out.push(e.clone());
                }
            }
        }
        out
    }

    /// When the first action matching `f` was performed.
    pub fn when(&self, f: impl Fn(&Action) -> bool) -> Option<Timestamp> {
        self.performed.iter().find(|(_, a)| f(a)).map(|(t, _)| *t)
    }

    pub fn images(&self) -> Vec<&str> {
        self.group
            .instances
            .iter()
            .map(|m| self.ec2[&m.instance_id].0.as_str())
            .collect()
    }

    pub fn template(&self) -> i64 {
        self.group
            .launch_template
            .as_ref()
            .unwrap()
            .version
            .parse()
            .unwrap()
    }
}

fn member(id: &str, state: &str) -> GroupInstance {
    GroupInstance {
        instance_id: id.into(),
        lifecycle_state: state.into(),
        health_status: "Healthy".into(),
        protected_from_scale_in: false,
        availability_zone: "eu-west-1a".into(),
    }
}

/// One new instance in service, not passing in Consul until `up` is set
/// (batch of 1).
pub(super) fn launching_with_one_instance() -> (World, Rollout, Rc<Cell<bool>>) {
    let mut w = World::new(1, 0);
    let up = Rc::new(Cell::new(false));
    let flag = up.clone();
    w.health = Box::new(move |p| (p.image != NEW || flag.get()).then(super::world::passing));
    let mut p = params();
    p.batch_size = 1;
    let r = Rollout::new(spec(&w, p));
    let r = w.run_until(r, Duration::from_secs(60), |r, w| {
        matches!(&r.state, State::Launching(b) if !b.new.is_empty())
            && w.group
                .instances
                .iter()
                .all(|m| m.lifecycle_state == "InService")
    });
    (w, r, up)
}
