//! The upgrade machine with fake observations: each test drives `step` through a
//! sequence of decisions and reports, and checks the phase and the effects asked for.

use super::*;
use cup::{CupContent, RandomBeacon, RegistryCup, RegistryCupKind};
use std::collections::BTreeMap;
use types::{CryptoHash, RegistryVersion, SubnetId};

fn v(s: &str) -> ReplicaVersion {
    ReplicaVersion::new(s).unwrap()
}

fn release(s: &str) -> Release {
    Release {
        version: v(s),
        package_sha256: format!("{s:0>64}").replace('.', "0"),
        urls: vec![format!("https://releases.example/{s}.tar.zst")],
        recalled: false,
    }
}

fn cup(height: u64, kind: RegistryCupKind) -> Box<Cup> {
    Box::new(Cup::Registry(RegistryCup {
        kind,
        content: CupContent {
            subnet_id: SubnetId([7; 32]),
            height: Height::new(height),
            block_hash: CryptoHash([1; 32]),
            block_time_ns: 0,
            registry_version: RegistryVersion::new(1),
            replica_version: v("1.0.0"),
            random_beacon: RandomBeacon(vec![]),
            state_hash: CryptoHash([2; 32]),
            oldest_registry_version_in_use: RegistryVersion::new(1),
            next_replica_version: None,
            committee: None,
            extensions: Default::default(),
        },
    }))
}

fn run(height: u64, running: &str, prefetch: Option<&str>) -> Decision {
    Decision::Run {
        subnet: SubnetId([7; 32]),
        cup: cup(height, RegistryCupKind::Genesis),
        release: release(running),
        prefetch: prefetch.map(release),
    }
}

fn upgrade(height: u64, to: &str) -> Decision {
    Decision::Upgrade {
        subnet: SubnetId([7; 32]),
        cup: cup(height, RegistryCupKind::Genesis),
        release: release(to),
    }
}

/// What the fake effects have reported so far.
#[derive(Default)]
struct Seen {
    ready: Vec<String>,
    download_failed: BTreeMap<String, String>,
    preflight: BTreeMap<String, Verdict>,
    refused_until: BTreeMap<String, u64>,
    restarts: u64,
    last_exit: Option<String>,
    own_share_height: Option<u64>,
}

impl Seen {
    fn with_image(mut self, s: &str) -> Self {
        self.ready.push(release(s).package_sha256);
        self
    }
}

impl Observe for Seen {
    fn image_ready(&self, r: &Release) -> bool {
        self.ready.contains(&r.package_sha256)
    }
    fn download_failed(&self, r: &Release) -> Option<String> {
        self.download_failed.get(&r.package_sha256).cloned()
    }
    fn preflight(&self, r: &Release) -> Option<Verdict> {
        self.preflight.get(&r.package_sha256).cloned()
    }
    fn refused_until(&self, r: &Release) -> Option<u64> {
        self.refused_until.get(&r.package_sha256).copied()
    }
    fn replica(&self) -> ReplicaSeen {
        ReplicaSeen {
            restarts: self.restarts,
            last_exit: self.last_exit.clone(),
            own_share_height: self.own_share_height,
        }
    }
}

fn steps(fx: &[Effect]) -> Vec<&'static str> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Notify { step, .. } => Some(*step),
            _ => None,
        })
        .collect()
}

fn readiness(fx: &[Effect]) -> Option<(bool, String)> {
    fx.iter().find_map(|e| match e {
        Effect::Readiness { ready, reason, .. } => Some((*ready, reason.clone())),
        _ => None,
    })
}

#[test]
fn a_deployed_release_is_fetched_rehearsed_and_then_ready_without_halting_anything() {
    let mut m = Upgrade::new(false);
    let one = v("1.0.0");
    let mut seen = Seen::default().with_image("1.0.0");
    let fx = m.step(0, &one, &run(10, "1.0.0", Some("2.0.0")), &seen);
    assert_eq!(m.phase(), &Phase::Downloading);
    assert!(fx.contains(&Effect::Fetch(release("2.0.0"))));
    assert_eq!(readiness(&fx), Some((false, "downloading 2.0.0".into())));
    assert_eq!(steps(&fx), ["deployed_seen"]);
    // The running replica keeps running all along.
    assert!(matches!(fx.last(), Some(Effect::Run { .. })), "{fx:?}");

    assert_eq!(
        steps(&m.downloaded(&release("2.0.0"), &Ok(5))),
        ["downloaded"]
    );
    seen = seen.with_image("2.0.0");
    let fx = m.step(1, &one, &run(10, "1.0.0", Some("2.0.0")), &seen);
    assert_eq!(m.phase(), &Phase::Preflight);
    assert!(fx.contains(&Effect::Preflight(release("2.0.0"))));
    assert!(steps(&fx).is_empty(), "each step is posted once: {fx:?}");

    let verdict = Verdict {
        ok: true,
        reason: None,
        finished_ms: 2,
    };
    let posted = m.preflight_finished(&release("2.0.0"), &verdict, "rehearsed".into());
    assert_eq!(steps(&posted), ["preflight_passed"]);
    seen.preflight
        .insert(release("2.0.0").package_sha256, verdict);
    let fx = m.step(3, &one, &run(10, "1.0.0", Some("2.0.0")), &seen);
    assert_eq!(m.phase(), &Phase::Ready);
    assert_eq!(readiness(&fx), Some((true, "preflight passed".into())));
    assert!(!fx.iter().any(|e| matches!(e, Effect::Preflight(_))));
    assert_eq!(m.target(), Some(&release("2.0.0")));
}

