//! The version a rollout creates copies the template's default version
//! (Terraform's, recorded in the spec), not the stable one; a revert still
//! pins the stable version; rollouts recorded before the base was recorded
//! copy the stable version as they did.

use super::world::{NEW, OLD, World, params, spec};
use crate::machine::{Action, Rollout, RolloutSpec, State};

/// A world where Terraform wrote version 2 (say a new instance type) and
/// made it the default, while the group still runs the stable version 1.
fn world_with_terraform_default() -> (World, RolloutSpec) {
    let mut w = World::new(4, 0);
    w.templates.insert(2, (OLD.into(), "terraform".into()));
    let mut s = spec(&w, params());
    s.base_template_version = Some(2);
    (w, s)
}

fn created(w: &World) -> Vec<(i64, String, String)> {
    w.actions()
        .filter_map(|a| match a {
            Action::CreateTemplateVersion {
                base_version,
                image,
                rollout_id,
                ..
            } => Some((*base_version, image.clone(), rollout_id.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn the_new_version_copies_the_recorded_default_version() {
    let (mut w, s) = world_with_terraform_default();
    w.healthy_after_boot();
    let r = w.run(Rollout::new(s));
    assert!(matches!(r.state, State::Succeeded { .. }), "{:?}", r.state);
    let asked = created(&w);
    assert!(!asked.is_empty());
    assert!(
        asked
            .iter()
            .all(|a| *a == (2, NEW.to_owned(), "web-7".to_owned())),
        "every ask (replays included) copies version 2 for web-7: {asked:?}"
    );
    assert_eq!(
        w.templates.len(),
        3,
        "one version created, however often asked"
    );
    assert_eq!(w.template(), 3);
    assert_eq!(r.spec.target_template_version, Some(3));
    assert!(w.actions().any(|a| matches!(
        a,
        Action::RecordStable {
            template_version: 3,
            ..
        }
    )));
}

#[test]
fn a_failed_rollout_from_the_default_still_reverts_to_the_stable_version() {
    let (mut w, s) = world_with_terraform_default();
    w.broken_new_image();
    let r = w.run(Rollout::new(s));
    assert!(
        matches!(r.state, State::Reverted { aborted: false, .. }),
        "{:?}",
        r.state
    );
    assert!(created(&w).iter().all(|(base, _, _)| *base == 2));
    assert_eq!(w.template(), 1, "the stable version, not the default");
    assert!(
        w.actions()
            .any(|a| matches!(a, Action::SetGroupTemplate { version: 1, .. }))
    );
    assert_eq!(w.images(), vec![OLD; 4]);
}

#[test]
fn a_spec_recorded_without_a_base_copies_the_stable_version() {
    let (mut w, s) = world_with_terraform_default();
    // A rollout written by an older release: no base_template_version.
    let mut json = serde_json::to_value(&s).unwrap();
    json.as_object_mut()
        .unwrap()
        .remove("base_template_version");
    let old: RolloutSpec = serde_json::from_value(json).unwrap();
    assert_eq!(old.base_template_version, None);
    assert_eq!(old.base_version(), 1);
    w.healthy_after_boot();
    let r = w.run(Rollout::new(old));
    assert!(matches!(r.state, State::Succeeded { .. }), "{:?}", r.state);
    assert!(created(&w).iter().all(|(base, _, _)| *base == 1));
}
