//! `archgate consume` when things go wrong, on a private RabbitMQ node and
//! real registries: every publish announced at least once, every delivery
//! ended (acknowledged, set aside or handed back) on every path, retries
//! by kind, delayed and capped (also when a run kills the consumer), no
//! request of a run whose session broke, each publish its own fate,
//! locations that cannot lead outside `allowed-locations`, one target per
//! image. Each test waits for states that last until it moves on: a retry
//! whose delay is longer than the test, a request the proxy holds, the
//! consumer's own log lines and metrics.

mod support;

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;
use support::consume::{
    announce, composes, config, drain, metric, settled, wait_for, wait_or, Consumer, World,
    RESULTS, TOPIC,
};
use support::{
    amqp_peer, archgate, free_port, registry_tag, registry_tags, respond, Auth, Fault, FaultKind,
    Proxy, Rabbit, Registry, Server,
};

/// The registries (`registries` of each body) announced for `compose`.
fn announced(results: &[Value], compose: &str) -> BTreeSet<String> {
    results
        .iter()
        .filter(|m| m["body"]["compose_id"] == compose)
        .flat_map(|m| {
            assert!(
                m.get("invalid").is_none(),
                "fedora-messaging refuses it: {m:#}"
            );
            m["body"]["registries"].as_array().unwrap().clone()
        })
        .map(|r| r.as_str().unwrap().to_string())
        .collect()
}

/// One image on two registries (two proxies in front of one registry).
/// A failed try waits `retry-delay` for the next: `delay` says how long.
fn two_registries(
    rabbit: &Rabbit,
    a: &str,
    b: &str,
    queue: &str,
    composes: &Path,
    delay: &str,
) -> String {
    format!(
        r#"[source]
kind = "pungi"

[gate]
policy = "hybrid"

[registry."{a}"]
tls-verify = false

[registry."{b}"]
tls-verify = false
timeout = "2s"

[[image]]
name = "fedora"
match = {{ subvariant = "Container_Base" }}
repositories = ["docker://{a}/fedora", "docker://{b}/fedora"]
tags = ["{{release}}"]

[consume]
amqp-url = "{}"
queue = "{queue}"
routing-keys = ["{TOPIC}"]
publish-topic-prefix = "org.fedoraproject.test"
max-attempts = 2
retry-delay = "{delay}"
takeover-grace = "1s"
health = "HEALTH"
allowed-locations = ["{}"]
"#,
        rabbit.url(),
        composes.display()
    )
}

/// Registry `b` answers 503 to everything until the faults are cleared.
fn down(proxy: &Proxy) {
    for method in ["GET", "HEAD", "POST", "PUT", "PATCH"] {
        proxy.fault(Fault {
            method,
            path_contains: "/v2/".into(),
            skip: 0,
            times: usize::MAX,
            kind: FaultKind::Status(503, None),
        });
    }
}

#[test]
fn every_publish_is_announced_at_least_once() {
    let world = World::new();
    let (rabbit, dir, c) = (&world.rabbit, world.dir(), &world.composes);
    let pb = Proxy::start(format!("http://{}", world.registry.host()));
    let (a, b) = (world.host(), pb.host());
    amqp_peer(&["bind", &rabbit.url(), "results", RESULTS]);
    let slow = two_registries(rabbit, &a, &b, "q", c, "600s");
    let fast = two_registries(rabbit, &a, &b, "q", c, "1s");
    // A failed try waits ten minutes for the next: a state that lasts.
    // The test ends the wait by stopping the consumer (the message goes
    // back, its tries counted on disk) and starting one whose
    // `retry-delay` is a second.
    let mut consumer = Consumer::start(dir, "one", &slow);
    down(&pb);

    // Registry b is down for both tries: a's target is written in the
    // first, announced there, announced again by the second (which finds
    // it unchanged, naming this compose), and the message is set aside.
    let x = "Fedora-41-20241101.n.0";
    announce(rabbit, &c.join("f41-incomplete"), x, "FINISHED_INCOMPLETE");
    let retried = |c: &Consumer| {
        metric(
            &c.get("/metrics").1,
            "archgate_messages_total{outcome=\"retried\"}",
        )
    };
    wait_for("the first try to fail", 60, || retried(&consumer) == 1);
    let first = drain(rabbit, "results");
    assert_eq!(
        announced(&first, x),
        BTreeSet::from([a.clone()]),
        "{first:#?}\n{}",
        consumer.log()
    );
    assert!(registry_tag(&format!("{a}/fedora:41")).is_some());

    // While the retry waits, the consumer takes other messages.
    announce(
        rabbit,
        &c.join("f41-incomplete"),
        "Fedora-41-20241101.n.9",
        "DOOMED",
    );
    wait_for("the DOOMED message to be skipped", 60, || {
        metric(
            &consumer.get("/metrics").1,
            "archgate_messages_total{outcome=\"skipped\"}",
        ) == 1
    });
    assert_eq!(rabbit.queue("q"), Some((0, 1)), "the retry still waits");

    // A stop hands the waiting message back at once; the next consumer
    // tries it when its delay has passed.
    consumer.signal("-TERM");
    assert_eq!(consumer.wait(30), Some(0), "{}", consumer.log());
    let consumer = Consumer::start(dir, "two", &fast);
    wait_for("the message to be set aside", 60, || {
        rabbit.queue("q.failed") == Some((1, 0))
    });
    settled(rabbit, "q", 30);
    let failed = drain(rabbit, "q.failed");
    let why = failed[0]["headers"]["x-archgate-error"].as_str().unwrap();
    assert!(why.starts_with("failed 2 times"), "{why}");
    let second = drain(rabbit, "results");
    assert_eq!(
        announced(&second, x),
        BTreeSet::from([a.clone()]),
        "{second:#?}"
    );
    drop(consumer);

    // A newer compose; b is down for its first try only: a is written and
    // announced in the first, b in the second, which announces a again.
    let mut consumer = Consumer::start(dir, "three", &slow);
    let y = "Fedora-41-20241103.n.0";
    announce(rabbit, &c.join("f41-checksums"), y, "FINISHED");
    wait_for("the first try to fail", 60, || retried(&consumer) == 1);
    assert_eq!(
        announced(&drain(rabbit, "results"), y),
        BTreeSet::from([a.clone()])
    );
    pb.clear_faults();
    consumer.signal("-TERM");
    assert_eq!(consumer.wait(30), Some(0), "{}", consumer.log());
    let consumer = Consumer::start(dir, "four", &fast);
    wait_for("b to hold the newer compose", 60, || {
        registry_tag(&format!("{b}/fedora:41"))
            .is_some_and(|(i, _)| i["annotations"]["dev.archgate.compose"] == y)
    });
    settled(rabbit, "q", 60);
    let last = drain(rabbit, "results");
    assert_eq!(
        announced(&last, y),
        BTreeSet::from([a.clone(), b.clone()]),
        "{last:#?}\n{}",
        consumer.log()
    );
    let (_, metrics) = consumer.get("/metrics");
    assert_eq!(
        metric(&metrics, "archgate_results_sent_total"),
        1,
        "{metrics}"
    );
}

