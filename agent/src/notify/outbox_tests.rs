//! The pure delivery rules of an outbox entry.

use super::*;
use crate::notify::{AlertStatus, MetaKind, MetaNotice};

fn policy() -> Policy {
    Policy {
        retry_min: Duration::from_secs(1),
        retry_max: Duration::from_secs(60),
        fallback_after: Duration::from_secs(120),
        lease: Duration::from_secs(30),
        keep_delivered: Duration::from_secs(3600),
    }
}

fn entry(receivers: &[&str]) -> Entry {
    let e = Event::meta(
        MetaNotice {
            kind: MetaKind::NoLeader,
            status: AlertStatus::Firing,
            since_ms: 0,
            detail: String::new(),
        },
        0,
    );
    let r: Vec<String> = receivers.iter().map(|s| s.to_string()).collect();
    Entry::new(e, &r, 1_000)
}

fn failed(at: u64, retryable: bool) -> Attempt {
    Attempt {
        at_ms: at,
        error: Some("boom".into()),
        retryable,
        retry_after: None,
        sent: Sent::default(),
    }
}

fn ok(at: u64) -> Attempt {
    Attempt {
        at_ms: at,
        error: None,
        retryable: true,
        retry_after: None,
        sent: Sent::default(),
    }
}

fn none(_: &str) -> bool {
    false
}

fn no_failure(_: &str) -> Option<u64> {
    None
}

fn fallback(r: &str) -> Option<String> {
    (r == "slack").then(|| "email".to_string())
}

#[test]
fn a_delivered_copy_is_never_due_again() {
    let mut e = entry(&["slack"]);
    assert_eq!(e.due(1_000, &none).as_deref(), Some("slack"));
    e.claim("slack", "me", 1_000, policy().lease);
    assert_eq!(e.due(1_000, &none), None, "leased");
    e.record("slack", &ok(1_100), &policy());
    assert_eq!(e.done_ms, Some(1_100));
    for t in [1_100, 10_000_000] {
        assert_eq!(e.due(t, &none), None);
    }
    // A late failure report (another sender's) does not undo the delivery.
    e.record("slack", &failed(1_200, true), &policy());
    assert!(e.deliveries["slack"].delivered_ms.is_some());
}

#[test]
fn failures_back_off_and_a_lease_expires() {
    let mut e = entry(&["slack"]);
    let mut delays = Vec::new();
    let mut now = 1_000;
    for _ in 0..6 {
        let r = e.due(now, &none).expect("due");
        e.claim(&r, "me", now, policy().lease);
        let d = e
            .record(&r, &failed(now, true), &policy())
            .expect("a delay");
        delays.push(d);
        assert_eq!(e.due(now, &none), None);
        now = e.deliveries["slack"].next_attempt_ms;
    }
    assert!(delays[5] >= delays[0] * 4, "{delays:?}");
    assert!(delays.iter().all(|d| *d <= Duration::from_secs(60)));
    // A sender that died holding the lease: due again after it runs out.
    e.claim("slack", "dead", now, policy().lease);
    assert_eq!(e.due(now + 29_000, &none), None);
    assert_eq!(e.due(now + 30_000, &none).as_deref(), Some("slack"));
}

#[test]
fn permanent_failures_wait_the_longest_delay_and_retry_after_is_honoured() {
    let mut e = entry(&["slack"]);
    e.claim("slack", "me", 1_000, policy().lease);
    assert_eq!(
        e.record("slack", &failed(1_000, false), &policy()),
        Some(Duration::from_secs(60))
    );
    e.claim("slack", "me", 61_000, policy().lease);
    let o = Attempt {
        retry_after: Some(Duration::from_secs(45)),
        ..failed(61_000, true)
    };
    assert!(e.record("slack", &o, &policy()).expect("delay") >= Duration::from_secs(45));
}

#[test]
fn fallback_is_added_once_after_failing_long_enough() {
    let p = policy();
    let mut e = entry(&["slack"]);
    e.claim("slack", "me", 1_000, p.lease);
    e.record("slack", &failed(1_000, true), &p);
    assert!(
        e.add_fallbacks(100_000, &p, &fallback, &no_failure)
            .is_empty(),
        "not yet"
    );
    assert_eq!(
        e.next_due(&p, &fallback, &none).map(|t| t <= 121_000),
        Some(true)
    );
    let added = e.add_fallbacks(121_000, &p, &fallback, &no_failure);
    assert_eq!(added, vec![("slack".to_string(), "email".to_string())]);
    assert!(
        e.add_fallbacks(500_000, &p, &fallback, &no_failure)
            .is_empty(),
        "only once"
    );
    assert_eq!(e.deliveries["email"].fallback_for.as_deref(), Some("slack"));
    assert_eq!(e.due(121_000, &none).as_deref(), Some("email"));
}

#[test]
fn no_fallback_when_the_event_already_goes_there() {
    let p = policy();
    let mut e = entry(&["email", "slack"]);
    e.claim("slack", "me", 1_000, p.lease);
    e.record("slack", &failed(1_000, true), &p);
    assert!(
        e.add_fallbacks(1_000_000, &p, &fallback, &no_failure)
            .is_empty()
    );
}

