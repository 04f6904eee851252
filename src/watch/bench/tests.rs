use std::time::Duration;

use super::*;

fn th() -> Thresholds {
    Thresholds {
        late_after: None,
        offline_after: Duration::from_secs(60),
        will_debounce: Duration::from_secs(5),
        stop_window: Duration::from_secs(600),
        resolve_after: Duration::from_secs(60),
    }
}

fn beat(seq: u64, sent: f64) -> Beat {
    Beat {
        transport: Transport::Mqtt,
        run_id: "run-1".into(),
        seq,
        sent: Some(sent),
        state: Some("ready".into()),
        interval: Some(10.0),
        boot_id: Some("boot".into()),
        agent_version: Some("0.1.0".into()),
        why: None,
        maintenance: None,
        context: None,
    }
}

/// A bench that beat every 10 s from 0 to `until` (exclusive).
fn beating(until: f64) -> Bench {
    let mut b = Bench::new("lab", "b1", 0.0);
    let mut t = 0.0;
    let mut seq = 0;
    while t < until {
        seq += 1;
        assert_eq!(b.receive(&beat(seq, t), t, &th()), Received::Live);
        t += 10.0;
    }
    b
}

#[test]
fn silence_goes_online_late_offline_by_the_thresholds() {
    let b = beating(100.0); // last beat at 90
    assert_eq!(
        b.verdict(120.0, &th(), 0.0),
        Liveness::Online,
        "30 s = 3 intervals"
    );
    assert_eq!(b.verdict(121.0, &th(), 0.0), Liveness::Late);
    assert_eq!(b.verdict(150.0, &th(), 0.0), Liveness::Late, "60 s grace");
    assert_eq!(b.verdict(151.0, &th(), 0.0), Liveness::Offline);
}

#[test]
fn the_grace_period_is_never_shorter_than_two_intervals() {
    let mut b = Bench::new("lab", "slow", 0.0);
    let mut slow = beat(1, 0.0);
    slow.interval = Some(300.0);
    b.receive(&slow, 0.0, &th());
    // Three intervals would be past the grace period: no late phase.
    assert_eq!(b.verdict(590.0, &th(), 0.0), Liveness::Online);
    assert_eq!(b.verdict(601.0, &th(), 0.0), Liveness::Offline);
}

#[test]
fn silence_is_judged_only_since_the_watch_could_hear() {
    let b = beating(100.0);
    // The watch restarted at 1000: the bench gets a full grace period.
    assert_eq!(b.verdict(1050.0, &th(), 1000.0), Liveness::Late);
    assert_eq!(b.verdict(1061.0, &th(), 1000.0), Liveness::Offline);
}

#[test]
fn a_bench_offline_before_a_restart_stays_offline_after_it() {
    let mut b = beating(100.0);
    b.evaluate(200.0, &th(), 0.0, false);
    assert_eq!(b.liveness, Liveness::Offline);
    // Restored by a watch that restarted at 1000: still offline.
    assert_eq!(b.evaluate(1001.0, &th(), 1000.0, false), None);
    assert_eq!(b.liveness, Liveness::Offline);
    b.receive(&beat(100, 1002.0), 1002.0, &th());
    b.evaluate(1002.0, &th(), 1000.0, false);
    assert_eq!(b.liveness, Liveness::Online);
}

#[test]
fn a_last_will_is_offline_after_the_debounce_unless_a_beat_follows() {
    let mut b = beating(100.0);
    b.status(Presence::Lost { at: 0.0 }, 95.0);
    assert_eq!(b.verdict(99.0, &th(), 0.0), Liveness::Online);
    assert_eq!(b.verdict(100.0, &th(), 0.0), Liveness::Offline);
    // The agent reconnected and beats again.
    b.receive(&beat(100, 101.0), 101.0, &th());
    assert_eq!(b.verdict(110.0, &th(), 0.0), Liveness::Online);
}

#[test]
fn a_clean_stop_is_stopped_until_the_stop_window_ends() {
    let mut b = beating(100.0);
    b.status(Presence::Stopped { at: 0.0 }, 95.0);
    assert_eq!(b.verdict(200.0, &th(), 0.0), Liveness::Stopped);
    assert_eq!(b.verdict(694.0, &th(), 0.0), Liveness::Stopped);
    assert_eq!(b.verdict(696.0, &th(), 0.0), Liveness::Offline);
    // A retained stop re-delivered later keeps its first time.
    b.status(Presence::Stopped { at: 0.0 }, 500.0);
    assert_eq!(b.verdict(696.0, &th(), 0.0), Liveness::Offline);
}