/// A consumer killed between its write and the announcement: the broker
/// delivers the message again, and the next consumer announces the target
/// that the first wrote (its index names this compose).
#[test]
fn a_write_is_announced_after_the_consumer_died() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let c = composes(dir);
    let rabbit = Rabbit::start();
    let registry = Registry::start(Auth::None);
    let proxy = Proxy::start(format!("http://{}", registry.host()));
    let host = proxy.host();
    amqp_peer(&["bind", &rabbit.url(), "results", RESULTS]);
    // The first GET of fedora:41 is the current index; the second is the
    // read-back, after the index was written: held.
    let gate = std::sync::Arc::new(support::HoldGate::new());
    proxy.fault(Fault {
        method: "GET",
        path_contains: "/v2/fedora/manifests/41\0".into(),
        skip: 1,
        times: usize::MAX,
        kind: FaultKind::Hold(gate.clone()),
    });
    let cfg = config(&rabbit, &host, "qk", &c, "");
    let mut first = Consumer::start(dir, "first", &cfg);
    let id = "Fedora-41-20241101.n.0";
    announce(
        &rabbit,
        &c.join("f41-incomplete"),
        id,
        "FINISHED_INCOMPLETE",
    );
    gate.wait_held(1, 60);
    let written = registry_tag(&format!("{}/fedora:41", registry.host())).unwrap();
    assert_eq!(written.0["annotations"]["dev.archgate.compose"], id);
    first.signal("-KILL");
    first.wait(10);
    gate.release();
    assert!(
        drain(&rabbit, "results").is_empty(),
        "nothing announced yet"
    );

    let second = Consumer::start(dir, "second", &cfg);
    settled(&rabbit, "qk", 60);
    // One message for the repository name `fedora`, on both registries,
    // with the tag `41` that the first consumer wrote.
    let results = drain(&rabbit, "results");
    assert_eq!(results.len(), 1, "{results:#?}\n{}", second.log());
    assert_eq!(
        results[0]["body"]["tags"],
        serde_json::json!(["41", "latest"])
    );
    assert_eq!(
        announced(&results, id),
        BTreeSet::from([host.clone(), format!("{host}/mirror")])
    );
}

/// Requests a compose server saw; `compose/allowed/redir/...` answers with
/// a redirect to `compose/secret/...`.
fn compose_server(root: &Path) -> (Server, support::Log) {
    let log = support::Log::default();
    let (root, seen) = (root.to_path_buf(), log.clone());
    let server = Server::start(move |req: hyper::Request<hyper::body::Incoming>| {
        let (root, seen) = (root.clone(), seen.clone());
        async move {
            let raw = req.uri().path().to_string();
            let path = support::percent_decode(&raw);
            seen.lock().unwrap().push(path.clone());
            if let Some(rest) = path.strip_prefix("/compose/allowed/redir/") {
                let to = format!("/compose/secret/{rest}");
                return Ok(respond(302, &[("location", to.as_str())], ""));
            }
            let rel = path.trim_start_matches('/');
            if rel.split(['/', '\\']).any(|c| c == "..") {
                return Ok(respond(400, &[], ""));
            }
            Ok(match std::fs::read(root.join(rel)) {
                Ok(bytes) => respond(200, &[], bytes),
                Err(_) => respond(404, &[], "not found"),
            })
        }
    });
    (server, log)
}

#[test]
fn locations_never_lead_outside_the_allowed_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let c = composes(dir);
    let web = dir.join("web");
    for place in ["allowed", "secret", "https-only"] {
        support::copy_tree(
            &c.join("f41-incomplete"),
            &web.join("compose").join(place).join("f41"),
        );
    }
    // A local allowed directory with a link out of it.
    let local = dir.join("local");
    std::fs::create_dir_all(local.join("allowed")).unwrap();
    support::copy_tree(&c.join("f41-incomplete"), &local.join("secret/f41"));
    std::os::unix::fs::symlink(local.join("secret"), local.join("allowed/link")).unwrap();

    let (server, seen) = compose_server(&web);
    let h = server.addr.to_string();
    let rabbit = Rabbit::start();
    let registry = Registry::start(Auth::None);
    let host = registry.host();
    let cfg = format!(
        "[source]\nkind = \"pungi\"\n\n[registry.\"{host}\"]\ntls-verify = false\n\n[[image]]\nname = \"fedora\"\nmatch = {{ subvariant = \"Container_Base\" }}\nrepositories = [\"docker://{host}/fedora\"]\ntags = [\"{{release}}\"]\n\n[consume]\namqp-url = \"{}\"\nqueue = \"ql\"\nrouting-keys = [\"{TOPIC}\"]\nmax-attempts = 1\nhealth = \"HEALTH\"\nallowed-locations = [\"http://{h}/compose/allowed/\", \"https://{h}/compose/https-only/\", \"{}\"]\n",
        rabbit.url(),
        local.join("allowed").display()
    );
    let consumer = Consumer::start(dir, "guard", &cfg);
    let bad = [
        format!("http://{h}/compose/allowed/%2e%2e/secret/f41/compose"),
        format!("http://{h}/compose/allowed/.%2E/secret/f41/compose"),
        format!("http://{h}/compose/allowed/x/%2E%2e/%2e%2e/secret/f41/compose"),
        format!("http://{h}/compose/allowed\\..\\secret/f41/compose"),
        format!("http://{h}/compose/allowed/..%2fsecret/f41/compose"),
        format!("http://{h}/compose/https-only/f41/compose"),
        format!("http://{h}/compose/allowed/redir/f41/compose"),
        format!("{}/f41/compose", local.join("allowed/link").display()),
    ];
    for location in &bad {
        let body = serde_json::json!({
            "status": "FINISHED", "compose_id": "Fedora-41-20241101.n.0", "location": location,
        });
        amqp_peer(&["publish", &rabbit.url(), TOPIC, &body.to_string()]);
    }
    wait_for("every message to be set aside", 120, || {
        rabbit.queue("ql.failed") == Some((bad.len() as u64, 0))
    });
    settled(&rabbit, "ql", 30);
    for m in drain(&rabbit, "ql.failed") {
        let why = m["headers"]["x-archgate-error"].as_str().unwrap();
        assert!(
            why.contains("refused") || why.contains("outside allowed-locations"),
            "{why}"
        );
    }
    assert!(registry_tags(&format!("{host}/fedora")).is_empty());
    let outside: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|p| !p.starts_with("/compose/allowed/"))
        .cloned()
        .collect();
    assert!(
        outside.is_empty(),
        "requests outside the allowed prefix: {outside:?}"
    );

    // The control: the allowed place itself is read and published.
    let body = serde_json::json!({
        "status": "FINISHED", "compose_id": "Fedora-41-20241101.n.0",
        "location": format!("http://{h}/compose/allowed/f41/compose"),
    });
    amqp_peer(&["publish", &rabbit.url(), TOPIC, &body.to_string()]);
    wait_for("the allowed compose to be published", 120, || {
        registry_tags(&format!("{host}/fedora")).contains(&"41".to_string())
    });
    settled(&rabbit, "ql", 30);
    assert!(
        consumer.log().contains("outcome=\"published\"")
            || consumer.log().contains("outcome=published")
    );
}

