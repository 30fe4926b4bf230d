//! `archgate consume` against a real RabbitMQ (a private node of Debian's
//! rabbitmq-server) and a real docker-registry. Messages are published with
//! fedora-messaging's own API, and result messages are read back and
//! validated by fedora-messaging with the installed
//! fedora-image-uploader-messages schema (tests/support/amqp_peer.py).

mod support;

use serde_json::Value;
use support::consume::{
    announce, composes, config, drain, metric, settled, wait_for, Consumer, World, RESULTS, TOPIC,
};
use support::{amqp_peer, free_port, registry_tag, registry_tags, Auth, Proxy, Rabbit, Registry};

#[test]
fn the_service_publishes_refuses_skips_retries_and_sets_aside() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let c = composes(dir);
    let rabbit = Rabbit::start();
    let registry = Registry::start(Auth::None);
    let proxy = Proxy::start(format!("http://{}", registry.host()));
    let host = proxy.host();
    amqp_peer(&["bind", &rabbit.url(), "results", RESULTS]);
    let mut consumer = Consumer::start(dir, "one", &config(&rabbit, &host, "q1", &c, ""));
    assert_eq!(consumer.get("/live").0, 200);

    // A finished compose: published to two repositories of one name
    // (`fedora`), announced as fedora-image-uploader does: one message
    // listing both registries, with the headers fedora-messaging builds.
    announce(
        &rabbit,
        &c.join("f41-incomplete"),
        "Fedora-41-20241101.n.0",
        "FINISHED_INCOMPLETE",
    );
    settled(&rabbit, "q1", 60);
    let results = drain(&rabbit, "results");
    assert_eq!(results.len(), 1, "{results:#?}\n{}", consumer.log());
    let m = &results[0];
    assert!(
        m.get("invalid").is_none(),
        "fedora-messaging refuses it: {m:#}"
    );
    assert_eq!(m["class"], "ContainerPublishedV1", "{m:#}");
    assert_eq!(m["routing_key"], RESULTS);
    assert_eq!(m["delivery_mode"], 2, "persistent");
    assert!(
        m["message_id"].as_str().is_some_and(|id| id.len() == 36),
        "{m:#}"
    );
    assert!(m["headers"]["sent-at"].as_str().is_some());
    let b = &m["body"];
    assert_eq!(b["compose_id"], "Fedora-41-20241101.n.0");
    assert_eq!(b["release"], 41);
    assert_eq!(b["repository"], "fedora");
    assert_eq!(
        b["registries"],
        serde_json::json!([host.clone(), format!("{host}/mirror")])
    );
    assert_eq!(b["tags"], serde_json::json!(["41", "latest"]));
    assert_eq!(
        b["architectures"],
        serde_json::json!(["x86_64", "aarch64", "ppc64le", "s390x"])
    );
    // The headers fedora-messaging itself builds for this body.
    let mut headers = m["headers"].clone();
    headers.as_object_mut().unwrap().remove("sent-at");
    let expected: Value = serde_json::from_str(&amqp_peer(&["headers", &b.to_string()])).unwrap();
    assert_eq!(headers, expected);
    let published = registry_tag(&format!("{}/fedora:41", registry.host()))
        .unwrap()
        .1;
    assert_eq!(
        registry_tag(&format!("{}/mirror/fedora:latest", registry.host()))
            .unwrap()
            .1,
        published
    );

    // The seed case: the kiwibuild failed on ppc64le and s390x: refused,
    // acknowledged, no result message, the registry untouched.
    announce(
        &rabbit,
        &c.join("f41-kiwi-star"),
        "Fedora-41-20241102.n.0",
        "FINISHED_INCOMPLETE",
    );
    settled(&rabbit, "q1", 60);
    assert!(drain(&rabbit, "results").is_empty());
    assert_eq!(
        registry_tag(&format!("{}/fedora:41", registry.host()))
            .unwrap()
            .1,
        published
    );
    assert!(
        consumer.log().contains("outcome=\"refused\"")
            || consumer.log().contains("outcome=refused"),
        "{}",
        consumer.log()
    );

    // DOOMED: acknowledged and skipped.
    announce(
        &rabbit,
        &c.join("Fedora-Rawhide-20241105.n.0"),
        "Fedora-Rawhide-20241105.n.0",
        "DOOMED",
    );
    settled(&rabbit, "q1", 30);
    assert!(drain(&rabbit, "results").is_empty());

    // Not JSON: set aside at once, and the consumer goes on.
    amqp_peer(&["publish-raw", &rabbit.url(), TOPIC, "this is not json"]);
    settled(&rabbit, "q1", 30);
    let failed = drain(&rabbit, "q1.failed");
    assert_eq!(failed.len(), 1, "{failed:#?}");
    assert!(
        failed[0]["headers"]["x-archgate-error"]
            .as_str()
            .unwrap()
            .contains("not JSON"),
        "{failed:#?}"
    );
    announce(
        &rabbit,
        &c.join("f41-incomplete"),
        "Fedora-41-20241101.n.0",
        "FINISHED_INCOMPLETE",
    );
    settled(&rabbit, "q1", 60);
    assert!(
        drain(&rabbit, "results").is_empty(),
        "unchanged: no result message"
    );

    // Health and metrics.
    let (code, metrics) = consumer.get("/metrics");
    assert_eq!(code, 200);
    for line in [
        "archgate_messages_total{outcome=\"published\"} 1",
        "archgate_messages_total{outcome=\"refused\"} 1",
        "archgate_messages_total{outcome=\"unchanged\"} 1",
        "archgate_messages_total{outcome=\"skipped\"} 1",
        "archgate_messages_total{outcome=\"invalid\"} 1",
        "archgate_targets_total{decision=\"published\"} 4",
        "archgate_run_duration_seconds_count 3",
    ] {
        assert!(metrics.contains(line), "no `{line}` in:\n{metrics}");
    }

    // SIGTERM during a run: the run finishes, is acknowledged, exit 0. The
    // run's first manifest PUT is held by the proxy until the consumer has
    // said it is stopping: both states last until the test moves on.
    let gate = proxy.hold("PUT", "/manifests/");
    // (Fedora 30: its own tag `30` is published; `latest` is refused, it
    // would lose three arches.)
    announce(
        &rabbit,
        &c.join("f30-armhfp"),
        "Fedora-30-20190801.n.0",
        "FINISHED",
    );
    gate.wait_held(1, 60);
    consumer.signal("-TERM");
    wait_for("the consumer to say it is stopping", 30, || {
        consumer.log().contains("stopping: no new messages")
    });
    gate.release();
    assert_eq!(consumer.wait(60), Some(0), "{}", consumer.log());
    assert_eq!(
        rabbit.queue("q1"),
        Some((0, 0)),
        "the current message was acknowledged"
    );
    assert!(registry_tags(&format!("{}/fedora", registry.host())).contains(&"30".to_string()));
    let results = drain(&rabbit, "results");
    assert_eq!(
        results.len(),
        1,
        "the finished run's results were sent: {results:#?}"
    );
    assert_eq!(results[0]["body"]["tags"], serde_json::json!(["30"]));

    // No password of the broker URL in any log line.
    assert!(
        !consumer.log().contains("guest:guest"),
        "{}",
        consumer.log()
    );
}