#[test]
fn a_failed_preflight_says_why_and_is_retried_only_after_its_wait() {
    let mut m = Upgrade::new(false);
    let mut seen = Seen::default().with_image("1.0.0").with_image("2.0.0");
    seen.preflight.insert(
        release("2.0.0").package_sha256,
        Verdict {
            ok: false,
            reason: Some("schema 3 is unknown".into()),
            finished_ms: 1_000,
        },
    );
    let d = run(10, "1.0.0", Some("2.0.0"));
    let fx = m.step(1_000 + PREFLIGHT_RETRY_MS - 1, &v("1.0.0"), &d, &seen);
    assert_eq!(m.phase().name(), "failed");
    assert_eq!(
        readiness(&fx),
        Some((false, "preflight failed: schema 3 is unknown".into()))
    );
    assert!(!fx.iter().any(|e| matches!(e, Effect::Preflight(_))));
    let fx = m.step(1_000 + PREFLIGHT_RETRY_MS, &v("1.0.0"), &d, &seen);
    assert!(fx.contains(&Effect::Preflight(release("2.0.0"))), "{fx:?}");
}

#[test]
fn an_unserved_release_fails_its_download_and_the_node_says_so_in_its_word() {
    let mut m = Upgrade::new(false);
    let mut seen = Seen::default().with_image("1.0.0");
    seen.download_failed
        .insert(release("2.0.0").package_sha256, "404 Not Found".into());
    let fx = m.step(0, &v("1.0.0"), &run(10, "1.0.0", Some("2.0.0")), &seen);
    assert_eq!(
        m.phase(),
        &Phase::Failed {
            reason: "cannot download 2.0.0: 404 Not Found".into()
        }
    );
    assert_eq!(
        readiness(&fx),
        Some((false, "cannot download 2.0.0: 404 Not Found".into()))
    );
}

#[test]
fn nothing_deployed_withdraws_the_word() {
    let mut m = Upgrade::new(false);
    let seen = Seen::default().with_image("1.0.0");
    let fx = m.step(0, &v("1.0.0"), &run(10, "1.0.0", None), &seen);
    assert_eq!(m.phase(), &Phase::Idle);
    assert!(fx.contains(&Effect::ClearReadiness));
    assert_eq!(m.target(), None);
}

#[test]
fn the_cup_naming_a_ready_release_switches_and_a_refused_rehearsal_waits() {
    let mut m = Upgrade::new(false);
    let mut seen = Seen::default().with_image("1.0.0");
    let fx = m.step(0, &v("1.0.0"), &upgrade(20, "2.0.0"), &seen);
    // Not fetched yet: fetch, and never restart the old replica from the halting CUP.
    assert!(fx.contains(&Effect::NoRestarts));
    assert!(fx.contains(&Effect::Fetch(release("2.0.0"))));
    assert_eq!(steps(&fx), ["cup_signed"]);
    assert_eq!(m.phase(), &Phase::Downloading);

    seen = seen.with_image("2.0.0");
    let fx = m.step(1, &v("1.0.0"), &upgrade(20, "2.0.0"), &seen);
    assert_eq!(m.phase(), &Phase::Switching);
    assert_eq!(fx.last(), Some(&Effect::Switch(release("2.0.0"))));

    m.failed("refused 2.0.0: the state does not open".into());
    seen.refused_until
        .insert(release("2.0.0").package_sha256, 100);
    let fx = m.step(50, &v("1.0.0"), &upgrade(20, "2.0.0"), &seen);
    assert!(!fx.iter().any(|e| matches!(e, Effect::Switch(_))), "{fx:?}");
    assert_eq!(m.phase().name(), "failed");
    let fx = m.step(100, &v("1.0.0"), &upgrade(20, "2.0.0"), &seen);
    assert_eq!(fx.last(), Some(&Effect::Switch(release("2.0.0"))));
}