/// One target named by two images: exit 2 naming it, for plan, publish and
/// consume, before anything is read.
#[test]
fn one_target_in_two_images_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let c = composes(dir);
    let dead = format!("127.0.0.1:{}", free_port());
    let image = |name: &str, tag: &str| {
        format!("\n[[image]]\nname = \"{name}\"\nmatch = {{ subvariant = \"Container_Base\" }}\nrepositories = [\"docker://{dead}/fedora\"]\ntags = [\"{tag}\"]\n")
    };
    let head = format!(
        "[source]\nkind = \"pungi\"\nlocation = \"{}\"\n\n[registry.\"{dead}\"]\ntls-verify = false\n\n[consume]\namqp-url = \"amqp://127.0.0.1:{}/%2f\"\nallowed-locations = [\"/\"]\n",
        c.join("f41-incomplete").display(),
        free_port()
    );
    let same = format!(
        "{head}{}{}",
        image("fedora", "{release}"),
        image("fedora-copy", "{release}")
    );
    std::fs::write(dir.join("same.toml"), same).unwrap();
    for args in [
        &["plan", "-c", "same.toml"][..],
        &["publish", "-c", "same.toml"][..],
        &["consume", "-c", "same.toml"][..],
    ] {
        let (code, _, err) = archgate(dir, args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(
            err.contains(&format!("{dead}/fedora:{{release}}"))
                && err.contains("`fedora`")
                && err.contains("`fedora-copy`"),
            "{args:?}: {err}"
        );
    }
    // Two rules that name one tag once rendered: refused once the compose
    // names them, before any registry is asked (the registry is dead).
    let rendered = format!(
        "{head}{}{}",
        image("fedora", "{release}"),
        image("fedora-copy", "41")
    );
    std::fs::write(dir.join("rendered.toml"), rendered).unwrap();
    let (code, _, err) = archgate(dir, &["plan", "-c", "rendered.toml"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!(
            "{dead}/fedora:41 is also a target of image `fedora`"
        )),
        "{err}"
    );
}

/// A registry that refuses the credentials: set aside after one attempt,
/// with the reason; no retry.
#[test]
fn refused_credentials_are_set_aside_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let c = composes(dir);
    let rabbit = Rabbit::start();
    let registry = Registry::start(Auth::Basic("archgate", "right"));
    let host = registry.host();
    let cfg = config(&rabbit, &host, "qa", &c, "").replace(
        "tls-verify = false\n",
        "tls-verify = false\nusername-env = \"REG_USER\"\npassword-env = \"REG_PASS\"\n",
    );
    let cfg = cfg.replace("max-attempts = 2", "max-attempts = 5");
    let consumer = Consumer::start_env(
        dir,
        "auth",
        &cfg,
        &[("REG_USER", "archgate"), ("REG_PASS", "wrong")],
    );
    announce(
        &rabbit,
        &c.join("f41-incomplete"),
        "Fedora-41-20241101.n.0",
        "FINISHED_INCOMPLETE",
    );
    wait_for("the message to be set aside", 60, || {
        rabbit.queue("qa.failed") == Some((1, 0))
    });
    let failed = drain(&rabbit, "qa.failed");
    let why = failed[0]["headers"]["x-archgate-error"].as_str().unwrap();
    assert!(
        why.starts_with("auth error, which only this deployment's operator can mend"),
        "{why}"
    );
    assert_eq!(
        failed[0]["headers"]["x-archgate-attempts"], 1,
        "{failed:#?}"
    );
    let (_, metrics) = consumer.get("/metrics");
    assert_eq!(
        metric(&metrics, "archgate_messages_total{outcome=\"retried\"}"),
        0,
        "{metrics}"
    );
    assert!(!consumer.log().contains("wrong"), "no password in the log");
}