#[test]
fn delivered_entries_expire_after_keep_delivered() {
    let p = policy();
    let mut e = entry(&["slack", "email"]);
    for r in ["email", "slack"] {
        e.claim(r, "me", 1_000, p.lease);
        e.record(r, &ok(2_000), &p);
    }
    assert!(!e.expired(2_000 + 3_599_999, &p));
    assert!(e.expired(2_000 + 3_600_000, &p));
    assert_eq!(e.next_due(&p, &fallback, &none), Some(3_602_000));
}

#[test]
fn keys_are_escaped_into_what_consul_accepts() {
    assert_eq!(
        escape_key("health/web@node-3/17/1"),
        "health/web_40node-3/17/1"
    );
    assert_eq!(escape_key("/a//b c/"), "_2Fa/_2Fb_20c_2F");
    assert_eq!(escape_key("a_b"), "a_5Fb");
    assert_ne!(escape_key("a_40"), escape_key("a@"));
    let allowed = |c: char| c.is_ascii_alphanumeric() || ",-_./".contains(c);
    assert!(escape_key("rollout/r:1/x?y#z!é").chars().all(allowed));
}

#[test]
fn entries_round_trip_through_json() {
    let e = entry(&["slack"]);
    let back: Entry =
        serde_json::from_slice(&serde_json::to_vec(&e).expect("json")).expect("decode");
    assert_eq!(back, e);
}

#[test]
fn a_lease_that_ran_out_without_an_outcome_makes_the_copy_maybe_sent() {
    let mut e = entry(&["email"]);
    e.claim("email", "leader-1", 1_000, policy().lease);
    assert!(!e.deliveries["email"].maybe_sent);
    // leader-1 died after the server accepted: no outcome recorded.
    assert_eq!(e.due(31_000, &none).as_deref(), Some("email"));
    e.claim("email", "leader-2", 31_000, policy().lease);
    assert!(e.deliveries["email"].maybe_sent);
    let sent = Sent {
        reference: Some("<id@example.com>".into()),
        root: Some("<id@example.com>".into()),
    };
    e.record("email", &Attempt { sent, ..ok(31_100) }, &policy());
    let d = &e.deliveries["email"];
    assert_eq!(d.reference.as_deref(), Some("<id@example.com>"));
    // A failure then a success: no maybe-sent.
    let mut f = entry(&["email"]);
    f.claim("email", "me", 1_000, policy().lease);
    f.record("email", &failed(1_100, true), &policy());
    f.claim("email", "me", 5_000, policy().lease);
    assert!(!f.deliveries["email"].maybe_sent);
}

fn health(seq: u32) -> Entry {
    let mut e = entry(&["slack", "email"]);
    e.event.key = format!("health/web@n1/77/{seq}");
    e.event.body = crate::notify::EventBody::Health(crate::notify::HealthNotice {
        status: AlertStatus::Firing,
        service: "web".into(),
        node: "n1".into(),
        firing: vec![],
        resolved: vec![],
        inhibited: 0,
        repeat: false,
    });
    e
}

#[test]
fn a_later_notice_waits_for_an_earlier_one_per_receiver_and_joins_its_thread() {
    let mut first = health(1);
    let second = health(2);
    let other = {
        let mut o = health(1);
        o.event.key = "health/web@n2/77/1".into();
        o
    };
    let stories = Stories::new([("k/2", &second), ("k/1", &first), ("k/o", &other)]);
    assert!(stories.waiting("k/2", &second, "slack"));
    assert!(stories.waiting("k/2", &second, "email"));
    assert!(!stories.waiting("k/1", &first, "slack"));
    assert!(!stories.waiting("k/o", &other, "slack"), "another story");
    assert_eq!(stories.thread("k/1", &first, "slack").root, None);

    // The first is delivered to slack only.
    first.record(
        "slack",
        &Attempt {
            sent: Sent {
                reference: Some("C1/1.000001".into()),
                root: Some("C1/1.000001".into()),
            },
            ..ok(2_000)
        },
        &policy(),
    );
    let stories = Stories::new([("k/1", &first), ("k/2", &second)]);
    assert!(!stories.waiting("k/2", &second, "slack"));
    assert!(stories.waiting("k/2", &second, "email"));
    let t = stories.thread("k/2", &second, "slack");
    assert_eq!(t.root.as_deref(), Some("C1/1.000001"));
    assert_eq!(t.previous.as_deref(), Some("C1/1.000001"));
    assert_eq!(t.notice, "k/2");
    // A waiting copy is not due, and its entry asks for no wake-up.
    assert_eq!(
        second
            .due(10_000, &|r| stories.waiting("k/2", &second, r))
            .as_deref(),
        Some("slack")
    );
    // The second waits for slack behind the first, failing since 5 s: it
    // falls back with it.
    let mut waiting = second.clone();
    waiting.deliveries.remove("email");
    let before = |r: &str| (r == "slack").then_some(5_000);
    assert!(
        waiting
            .add_fallbacks(6_000, &policy(), &fallback, &before)
            .is_empty()
    );
    assert_eq!(
        waiting.add_fallbacks(125_000, &policy(), &fallback, &before),
        [("slack".to_string(), "email".to_string())]
    );
    let only_email_waits = |r: &str| r == "email";
    assert_eq!(second.next_due(&policy(), &fallback, &|_| true), None);
    assert!(
        second
            .next_due(&policy(), &fallback, &only_email_waits)
            .is_some()
    );
}