#[test]
fn a_recall_stops_the_replica_once_and_a_recovery_cup_runs_again() {
    let mut m = Upgrade::new(false);
    let seen = Seen::default().with_image("1.0.0").with_image("2.0.0");
    let hold = Decision::Hold {
        subnet: SubnetId([7; 32]),
        reason: "version 2.0.0 is recalled".into(),
    };
    let fx = m.step(0, &v("2.0.0"), &hold, &seen);
    assert!(fx.contains(&Effect::StopReplica));
    assert_eq!(steps(&fx), ["recalled"]);
    assert_eq!(m.phase().reason(), Some("version 2.0.0 is recalled"));
    let fx = m.step(1, &v("2.0.0"), &hold, &seen);
    assert!(!fx.contains(&Effect::StopReplica), "stopped once: {fx:?}");
    assert!(
        !fx.iter()
            .any(|e| matches!(e, Effect::Run { .. } | Effect::Switch(_)))
    );

    // Governance writes a recovery CUP naming 1.0.0 again: run it, and say so.
    let recovery = Decision::Run {
        subnet: SubnetId([7; 32]),
        cup: cup(30, RegistryCupKind::Recovery),
        release: release("1.0.0"),
        prefetch: None,
    };
    let fx = m.step(2, &v("1.0.0"), &recovery, &seen);
    assert_eq!(steps(&fx), ["recovered"]);
    assert!(matches!(fx.last(), Some(Effect::Run { cup_height, .. }) if cup_height.get() == 30));
    assert_eq!(m.phase(), &Phase::Idle);
}

#[test]
fn after_a_switch_health_is_healthy_on_a_newer_cup_unhealthy_on_exits_or_the_deadline() {
    let two = v("2.0.0");
    let mut seen = Seen::default().with_image("2.0.0");
    let mut m = Upgrade::new(true);
    let fx = m.step(0, &two, &run(20, "2.0.0", None), &seen);
    assert_eq!(steps(&fx), ["switched"]);
    assert_eq!(m.health().map(|h| &h.state), Some(&HealthState::Watching));
    // A newer CUP, but this node's shares are in no finalized block above the switch
    // yet (the replica still reports the old release's last one): still watching.
    seen.own_share_height = Some(20);
    let fx = m.step(1, &two, &run(30, "2.0.0", None), &seen);
    assert!(steps(&fx).is_empty(), "{fx:?}");
    assert_eq!(m.health().map(|h| &h.state), Some(&HealthState::Watching));
    seen.own_share_height = Some(27);
    let fx = m.step(2, &two, &run(30, "2.0.0", None), &seen);
    assert_eq!(steps(&fx), ["healthy"]);
    assert_eq!(m.health().map(|h| &h.state), Some(&HealthState::Healthy));

    // A crash loop: the replica exits before any newer CUP.
    let mut crashing = Seen::default().with_image("2.0.0");
    let mut m = Upgrade::new(true);
    m.step(0, &two, &run(20, "2.0.0", None), &crashing);
    crashing.restarts = 3;
    crashing.last_exit = Some("exit status: 1".into());
    let fx = m.step(1, &two, &run(20, "2.0.0", None), &crashing);
    assert_eq!(steps(&fx), ["unhealthy"]);
    let h = m.health().unwrap();
    assert_eq!((h.state.name(), h.replica_restarts), ("unhealthy", 3));
    assert_eq!(h.last_exit.as_deref(), Some("exit status: 1"));

    // A replica that runs but whose subnet makes no CUP: unhealthy at the deadline.
    let quiet = Seen::default().with_image("2.0.0");
    let mut m = Upgrade::new(true);
    m.step(0, &two, &run(20, "2.0.0", None), &quiet);
    m.step(
        HEALTH_DEADLINE_MS - 1,
        &two,
        &run(20, "2.0.0", None),
        &quiet,
    );
    assert_eq!(m.health().map(|h| &h.state), Some(&HealthState::Watching));
    let fx = m.step(HEALTH_DEADLINE_MS, &two, &run(20, "2.0.0", None), &quiet);
    assert_eq!(steps(&fx), ["unhealthy"]);
    assert!(
        m.health()
            .unwrap()
            .reason
            .as_deref()
            .unwrap()
            .contains("no CUP above height 20")
    );

    // The subnet goes on without this node: it follows, but its shares are in nothing.
    let mut m = Upgrade::new(true);
    m.step(0, &two, &run(20, "2.0.0", None), &quiet);
    let fx = m.step(HEALTH_DEADLINE_MS, &two, &run(30, "2.0.0", None), &quiet);
    assert_eq!(steps(&fx), ["unhealthy"]);
    let reason = m.health().unwrap().reason.clone().unwrap();
    assert!(reason.contains("takes no part"), "{reason}");
}

#[test]
fn a_running_image_that_failed_its_check_is_fetched_again_and_nothing_runs_from_it() {
    let mut m = Upgrade::new(false);
    let fx = m.step(0, &v("1.0.0"), &run(10, "1.0.0", None), &Seen::default());
    assert!(fx.contains(&Effect::NoRestarts));
    assert!(fx.contains(&Effect::Fetch(release("1.0.0"))));
    assert!(!fx.iter().any(|e| matches!(e, Effect::Run { .. })));
}