/// Every delivery ends, also when ending it is in trouble: a run that
/// panics, `QUEUE.failed` deleted under the consumer, the broker's app
/// stopped and started (`/ready` 503 meanwhile), the connection closed in
/// the middle of a run.
#[test]
fn every_delivery_ends_when_its_steps_fail() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let c = composes(dir);
    let rabbit = Rabbit::start();
    let registry = Registry::start(Auth::None);
    let proxy = Proxy::start(format!("http://{}", registry.host()));
    let host = proxy.host();
    let cfg = config(&rabbit, &host, "qf", &c, "");
    let panics = "Fedora-Rawhide-20241105.n.0";
    let mut consumer =
        Consumer::start_env(dir, "faults", &cfg, &[("ARCHGATE_TEST_PANIC_RUN", panics)]);

    // A run that panics: an attempt that failed; tried again, then set
    // aside; the consumer goes on.
    announce(&rabbit, &c.join(panics), panics, "FINISHED");
    wait_for("the panicking message to be set aside", 60, || {
        rabbit.queue("qf.failed") == Some((1, 0))
    });
    let failed = drain(&rabbit, "qf.failed");
    let why = failed[0]["headers"]["x-archgate-error"].as_str().unwrap();
    assert!(
        why.starts_with("failed 2 times") && why.contains("panic"),
        "{why}"
    );

    // QUEUE.failed deleted while the consumer runs: an invalid message is
    // still on the broker afterwards (the queue declared again).
    rabbit.ctl(&["delete_queue", "qf.failed"]).unwrap();
    assert_eq!(rabbit.queue("qf.failed"), None);
    amqp_peer(&["publish-raw", &rabbit.url(), TOPIC, "this is not json"]);
    wait_for("the invalid message to be set aside", 60, || {
        rabbit.queue("qf.failed") == Some((1, 0))
    });
    settled(&rabbit, "qf", 30);

    // The broker's app stopped: not ready, not connected, until it is back.
    rabbit.ctl(&["stop_app"]).unwrap();
    wait_for("/ready to say 503", 60, || consumer.get("/ready").0 == 503);
    assert_eq!(
        metric(&consumer.get("/metrics").1, "archgate_consumer_connected"),
        0
    );
    assert_eq!(consumer.get("/live").0, 200, "still making progress");
    rabbit.ctl(&["start_app"]).unwrap();
    wait_for("/ready to say 200 again", 60, || {
        consumer.get("/ready").0 == 200
    });

    // The connection closed under a run (its index PUT held): the delivery
    // cannot be acknowledged on it; the consumer connects again, the broker
    // delivers the message again, and it is published.
    let gate = proxy.hold("PUT", "/v2/fedora/manifests/41\0");
    announce(
        &rabbit,
        &c.join("f41-incomplete"),
        "Fedora-41-20241101.n.0",
        "FINISHED_INCOMPLETE",
    );
    gate.wait_held(1, 60);
    let pids = rabbit
        .ctl(&["list_connections", "-q", "--no-table-headers", "pid"])
        .unwrap();
    for pid in pids.lines().filter(|l| !l.trim().is_empty()) {
        rabbit.ctl(&["close_connection", pid.trim(), "closed by the test"]);
    }
    wait_for("the consumer to connect again", 60, || {
        consumer.log().matches("consuming").count() >= 3
    });
    gate.release();
    settled(&rabbit, "qf", 120);
    assert_eq!(
        support::index_platforms(
            &registry_tag(&format!("{}/fedora:41", registry.host()))
                .unwrap()
                .0
        )
        .len(),
        4
    );
    assert_eq!(
        rabbit.queue("qf.failed"),
        Some((1, 0)),
        "nothing more set aside"
    );

    // A second SIGTERM exits at once, the current message left to the
    // broker (the run's first manifest PUT is held: it lasts).
    proxy.clear_faults();
    let gate = proxy.hold("PUT", "/manifests/");
    announce(
        &rabbit,
        &c.join("f41-checksums"),
        "Fedora-41-20241103.n.0",
        "FINISHED",
    );
    gate.wait_held(1, 60);
    consumer.signal("-TERM");
    wait_for("the consumer to say it is stopping", 30, || {
        consumer.log().contains("stopping: no new messages")
    });
    consumer.signal("-TERM");
    assert_eq!(consumer.wait(30), Some(143), "{}", consumer.log());
    gate.release();
    // With no consumer left, the message stays ready: a lasting state.
    wait_for("the message to be back", 30, || {
        rabbit.queue("qf") == Some((1, 0))
    });
}

/// A run whose consumer lost its connection to the broker sends nothing
/// more to the registry (its message went back to the broker, for another
/// consumer): two consumers, each reaching the registry through a proxy of
/// its own. The first one's run is held at an index PUT; its connection is
/// closed (and it may not connect again: its user's permissions are
/// gone). No request reaches its proxy after that, the second consumer
/// takes over, and the compose is published once and announced once.
#[test]
fn a_run_whose_connection_broke_sends_nothing_more() {
    let world = World::new();
    let (rabbit, dir) = (&world.rabbit, world.dir());
    for user in ["one", "two"] {
        rabbit.ctl(&["add_user", user, "pw"]).unwrap();
        rabbit
            .ctl(&["set_permissions", "-p", "/", user, ".*", ".*", ".*"])
            .unwrap();
    }
    amqp_peer(&["bind", &rabbit.url(), "results", RESULTS]);
    let other = Proxy::start(format!("http://{}", world.registry.host()));
    let as_user = |user: &str, host: &str| {
        config(rabbit, host, "qc", &world.composes, "")
            .replace("amqp://guest:guest@", &format!("amqp://{user}:pw@"))
    };
    let one = Consumer::start(dir, "one", &as_user("one", &world.host()));
    let two = Consumer::start(dir, "two", &as_user("two", &other.host()));
    wait_for("two to stand by", 30, || two.log().contains("standing by"));
    let gate = world.proxy.hold("PUT", "/v2/fedora/manifests/41\0");
    let id = "Fedora-41-20241101.n.0";
    announce(
        rabbit,
        &world.compose("f41-incomplete"),
        id,
        "FINISHED_INCOMPLETE",
    );
    gate.wait_held(1, 60);
    // One's session breaks for good.
    rabbit
        .ctl(&["clear_permissions", "-p", "/", "one"])
        .unwrap();
    let connections = rabbit
        .ctl(&[
            "list_connections",
            "-q",
            "--no-table-headers",
            "user",
            "pid",
        ])
        .unwrap();
    for line in connections.lines().filter(|l| l.starts_with("one")) {
        let pid = line.split_whitespace().last().unwrap();
        rabbit.ctl(&["close_connection", pid, "closed by the test"]);
    }
    wait_for("one to stop its run", 30, || {
        one.log().contains("connecting again")
    });
    let sent = world.proxy.arrivals();
    wait_or(
        "two to publish",
        120,
        || {
            rabbit.queue("qc") == Some((0, 0))
                && world
                    .tag("fedora:41")
                    .is_some_and(|(i, _)| i["annotations"]["dev.archgate.compose"] == id)
        },
        || two.log(),
    );
    assert_eq!(
        world.proxy.arrivals(),
        sent,
        "one sent more after its session broke"
    );
    assert_eq!(gate.held(), 1);
    let results = drain(rabbit, "results");
    assert_eq!(results.len(), 1, "announced once: {results:#?}");
    assert_eq!(
        results[0]["body"]["tags"],
        serde_json::json!(["41", "latest"])
    );
    let (_, metrics) = one.get("/metrics");
    assert_eq!(metric(&metrics, "archgate_runs_in_flight"), 0, "{metrics}");
    drop(gate);
}

