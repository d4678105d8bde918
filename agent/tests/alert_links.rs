//! Links to the console (issue 15, item 6): with `[http] public_url` set,
//! Slack and email messages about a plan link to `{public_url}/plans/{plan}`
//! and those about a rollout to `{public_url}/services/{service}`; without
//! it, none carries a link. Delivered through the outbox's real sender to
//! the Slack stand-in and the SMTP server, as `rollgate watch` and the
//! coordinator deliver (`Links::new(&config.http.public_url)`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod alert_support;

use std::time::Duration;

use alert_support::{World, eventually, logs};
use base64::Engine as _;
use rollgate::notify::{Event, Links, RolloutNotice, RolloutStage, Sender, now_ms};
use sandbox::slack::Post;
use sandbox::smtp::Received;

const WAIT: Duration = Duration::from_secs(20);
const PUBLIC_URL: &str = "http://127.0.0.1:9180/console/";

fn notice(id: &str, stage: RolloutStage) -> Event {
    Event::rollout(
        RolloutNotice {
            rollout_id: id.into(),
            stage: Some(stage),
            service: "web".into(),
            group: "web-asg".into(),
            old_version: "1.0.0".into(),
            new_version: "1.1.0".into(),
            reason: if stage == RolloutStage::Failed {
                "instance i-0abc: check service:web critical (HTTP 500)".into()
            } else {
                String::new()
            },
            ..RolloutNotice::default()
        },
        vec![],
        now_ms(),
    )
}

/// Delivers a plan waiting for approval (`web-7`) and a failed rollout
/// (`web-6`) to Slack and email, with `public_url` as configured; answers
/// the Slack posts and the emails, each pair in that order.
async fn deliver(public_url: &str) -> (Vec<Post>, Vec<Received>) {
    logs();
    let mut w = World::start(0).await;
    w.config.http.public_url = public_url.into();
    let outbox = w.outbox();
    let cancel = tokio_util::sync::CancellationToken::new();
    let sender = Sender::new(
        outbox.clone(),
        w.receivers()
            .with_links(Links::new(&w.config.http.public_url)),
        &w.config.notify,
        w.config.consul.max_wait,
    );
    let task = tokio::spawn(sender.run(cancel.clone()));
    outbox
        .enqueue(notice("web-7", RolloutStage::PendingApproval))
        .await
        .unwrap();
    outbox
        .enqueue(notice("web-6", RolloutStage::Failed))
        .await
        .unwrap();
    assert!(
        eventually(WAIT, || w.slack.posts().len() >= 2
            && w.smtp.messages().len() >= 2)
        .await,
        "posts {:?}, mails {}",
        w.slack.posts(),
        w.smtp.messages().len()
    );
    cancel.cancel();
    task.await.unwrap();
    let mut posts = w.slack.posts();
    posts.sort_by_key(|p| !p.text.starts_with("PLAN PENDING APPROVAL"));
    let mut mails = w.smtp.messages();
    mails.sort_by_key(|m| !m.subject().contains("PLAN PENDING APPROVAL"));
    assert_eq!((posts.len(), mails.len()), (2, 2));
    w.shutdown().await;
    (posts, mails)
}

/// A message's parts as text (quoted-printable and base64 decoded).
fn body(mail: &Received) -> String {
    let mut out = String::new();
    for part in mail.data.split("\r\n--") {
        let Some((head, content)) = part.split_once("\r\n\r\n") else {
            continue;
        };
        let head = head.to_ascii_lowercase();
        if head.contains("content-transfer-encoding: base64") {
            let compact: String = content
                .lines()
                .take_while(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .concat();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(compact.trim())
                .unwrap();
            out.push_str(&String::from_utf8_lossy(&bytes));
        } else if head.contains("content-transfer-encoding: quoted-printable") {
            out.push_str(
                &content
                    .replace("=\r\n", "")
                    .replace("=3D", "=")
                    .replace("=20", " "),
            );
        } else {
            out.push_str(content);
        }
        out.push('\n');
    }
    out
}

#[tokio::test]
async fn with_public_url_slack_and_email_link_to_the_plan_and_the_service_pages() {
    let (posts, mails) = deliver(PUBLIC_URL).await;
    let plan_url = "http://127.0.0.1:9180/console/plans/web-7";
    let service_url = "http://127.0.0.1:9180/console/services/web";

    // Slack: a link in the blocks (mrkdwn `<url|label>`) and the URL in the
    // fallback text.
    let blocks = posts[0].blocks.to_string();
    assert!(
        blocks.contains(&format!("<{plan_url}|Review plan web-7 in the console>")),
        "{blocks}"
    );
    assert!(posts[0].text.contains(plan_url), "{}", posts[0].text);
    let blocks = posts[1].blocks.to_string();
    assert!(
        blocks.contains(&format!(
            "<{service_url}|Open web's rollout in the console>"
        )),
        "{blocks}"
    );
    assert!(!blocks.contains("/plans/"), "{blocks}");

    // Email: a line with the URL in the text part, an anchor in the HTML.
    let text = body(&mails[0]);
    assert!(
        text.contains(&format!("Review plan web-7 in the console: {plan_url}")),
        "{text}"
    );
    assert!(text.contains(&format!("<a href=\"{plan_url}\">")), "{text}");
    let text = body(&mails[1]);
    assert!(
        text.contains(&format!("Open web's rollout in the console: {service_url}")),
        "{text}"
    );
    assert!(
        text.contains(&format!("<a href=\"{service_url}\">")),
        "{text}"
    );
}

#[tokio::test]
async fn without_public_url_no_message_carries_a_link() {
    let (posts, mails) = deliver("").await;
    for p in &posts {
        let all = format!("{}{}", p.text, p.blocks);
        assert!(!all.contains("in the console"), "{all}");
        assert!(
            !all.contains("/plans/") && !all.contains("/services/"),
            "{all}"
        );
    }
    for m in &mails {
        let text = body(m);
        assert!(text.contains("ROLLOUT FAILED") || text.contains("PLAN PENDING APPROVAL"));
        assert!(!text.contains("in the console"), "{text}");
        assert!(!text.contains("<a href"), "{text}");
    }
}