#[test]
fn an_unreachable_registry_is_retried_then_set_aside() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let c = composes(dir);
    let rabbit = Rabbit::start();
    let closed = format!("127.0.0.1:{}", free_port());
    let consumer = Consumer::start(dir, "dead", &config(&rabbit, &closed, "q2", &c, ""));
    announce(
        &rabbit,
        &c.join("f41-incomplete"),
        "Fedora-41-20241101.n.0",
        "FINISHED_INCOMPLETE",
    );
    wait_for("the message to be set aside", 120, || {
        rabbit.queue("q2.failed") == Some((1, 0))
    });
    settled(&rabbit, "q2", 10);
    let failed = drain(&rabbit, "q2.failed");
    let error = failed[0]["headers"]["x-archgate-error"].as_str().unwrap();
    assert!(
        error.starts_with("failed 2 times; last error:") && error.contains(&closed),
        "{error}"
    );
    let log = consumer.log();
    assert!(
        log.contains("outcome=\"retried\"") || log.contains("outcome=retried"),
        "{log}"
    );
    let (_, metrics) = consumer.get("/metrics");
    assert!(
        metrics.contains("archgate_messages_total{outcome=\"failed\"} 1"),
        "{metrics}"
    );
}

/// A consumer killed in the middle of a publish loses nothing: the broker
/// delivers the message again, to the next consumer. Two consumers on one
/// queue: one is active and takes every message, the other stands by.
#[test]
fn killed_consumers_lose_nothing_and_one_consumer_is_active() {
    let world = World::new();
    let (rabbit, dir) = (&world.rabbit, world.dir());
    // SIGKILL in the middle of a publish (a manifest PUT held by the proxy):
    // the broker delivers the message again, to a new consumer, which brings
    // the registry to the right state.
    let gate = world.proxy.hold("PUT", "/manifests/");
    let mut first = world.start("first", &world.config("q3", ""));
    announce(
        rabbit,
        &world.compose("f41-incomplete"),
        "Fedora-41-20241101.n.0",
        "FINISHED_INCOMPLETE",
    );
    gate.wait_held(1, 60);
    first.signal("-KILL");
    first.wait(10);
    // With no consumer, the message stays ready until the next one starts.
    wait_for("the message to come back", 30, || {
        rabbit.queue("q3") == Some((1, 0))
    });
    gate.release();
    let second = world.start("second", &world.config("q3", ""));
    settled(rabbit, "q3", 60);
    let (index, _) = world.tag("fedora:41").unwrap();
    assert_eq!(support::index_platforms(&index).len(), 4);
    assert!(
        second.log().contains("Fedora-41-20241101.n.0"),
        "{}",
        second.log()
    );
    drop(second);

    // Two consumers on one queue: the first is active, the second stands
    // by; the active one takes all six messages.
    let a = world.start("a", &world.config("q4", ""));
    let b = world.start("b", &world.config("q4", ""));
    wait_for("b to stand by", 30, || b.log().contains("standing by"));
    for i in 0..6 {
        let name = format!("copy-{i}");
        support::copy_tree(&world.compose("f41-checksums"), &world.compose(&name));
        announce(
            rabbit,
            &world.compose(&name),
            "Fedora-41-20241103.n.0",
            "FINISHED",
        );
    }
    settled(rabbit, "q4", 120);
    assert_eq!(a.log().matches("outcome=").count(), 6, "{}", a.log());
    assert_eq!(b.log().matches("outcome=").count(), 0, "{}", b.log());
    assert_eq!(metric(&b.get("/metrics").1, "archgate_consumer_active"), 0);
    assert_eq!(b.get("/ready").0, 200, "a standby is ready to take over");
    let _ = dir;
}