/// Four messages set aside at once while results are announced, with
/// `QUEUE.failed` deleted under the consumer: each copy and each result
/// learns its own fate (one publish at a time on the channel). None is
/// lost, none duplicated: `QUEUE.failed` (declared again) holds the four,
/// and the one compose is announced once.
#[test]
fn set_asides_and_results_at_once_each_learn_their_own_fate() {
    let world = World::new();
    let rabbit = &world.rabbit;
    amqp_peer(&["bind", &rabbit.url(), "results", RESULTS]);
    let cfg = world.config("q2", "prefetch = 8\nconcurrency = 4\n");
    let consumer = world.start("fates", &cfg);
    // The results wait at the registry while the copies go.
    let gate = world.proxy.hold("PUT", "/v2/fedora/manifests/41\0");
    let id = "Fedora-41-20241101.n.0";
    announce(
        rabbit,
        &world.compose("f41-incomplete"),
        id,
        "FINISHED_INCOMPLETE",
    );
    gate.wait_held(1, 60);
    amqp_peer(&["delete", &rabbit.url(), "q2.failed"]);
    for i in 0..4 {
        amqp_peer(&[
            "publish-raw",
            &rabbit.url(),
            TOPIC,
            &format!("not json {i}"),
        ]);
    }
    gate.release();
    wait_or(
        "four set aside and the compose published",
        120,
        || rabbit.queue("q2.failed") == Some((4, 0)) && rabbit.queue("q2") == Some((0, 0)),
        || consumer.log(),
    );
    let failed = drain(rabbit, "q2.failed");
    let mut bodies: Vec<&str> = failed.iter().map(|m| m["raw"].as_str().unwrap()).collect();
    bodies.sort();
    assert_eq!(
        bodies,
        ["not json 0", "not json 1", "not json 2", "not json 3"]
    );
    let results = drain(rabbit, "results");
    assert_eq!(results.len(), 1, "{results:#?}");
    assert_eq!(results[0]["body"]["compose_id"], id);
}

/// A message whose run kills the process every time, on a classic queue
/// (which never says how often it delivered a message): each run is
/// counted on disk before it starts, so after `max-attempts` starts the
/// next consumer sets it aside without running it.
#[test]
fn a_run_that_kills_the_consumer_every_time_is_set_aside() {
    let world = World::new();
    let rabbit = &world.rabbit;
    let id = "Fedora-41-20241101.n.0";
    let cfg = world.config("qk", "");
    amqp_peer(&["bind", &rabbit.url(), "qk", TOPIC]);
    announce(
        rabbit,
        &world.compose("f41-incomplete"),
        id,
        "FINISHED_INCOMPLETE",
    );
    let mut starts = 0;
    let mut logs = String::new();
    while rabbit.queue("qk.failed") != Some((1, 0)) {
        starts += 1;
        assert!(starts <= 5, "never set aside:\n{logs}");
        let mut c = Consumer::spawn(
            world.dir(),
            &format!("k{starts}"),
            &cfg,
            &[("ARCHGATE_TEST_ABORT_RUN", id)],
        );
        // Killed by its run (a state that lasts), or it set the message
        // aside and waits for more (then stopped here).
        let log = c.log.clone();
        let mut died = false;
        wait_or(
            "the consumer to die or set the message aside",
            120,
            || {
                died = c.exited();
                died || rabbit.queue("qk.failed") == Some((1, 0))
            },
            || std::fs::read_to_string(&log).unwrap_or_default(),
        );
        logs.push_str(&c.log());
        if !died {
            c.signal("-TERM");
            assert_eq!(c.wait(30), Some(0), "{}", c.log());
        }
    }
    // max-attempts = 2: two runs killed their consumer; the third start
    // set the message aside.
    assert_eq!(
        logs.matches("injected fault: the run of").count(),
        2,
        "{logs}"
    );
    assert_eq!(starts, 3, "{logs}");
    let failed = drain(rabbit, "qk.failed");
    let why = failed[0]["headers"]["x-archgate-error"].as_str().unwrap();
    assert!(
        why.contains("started 2 times, 2 of them never ended"),
        "{why}"
    );
    assert_eq!(rabbit.queue("qk"), Some((0, 0)));
}

/// A transfer that stalls (the compose server holds an artifact's answer)
/// ends after `[source] read-timeout` as a transient error: the message is
/// tried again, its arch never `failed` (no refusal, nothing dropped), and
/// the compose is published once the server answers.
#[test]
fn a_stalled_download_times_out_and_is_retried() {
    let world = World::new();
    let rabbit = &world.rabbit;
    let web = world.dir().join("web");
    support::copy_tree(&world.compose("f41-incomplete"), &web.join("compose/f41"));
    let gate = std::sync::Arc::new(support::HoldGate::new());
    let (root, stall) = (web.clone(), gate.clone());
    let server = Server::start(move |req: hyper::Request<hyper::body::Incoming>| {
        let (root, stall) = (root.clone(), stall.clone());
        async move {
            let path = support::percent_decode(req.uri().path());
            if path.contains("x86_64") && path.ends_with(".oci.tar.xz") {
                stall.pass().await;
            }
            Ok(
                match std::fs::read(root.join(path.trim_start_matches('/'))) {
                    Ok(bytes) => respond(200, &[], bytes),
                    Err(_) => respond(404, &[], "not found"),
                },
            )
        }
    });
    let base = format!("http://{}/compose/", server.addr);
    let cfg = |delay: &str| {
        world
            .config("qs", "")
            .replace(
                &format!("\"{}\"", world.composes.display()),
                &format!("\"{base}\""),
            )
            .replace(
                "retry-delay = \"1s\"",
                &format!("retry-delay = \"{delay}\""),
            )
            .replace("[source]\n", "[source]\nread-timeout = \"2s\"\n")
    };
    let mut consumer = world.start("stall", &cfg("600s"));
    let body = serde_json::json!({
        "status": "FINISHED", "compose_id": "Fedora-41-20241101.n.0",
        "location": format!("{base}f41/compose"),
    });
    amqp_peer(&["publish", &rabbit.url(), TOPIC, &body.to_string()]);
    gate.wait_held(1, 60);
    wait_or(
        "the stalled try to fail",
        60,
        || {
            metric(
                &consumer.get("/metrics").1,
                "archgate_messages_total{outcome=\"retried\"}",
            ) == 1
        },
        || consumer.log(),
    );
    let log = consumer.log();
    assert!(
        log.contains("the transfer broke or stalled") || log.contains("cannot fetch"),
        "{log}"
    );
    let (_, metrics) = consumer.get("/metrics");
    assert_eq!(
        metric(&metrics, "archgate_targets_total{decision=\"refused\"}"),
        0,
        "{metrics}"
    );
    assert!(world.tag("fedora:41").is_none());
    // The server answers again; the next try (a second after the failed
    // one, in a consumer told so) publishes all four arches.
    gate.release();
    consumer.signal("-TERM");
    assert_eq!(consumer.wait(30), Some(0), "{}", consumer.log());
    let consumer = world.start("stall2", &cfg("1s"));
    wait_or(
        "the compose to be published",
        120,
        || rabbit.queue("qs") == Some((0, 0)) && world.tag("fedora:41").is_some(),
        || consumer.log(),
    );
    assert_eq!(
        support::index_platforms(&world.tag("fedora:41").unwrap().0).len(),
        4
    );
}