#[test]
fn an_old_replayed_beat_never_revives_an_offline_bench() {
    let mut b = beating(100.0);
    assert_eq!(b.verdict(1000.0, &th(), 0.0), Liveness::Offline);
    // The outbox of another path replays beats sent at 100..1000.
    let mut replay = beat(0, 0.0);
    replay.transport = Transport::Otlp;
    replay.run_id = "otlp-run".into();
    b.anchor = Anchor::restored(b.anchor.offset(), 90.0);
    for (i, sent) in (100..950).step_by(10).enumerate() {
        replay.seq = i as u64 + 1;
        replay.sent = Some(sent as f64);
        let got = b.receive(&replay, 1000.0 + i as f64 * 0.01, &th());
        assert_eq!(got, Received::Stale, "sent at {sent}");
    }
    assert_eq!(b.verdict(1010.0, &th(), 0.0), Liveness::Offline);
    assert_eq!(b.last_heard, Some(90.0));
}

#[test]
fn duplicates_are_recognised_per_transport() {
    let mut b = beating(30.0);
    assert_eq!(b.receive(&beat(3, 20.0), 31.0, &th()), Received::Duplicate);
    let mut otlp = beat(3, 20.0);
    otlp.transport = Transport::Otlp;
    assert_eq!(b.receive(&otlp, 31.0, &th()), Received::Live);
    // A new run starts its sequence again.
    let mut restarted = beat(1, 40.0);
    restarted.run_id = "run-2".into();
    assert_eq!(b.receive(&restarted, 40.0, &th()), Received::Live);
}

fn otlp_point(seq: u64, sent: f64) -> Beat {
    Beat {
        transport: Transport::Otlp,
        interval: None,
        ..beat(seq, sent)
    }
}

#[test]
fn otlp_intervals_are_the_time_between_points() {
    let mut b = Bench::new("lab", "b1", 0.0);
    for (seq, t) in [(1, 0.0), (3, 60.0)] {
        b.receive(&otlp_point(seq, t), t, &th());
    }
    assert_eq!(b.interval, 60.0);
}

#[test]
fn an_otlp_bench_is_judged_by_its_exports_not_its_beats() {
    // The agent beats every second and exports every 30 s: each point
    // carries thirty beats, and the next one comes 30 s later.
    let mut b = Bench::new("lab", "b1", 0.0);
    for (i, t) in [0.0, 30.0, 60.0, 90.0].into_iter().enumerate() {
        let got = b.receive(&otlp_point(30 * (i as u64 + 1), t), t, &th());
        assert_eq!(got, Received::Live);
    }
    assert_eq!(b.interval, 30.0);
    assert_eq!(b.late_after(&th()), 90.0);
    // Just before the next export: not late, let alone offline.
    assert_eq!(b.verdict(119.0, &th(), 0.0), Liveness::Online);
    let tight = Thresholds {
        offline_after: Duration::from_secs(30),
        ..th()
    };
    assert_eq!(b.offline_after(&tight), 60.0, "never under two exports");
    assert_eq!(b.verdict(121.0, &tight, 0.0), Liveness::Online);
}

#[test]
fn an_interval_stated_over_mqtt_is_not_replaced_by_the_otlp_cadence() {
    let mut b = beating(100.0);
    assert_eq!(b.interval, 10.0);
    for (seq, t) in [(10, 100.0), (16, 160.0)] {
        b.receive(&otlp_point(seq, t), t, &th());
    }
    assert_eq!(b.interval, 10.0);
}

#[test]
fn deafness_holds_new_offline_verdicts_but_keeps_old_ones() {
    let mut b = beating(100.0);
    assert_eq!(b.evaluate(200.0, &th(), 0.0, true), Some(Liveness::Online));
    assert_eq!(b.liveness, Liveness::Late, "held while deaf");
    assert_eq!(b.evaluate(201.0, &th(), 0.0, false), Some(Liveness::Late));
    assert_eq!(b.liveness, Liveness::Offline);
    assert_eq!(b.evaluate(202.0, &th(), 0.0, true), None, "stays offline");
}