/// Two composes of one tag in flight at once, in one consumer (two runs at
/// once): this process's lock on the target makes them one after another,
/// and the tag ends with the newer compose's index, never with an arch
/// lost. The first run's index PUT is held by the proxy while the second
/// run says it waits for the target: both states last until the test
/// releases them. Waiting for its own process is no failure: however long
/// it lasts (the old `lease-wait`, still accepted, bounds nothing), the
/// message is not sent back as busy.
#[test]
fn two_composes_of_one_tag_end_with_the_newer_one() {
    for case in ["a", "b"] {
        one_tag_two_composes(case);
    }
}

/// Case `a`: the older compose first; `b`: the newer first.
fn one_tag_two_composes(case: &str) {
    let world = World::new();
    let rabbit = &world.rabbit;
    amqp_peer(&["bind", &rabbit.url(), "results", RESULTS]);
    let older = (
        world.compose("f41-incomplete"),
        "Fedora-41-20241101.n.0",
        "FINISHED_INCOMPLETE",
    );
    // aarch64 fails its checksum in the newer compose: hybrid carries it.
    let newer = (
        world.compose("f41-checksums"),
        "Fedora-41-20241103.n.0",
        "FINISHED",
    );
    let (first, second) = match case {
        "a" => (&older, &newer),
        _ => (&newer, &older),
    };
    {
        let queue = format!("q-{case}");
        let cfg = world.config(
            &queue,
            "concurrency = 2\nlease-wait = \"1s\"\n\n[gate]\npolicy = \"hybrid\"\n",
        );
        let gate = world.proxy.hold("PUT", "/v2/fedora/manifests/41\0");
        let one = world.start(&format!("{case}1"), &cfg);
        announce(rabbit, &first.0, first.1, first.2);
        gate.wait_held(1, 60);
        announce(rabbit, &second.0, second.1, second.2);
        wait_for("the second run to wait for the target", 60, || {
            one.log()
                .contains("another run of this process is publishing it")
        });
        assert_eq!(gate.held(), 1, "nothing else reached the tag meanwhile");
        gate.release();
        settled(rabbit, &queue, 120);
        // Its own process's run is no other consumer: never `busy`.
        assert!(
            !one.log().contains("ERROR") && !one.log().contains("busy"),
            "{case}:\n{}",
            one.log()
        );
        let (index, _) = world.tag("fedora:41").unwrap();
        assert_eq!(
            index["annotations"]["dev.archgate.compose"],
            newer.1,
            "{case}: the newer compose's index\n{}",
            one.log(),
        );
        let results = drain(rabbit, "results");
        let (_, metrics) = one.get("/metrics");
        assert_eq!(
            metric(&metrics, "archgate_messages_total{outcome=\"retried\"}"),
            0,
            "{metrics}"
        );
        if case == "a" {
            // Older first, then the newer over it: aarch64 carried, none lost.
            let mut platforms = support::index_platforms(&index);
            platforms.sort();
            assert_eq!(
                platforms,
                ["linux/amd64", "linux/arm64", "linux/ppc64le", "linux/s390x"]
            );
            let ids: Vec<&Value> = results.iter().map(|m| &m["body"]["compose_id"]).collect();
            assert_eq!(ids.len(), 2, "{results:#?}");
            assert_eq!(ids.iter().filter(|i| **i == newer.1).count(), 1);
        } else {
            // Newer first: the older one is stale, acknowledged, no result
            // message, counted; the tag keeps the newer compose.
            assert!(
                metrics.contains("archgate_messages_total{outcome=\"stale\"} 1"),
                "{metrics}\n{}",
                one.log()
            );
            assert_eq!(results.len(), 1, "{results:#?}");
            assert!(results.iter().all(|m| m["body"]["compose_id"] == newer.1));
        }
    }
}