/// A local location is checked once, and read through the directory that
/// was checked, never by its name again: a directory swapped for a link
/// out of `allowed-locations` between the check and the run (the run
/// waits for the one run slot, taken by another compose held at the
/// registry) leads nowhere. What is published is the compose that was
/// checked.
#[test]
fn a_directory_swapped_after_its_check_is_not_followed() {
    let world = World::new();
    let rabbit = &world.rabbit;
    let checked = world.compose("checked");
    support::copy_tree(&world.compose("f41-incomplete"), &checked);
    // Outside the allowed composes: another compose, which must not be read.
    let secret = world.dir().join("secret");
    support::copy_tree(&world.compose("f41-checksums"), &secret);
    let consumer = world.start("swap", &world.config("qw", "[gate]\npolicy = \"hybrid\"\n"));
    let gate = world.proxy.hold("PUT", "/v2/fedora/manifests/30\0");
    announce(
        rabbit,
        &world.compose("f30-armhfp"),
        "Fedora-30-20190801.n.0",
        "FINISHED",
    );
    gate.wait_held(1, 60);
    let id = "Fedora-41-20241101.n.0";
    announce(rabbit, &checked, id, "FINISHED_INCOMPLETE");
    wait_for("the second compose to wait for a run slot", 60, || {
        consumer.log().contains("waiting for a run slot")
    });
    std::fs::rename(&checked, world.compose("checked.moved")).unwrap();
    std::os::unix::fs::symlink(&secret, &checked).unwrap();
    gate.release();
    wait_or(
        "both composes to be done",
        120,
        || rabbit.queue("qw") == Some((0, 0)) && world.tag("fedora:41").is_some(),
        || consumer.log(),
    );
    let (index, _) = world.tag("fedora:41").unwrap();
    assert_eq!(
        index["annotations"]["dev.archgate.compose"],
        id,
        "{}",
        consumer.log()
    );
    assert!(!consumer.log().contains("secret"), "{}", consumer.log());
}

/// A body larger than any compose message is set aside unread: its size
/// is bounded before it is parsed.
#[test]
fn a_huge_body_is_set_aside_unread() {
    let world = World::new();
    let rabbit = &world.rabbit;
    let consumer = world.start("huge", &world.config("qh", ""));
    // A megabyte of a JSON array: valid JSON, no compose message.
    let huge = world.dir().join("huge.json");
    std::fs::write(&huge, format!("[{}0]", "0,".repeat(512 * 1024))).unwrap();
    let file = format!("@{}", huge.display());
    amqp_peer(&["publish-raw", &rabbit.url(), TOPIC, &file]);
    wait_for("the message to be set aside", 60, || {
        rabbit.queue("qh.failed") == Some((1, 0))
    });
    let failed = drain(rabbit, "qh.failed");
    let why = failed[0]["headers"]["x-archgate-error"].as_str().unwrap();
    assert!(
        why.contains("more than the 65536 a compose message may have"),
        "{why}"
    );
    assert_eq!(
        metric(
            &consumer.get("/metrics").1,
            "archgate_messages_total{outcome=\"invalid\"}"
        ),
        1
    );
}

/// Who mends a registry's refusal decides what happens: its certificate of
/// an issuer archgate does not know is the registry's to mend (or the
/// operator's, in hours), so the message is tried again with backoff, not
/// set aside at once; the credentials it refuses are ours, set aside at
/// once (`refused_credentials_are_set_aside_at_once`).
#[test]
fn a_registry_certificate_of_an_unknown_issuer_is_tried_again() {
    let world = World::new();
    let rabbit = &world.rabbit;
    let pki = support::Pki::new(&world.dir().join("pki"));
    let registry = Registry::start_with(Auth::None, Some(pki.tls(false)));
    let host = registry.host();
    let cfg = config(rabbit, &host, "qt", &world.composes, "")
        .replace("tls-verify = false\n", "")
        .replace("retry-delay = \"1s\"", "retry-delay = \"600s\"");
    let consumer = world.start("tls", &cfg);
    announce(
        rabbit,
        &world.compose("f41-incomplete"),
        "Fedora-41-20241101.n.0",
        "FINISHED_INCOMPLETE",
    );
    wait_or(
        "the try to fail",
        60,
        || {
            metric(
                &consumer.get("/metrics").1,
                "archgate_messages_total{outcome=\"retried\"}",
            ) == 1
        },
        || consumer.log(),
    );
    assert!(
        consumer.log().contains("unknown issuer"),
        "{}",
        consumer.log()
    );
    assert_eq!(rabbit.queue("qt.failed"), Some((0, 0)), "not set aside");
    assert_eq!(rabbit.queue("qt"), Some((0, 1)), "kept for its next try");
}

/// What a set-aside copy carries: never the original's `expiration` (a
/// message set aside stays), and a reason of bounded length (the whole of
/// it is in the log; `retry::cut` bounds it, its unit test shows how).
#[test]
fn a_set_aside_copy_stays_and_its_reason_is_bounded() {
    let world = World::new();
    let rabbit = &world.rabbit;
    let _consumer = world.start("copies", &world.config("qe", ""));
    // Expires in an hour: the copy must not.
    amqp_peer(&["publish-raw", &rabbit.url(), TOPIC, "not json", "3600000"]);
    // A location outside the allowed ones, ten thousand bytes long.
    let long = format!("/elsewhere/{}/compose", "x".repeat(10_000));
    let body = serde_json::json!({"status": "FINISHED", "compose_id": "C", "location": long});
    amqp_peer(&["publish", &rabbit.url(), TOPIC, &body.to_string()]);
    wait_for("both set aside", 60, || {
        rabbit.queue("qe.failed") == Some((2, 0))
    });
    let failed = drain(rabbit, "qe.failed");
    for m in &failed {
        assert!(m["expiration"].is_null(), "{m:#}");
        let why = m["headers"]["x-archgate-error"].as_str().unwrap();
        assert!(why.len() <= 2_000, "{} bytes", why.len());
    }
}