#[test]
fn the_alert_waits_for_the_hold_fires_and_resolves_after_staying_up() {
    let mut b = beating(100.0);
    b.evaluate(151.0, &th(), 0.0, false);
    assert_eq!(b.step_alert(151.0, &th(), 10.0, false), AlertStep::None);
    assert!(matches!(b.alert, AlertState::Pending { since: 151.0 }));
    assert_eq!(b.step_alert(161.0, &th(), 10.0, true), AlertStep::Fired);
    assert!(matches!(
        b.alert,
        AlertState::Firing {
            starts_at: 151.0,
            site_outage: true,
            recovering_since: None
        }
    ));
    // Back, but flapping: down again before resolve_after.
    b.receive(&beat(100, 200.0), 200.0, &th());
    b.evaluate(200.0, &th(), 0.0, false);
    assert_eq!(b.step_alert(200.0, &th(), 10.0, false), AlertStep::None);
    b.evaluate(300.0, &th(), 0.0, false);
    assert_eq!(b.liveness, Liveness::Offline);
    assert_eq!(b.step_alert(300.0, &th(), 10.0, false), AlertStep::None);
    // Back for good.
    for (i, t) in (310..=380).step_by(10).enumerate() {
        b.receive(&beat(101 + i as u64, t as f64), t as f64, &th());
        b.evaluate(t as f64, &th(), 0.0, false);
        let step = b.step_alert(t as f64, &th(), 10.0, false);
        let want = if t >= 370 {
            AlertStep::Resolved
        } else {
            AlertStep::None
        };
        assert_eq!(step, want, "at {t}");
        if step == AlertStep::Resolved {
            break;
        }
    }
    assert_eq!(b.alert, AlertState::Quiet);
}

#[test]
fn a_short_outage_within_the_hold_never_fires() {
    let mut b = beating(100.0);
    b.evaluate(151.0, &th(), 0.0, false);
    b.step_alert(151.0, &th(), 10.0, false);
    b.receive(&beat(100, 155.0), 155.0, &th());
    b.evaluate(155.0, &th(), 0.0, false);
    assert_eq!(b.step_alert(155.0, &th(), 10.0, false), AlertStep::None);
    assert_eq!(b.alert, AlertState::Quiet);
}

#[test]
fn maintenance_resolves_a_firing_alert_at_once() {
    let mut b = beating(100.0);
    b.evaluate(151.0, &th(), 0.0, false);
    b.step_alert(151.0, &th(), 0.0, false);
    assert!(matches!(b.alert, AlertState::Firing { .. }));
    b.maintenance = true;
    b.evaluate(152.0, &th(), 0.0, false);
    assert_eq!(b.step_alert(152.0, &th(), 0.0, false), AlertStep::Resolved);
}

/// A beat that reports maintenance on the bench, ending at `until` (bench
/// clock = watch clock here).
fn in_maintenance(seq: u64, sent: f64, until: Option<f64>) -> Beat {
    Beat {
        state: Some("maintenance".into()),
        maintenance: Some(Reported {
            reason: Some("firmware flash".into()),
            since: Some(0.0),
            until,
        }),
        ..beat(seq, sent)
    }
}

#[test]
fn a_bench_in_maintenance_on_its_side_is_never_judged_however_it_went() {
    for presence in [
        Presence::Lost { at: 0.0 },
        Presence::Stopped { at: 0.0 },
        Presence::Unknown,
    ] {
        let mut b = beating(100.0);
        b.receive(&in_maintenance(100, 100.0, None), 100.0, &th());
        b.status(presence, 101.0);
        for t in [110.0, 700.0, 5000.0] {
            b.evaluate(t, &th(), 0.0, false);
            assert_eq!(b.liveness, Liveness::Maintenance, "{presence:?} at {t}");
            assert_eq!(b.step_alert(t, &th(), 0.0, false), AlertStep::None);
        }
        assert_eq!(b.maintenance_source(5000.0), Some(MaintenanceSource::Bench));
        assert_eq!(b.maintenance_reason_now(5000.0), Some("firmware flash"));
    }
}