/// A message whose location is not under `allowed-locations` is set aside
/// at once, and nothing is read from it.
#[test]
fn a_location_outside_the_allowed_ones_is_set_aside() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let c = composes(dir);
    let rabbit = Rabbit::start();
    let registry = Registry::start(Auth::None);
    let host = registry.host();
    let allowed = c.join("f41-checksums");
    let consumer = Consumer::start(dir, "guard", &config(&rabbit, &host, "q7", &allowed, ""));
    // A sibling whose name starts like the allowed one, and a `..` escape.
    let sibling = c.join("f41-checksums-other");
    support::copy_tree(&c.join("f41-incomplete"), &sibling);
    announce(&rabbit, &sibling, "Fedora-41-20241101.n.0", "FINISHED");
    announce(
        &rabbit,
        &allowed.join("../f41-incomplete"),
        "Fedora-41-20241101.n.0",
        "FINISHED",
    );
    wait_for("both messages to be set aside", 60, || {
        rabbit.queue("q7.failed") == Some((2, 0))
    });
    settled(&rabbit, "q7", 10);
    let failed = drain(&rabbit, "q7.failed");
    for m in &failed {
        let why = m["headers"]["x-archgate-error"].as_str().unwrap();
        assert!(why.contains("refused"), "{why}");
    }
    assert!(registry_tags(&format!("{host}/fedora")).is_empty());
    let (_, metrics) = consumer.get("/metrics");
    assert!(
        metrics.contains("archgate_messages_total{outcome=\"invalid\"} 2"),
        "{metrics}"
    );
}