/// SIGTERM is heard from the first moment: while connecting to a broker
/// that accepted the connection and never answers, the consumer exits 0.
#[test]
fn a_shutdown_while_connecting_is_heard() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let c = composes(dir);
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in silent.incoming().flatten() {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(stream);
        }
    });
    let cfg = format!(
        "[source]\nkind = \"pungi\"\n\n[[image]]\nname = \"fedora\"\nmatch = {{ subvariant = \"Container_Base\" }}\nrepositories = [\"oci:out\"]\ntags = [\"x\"]\n\n[consume]\namqp-url = \"amqp://guest:guest@127.0.0.1:{port}/%2f\"\nhealth = \"HEALTH\"\nallowed-locations = [\"{}\"]\n",
        c.display()
    );
    let mut consumer = Consumer::spawn(dir, "silent", &cfg, &[]);
    wait_for("the consumer to connect", 30, || {
        accepted.load(std::sync::atomic::Ordering::SeqCst) >= 1
    });
    consumer.signal("-TERM");
    assert_eq!(consumer.wait(30), Some(0), "{}", consumer.log());
}

/// `archgate_results_sent_total` counts the result messages a queue took:
/// one that no queue is bound to is sent, logged, and not counted.
#[test]
fn a_result_no_queue_takes_is_not_counted_as_sent() {
    let world = World::new();
    let rabbit = &world.rabbit;
    let consumer = world.start("unbound", &world.config("qr", ""));
    announce(
        rabbit,
        &world.compose("f41-incomplete"),
        "Fedora-41-20241101.n.0",
        "FINISHED_INCOMPLETE",
    );
    settled(rabbit, "qr", 60);
    assert!(world.tag("fedora:41").is_some(), "{}", consumer.log());
    assert!(
        consumer.log().contains("no queue is bound to its topic"),
        "{}",
        consumer.log()
    );
    let (_, metrics) = consumer.get("/metrics");
    assert_eq!(
        metric(&metrics, "archgate_results_sent_total"),
        0,
        "{metrics}"
    );
}

/// A location on a hung mount (a FUSE file system that never answers, as
/// a stuck NFS server makes one: tests/support/fuse_hang.py, mounted in
/// the consumer's own user and mount namespaces) blocks no more than the
/// thread that looks at it: with three such messages held (more than the
/// runtime's two workers), `/metrics` answers, another compose is
/// published, and each hung message ends set aside once its mount has not
/// answered within `read-timeout` over `retry-horizon`. A SIGTERM then
/// ends the process, whose stuck threads it does not wait for.
#[test]
fn a_location_on_a_hung_mount_blocks_nothing_else() {
    let world = World::new();
    let rabbit = &world.rabbit;
    let mount = world.compose("hung");
    std::fs::create_dir(&mount).unwrap();
    let held = world.dir().join("fuse.log");
    let helper = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/support/fuse_hang.py");
    let python = std::env::var("ARCHGATE_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = format!(
        "'{python}' '{}' '{}' '{}' & while [ ! -s '{}' ]; do kill -0 $! || exit 1; sleep 0.1; done; exec \"$@\"",
        helper.display(),
        mount.display(),
        held.display(),
        held.display()
    );
    let cfg = world
        .config("qh", "retry-horizon = \"1s\"\n")
        .replace("[source]\n", "[source]\nread-timeout = \"2s\"\n");
    let mut consumer = Consumer::spawn_under(
        world.dir(),
        "hung",
        &cfg,
        &[],
        &["unshare", "-Urm", "sh", "-c", &script, "sh"],
    );
    wait_or(
        "the consumer to be ready",
        30,
        || consumer.get("/ready").0 == 200,
        || consumer.log(),
    );
    for i in 0..3 {
        announce(
            rabbit,
            &mount.join(format!("c{i}")),
            &format!("Fedora-41-2024110{i}.n.0"),
            "FINISHED",
        );
    }
    // Three lookups held by the mount: three threads blocked until the
    // file system answers, which it never does.
    wait_or(
        "three lookups on the hung mount",
        60,
        || {
            let text = std::fs::read_to_string(&held).unwrap_or_default();
            text.lines().filter(|l| *l == "1").count() >= 3
        },
        || consumer.log(),
    );
    let (status, metrics) = consumer.get("/metrics");
    assert_eq!(status, 200, "{}", consumer.log());
    assert!(metrics.contains("archgate_consumer_active 1"), "{metrics}");
    announce(
        rabbit,
        &world.compose("f41-incomplete"),
        "Fedora-41-20241101.n.0",
        "FINISHED_INCOMPLETE",
    );
    wait_or(
        "the other compose to be published and the hung ones set aside",
        180,
        || world.tag("fedora:41").is_some() && rabbit.queue("qh.failed") == Some((3, 0)),
        || consumer.log(),
    );
    for m in drain(rabbit, "qh.failed") {
        let why = m["headers"]["x-archgate-error"].as_str().unwrap_or("");
        assert!(why.contains("did not answer in 2.0 s"), "{why}");
    }
    assert_eq!(rabbit.queue("qh"), Some((0, 0)));
    consumer.signal("-TERM");
    assert_eq!(consumer.wait(30), Some(0), "{}", consumer.log());
}

/// A second SIGTERM during a drain ends the process at once (143): the
/// run held at the registry is not waited for, and the broker takes its
/// message back, ready for the next consumer.
#[test]
fn a_second_signal_ends_a_drain_at_once() {
    let world = World::new();
    let rabbit = &world.rabbit;
    let mut consumer = world.start("twice", &world.config("q2s", ""));
    let gate = world.proxy.hold("PUT", "/v2/fedora/manifests/41\0");
    announce(
        rabbit,
        &world.compose("f41-incomplete"),
        "Fedora-41-20241101.n.0",
        "FINISHED_INCOMPLETE",
    );
    gate.wait_held(1, 60);
    consumer.signal("-TERM");
    // Draining: the run waits on the held PUT, which stays held.
    wait_or(
        "the consumer to start draining",
        30,
        || consumer.log().contains("SIGTERM: stopping"),
        || consumer.log(),
    );
    assert!(!consumer.exited(), "{}", consumer.log());
    consumer.signal("-TERM");
    assert_eq!(consumer.wait(30), Some(143), "{}", consumer.log());
    wait_for("the broker to take the message back", 30, || {
        rabbit.queue("q2s") == Some((1, 0))
    });
    assert!(world.tag("fedora:41").is_none());
    drop(gate);
}