#[test]
fn maintenance_that_ends_while_silent_gives_one_grace_period_from_its_end() {
    let mut b = beating(100.0);
    b.receive(&in_maintenance(100, 100.0, Some(400.0)), 100.0, &th());
    // Killed in maintenance: its Last Will is not a crash to page for.
    b.status(Presence::Lost { at: 0.0 }, 101.0);
    assert_eq!(b.verdict(399.0, &th(), 0.0), Liveness::Maintenance);
    assert_eq!(b.maintenance_end(401.0), Some(400.0));
    assert_eq!(b.verdict(401.0, &th(), 0.0), Liveness::Online);
    assert_eq!(b.verdict(431.0, &th(), 0.0), Liveness::Late);
    assert_eq!(b.verdict(460.0, &th(), 0.0), Liveness::Late, "60 s grace");
    assert_eq!(b.verdict(461.0, &th(), 0.0), Liveness::Offline);
    assert_eq!(b.offline_reason(), Cause::LastWill);
}

#[test]
fn the_end_of_bench_maintenance_follows_the_watch_clock_not_the_bench_clock() {
    let mut b = Bench::new("lab", "b1", 0.0);
    // The bench's clock is an hour ahead; 300 s of maintenance remain.
    b.receive(&in_maintenance(1, 3700.0, Some(4000.0)), 100.0, &th());
    assert!(b.in_maintenance(399.0));
    assert!(!b.in_maintenance(400.5));
}

#[test]
fn api_maintenance_switched_off_while_silent_gives_one_grace_period() {
    let mut b = beating(100.0);
    b.set_api_maintenance(true, Some("rewiring".into()), 100.0);
    b.evaluate(1000.0, &th(), 0.0, false);
    assert_eq!(b.liveness, Liveness::Maintenance);
    assert_eq!(b.maintenance_source(1000.0), Some(MaintenanceSource::Api));
    b.set_api_maintenance(false, None, 1000.0);
    assert_eq!(b.verdict(1060.0, &th(), 0.0), Liveness::Late);
    assert_eq!(b.verdict(1061.0, &th(), 0.0), Liveness::Offline);
}

#[test]
fn either_side_is_enough_and_a_beat_without_maintenance_ends_the_benchs() {
    let mut b = beating(100.0);
    b.set_api_maintenance(true, None, 100.0);
    b.receive(&in_maintenance(100, 100.0, None), 100.0, &th());
    assert_eq!(b.maintenance_source(100.0), Some(MaintenanceSource::Both));
    b.receive(&beat(101, 110.0), 110.0, &th());
    assert_eq!(b.maintenance_source(110.0), Some(MaintenanceSource::Api));
    b.set_api_maintenance(false, None, 120.0);
    assert_eq!(b.maintenance_source(120.0), None);
    assert_eq!(b.verdict(120.0, &th(), 0.0), Liveness::Online);
}

#[test]
fn over_otlp_the_maintenance_state_alone_is_maintenance() {
    let mut b = Bench::new("lab", "b1", 0.0);
    let mut p = otlp_point(1, 0.0);
    p.state = Some("maintenance".into());
    b.receive(&p, 0.0, &th());
    assert_eq!(b.maintenance_source(0.0), Some(MaintenanceSource::Bench));
    // A point without the state gauge says nothing about it.
    let mut q = otlp_point(2, 10.0);
    q.state = None;
    b.receive(&q, 10.0, &th());
    assert!(b.in_maintenance(10.0));
}

#[test]
fn the_offline_reason_names_a_dut_reset_that_never_became_ready_first() {
    let mut b = beating(100.0);
    assert_eq!(b.offline_reason(), Cause::HeartbeatsStopped);
    b.status(Presence::Stopped { at: 0.0 }, 101.0);
    assert_eq!(b.offline_reason(), Cause::StoppedNotBack);
    let degraded = Beat {
        state: Some("degraded".into()),
        why: Some("reset_not_ready: dut not ready 30 s after a reset".into()),
        ..beat(100, 105.0)
    };
    b.receive(&degraded, 105.0, &th());
    b.status(Presence::Lost { at: 0.0 }, 106.0);
    assert_eq!(b.offline_reason(), Cause::DutResetNotReady);
}