/// Out of file descriptors, the health endpoint's accept loop waits
/// instead of spinning on EMFILE: over a few seconds with a connection
/// it cannot accept, the consumer uses a small part of one CPU; once
/// descriptors are free again, that connection is answered.
#[test]
fn out_of_descriptors_the_health_endpoint_waits() {
    let world = World::new();
    let consumer = world.start("emfile", &world.config("qe", ""));
    let pid = consumer.child.id().to_string();
    let limit = |soft: &str| {
        let ok = std::process::Command::new("prlimit")
            .args(["--pid", &pid, &format!("--nofile={soft}:")])
            .status()
            .unwrap();
        assert!(ok.success());
    };
    // The descriptors open now stay; not one more can be opened.
    limit("3");
    let mut waiting = std::net::TcpStream::connect(("127.0.0.1", consumer.health)).unwrap();
    use std::io::{Read, Write};
    waiting
        .write_all(b"GET /ready HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let ticks = |pid: &str| -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let after = stat.rsplit(')').next().unwrap();
        let fields: Vec<&str> = after.split_whitespace().collect();
        // utime and stime: fields 14 and 15 of stat, 12 and 13 here.
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    };
    let (before, since) = (ticks(&pid), std::time::Instant::now());
    std::thread::sleep(std::time::Duration::from_secs(3));
    let used = (ticks(&pid) - before) as f64 / 100.0;
    let wall = since.elapsed().as_secs_f64();
    assert!(
        used < wall / 3.0,
        "{used:.2} s of CPU in {wall:.2} s out of descriptors"
    );
    // It was out of descriptors (the test measured what it meant to).
    assert!(
        consumer
            .log()
            .contains("health: accept: Too many open files"),
        "{}",
        consumer.log()
    );
    limit("1024");
    let mut answer = String::new();
    waiting
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    waiting.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// How [`trickle_server`] sends the x86_64 artifact.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pace {
    /// A byte every 100 ms: slow, and moving.
    Trickle,
    /// Nothing: stalled.
    Hold,
    /// The rest at once.
    Rest,
}

/// A compose server (files beneath `root`, plain HTTP/1.0 written here)
/// that sends the x86_64 `.oci.tar.xz` at the pace the test sets; `started`
/// is set once that artifact's answer began.
fn trickle_server(
    root: std::path::PathBuf,
) -> (
    u16,
    std::sync::Arc<std::sync::Mutex<Pace>>,
    std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use std::io::{BufRead, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let pace = std::sync::Arc::new(std::sync::Mutex::new(Pace::Trickle));
    let started = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (p, s) = (pace.clone(), started.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (root, pace, started) = (root.clone(), p.clone(), s.clone());
            std::thread::spawn(move || {
                let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                let _ = reader.read_line(&mut line);
                while reader.read_line(&mut String::new()).is_ok_and(|n| n > 2) {}
                let path = support::percent_decode(line.split_whitespace().nth(1).unwrap_or("/"));
                let mut out = stream;
                let Ok(bytes) = std::fs::read(root.join(path.trim_start_matches('/'))) else {
                    let _ = out.write_all(b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n");
                    return;
                };
                let head = format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n", bytes.len());
                let _ = out.write_all(head.as_bytes());
                if !(path.contains("x86_64") && path.ends_with(".oci.tar.xz")) {
                    let _ = out.write_all(&bytes);
                    return;
                }
                started.store(true, std::sync::atomic::Ordering::SeqCst);
                let mut sent = 0;
                while sent < bytes.len() {
                    let now = *pace.lock().unwrap();
                    match now {
                        Pace::Trickle => {
                            if out.write_all(&bytes[sent..sent + 1]).is_err() {
                                return;
                            }
                            sent += 1;
                        }
                        Pace::Hold => {}
                        Pace::Rest => {
                            let _ = out.write_all(&bytes[sent..]);
                            return;
                        }
                    }
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
            });
        }
    });
    (port, pace, started)
}

/// `/live` follows work, also while draining: after SIGTERM, a run whose
/// download moves slowly (a byte every 100 ms, far below what the
/// progress display reports by size) keeps `/live` at 200 well past the
/// stall limit (2 s here, `ARCHGATE_TEST_STALLED`; 60 s in release
/// builds); the same download stalled turns it to 503; once it moves
/// again the drain ends the run, publishes, and exits 0.
#[test]
fn a_slow_drain_is_live_and_a_stalled_one_is_not() {
    let world = World::new();
    let rabbit = &world.rabbit;
    let web = world.dir().join("web");
    support::copy_tree(&world.compose("f41-incomplete"), &web.join("compose/f41"));
    let (port, pace, started) = trickle_server(web);
    let base = format!("http://127.0.0.1:{port}/compose/");
    let cfg = world.config("qd", "").replace(
        &format!("\"{}\"", world.composes.display()),
        &format!("\"{base}\""),
    );
    let mut consumer = Consumer::start_env(
        world.dir(),
        "drain",
        &cfg,
        &[("ARCHGATE_TEST_STALLED", "2")],
    );
    let body = serde_json::json!({
        "status": "FINISHED", "compose_id": "Fedora-41-20241101.n.0",
        "location": format!("{base}f41/compose"),
    });
    amqp_peer(&["publish", &rabbit.url(), TOPIC, &body.to_string()]);
    wait_for("the artifact to trickle", 60, || {
        started.load(std::sync::atomic::Ordering::SeqCst)
    });
    consumer.signal("-TERM");
    wait_or(
        "the consumer to start draining",
        30,
        || consumer.log().contains("SIGTERM: stopping"),
        || consumer.log(),
    );
    // Three times the stall limit, the download moving all along.
    std::thread::sleep(std::time::Duration::from_secs(6));
    assert_eq!(consumer.get("/live").0, 200, "{}", consumer.log());
    *pace.lock().unwrap() = Pace::Hold;
    wait_or(
        "/live to say the stalled drain is stalled",
        30,
        || consumer.get("/live").0 == 503,
        || consumer.log(),
    );
    *pace.lock().unwrap() = Pace::Rest;
    assert_eq!(consumer.wait(120), Some(0), "{}", consumer.log());
    assert_eq!(
        support::index_platforms(&world.tag("fedora:41").unwrap().0).len(),
        4,
        "{}",
        consumer.log()
    );
    assert_eq!(rabbit.queue("qd"), Some((0, 0)));
}
