//! `archgate consume` with exactly what Fedora gives an app (SPEC 8b): a
//! node set up as Fedora's broker (amqps, client certificates, EXTERNAL,
//! the vhost `/pubsub`), the app's user made as `roles/rabbit/user` makes
//! it (configure `^$`, the role's read and write strings, staging's topic
//! permissions), its queues made by the administrator as
//! `roles/rabbit/queue` makes them, and FIU's own production file with
//! only `[consumer_config]` (and the addresses of this machine) put in.
//! Every right archgate uses is one of these: the broker refuses any other.

mod support;

use std::collections::BTreeSet;

use serde_json::Value;
use support::consume::{
    announce_at, drain_at, metric, wait_for, wait_or, Consumer, FedoraBroker, SmtpSink, World,
    FIU_QUEUE, FIU_RESULTS,
};
use support::{archgate_env, Fault, FaultKind};

/// archgate's tables, under `[consumer_config]`: one image on the proxy's
/// registry, two repositories of one name there.
fn consumer_config(world: &World, host: &str, extra: &str) -> String {
    format!(
        r#"[consumer_config.source]
kind = "pungi"

[consumer_config.gate]
policy = "hybrid"

[consumer_config.registry."{host}"]
tls-verify = false
timeout = "3s"

[[consumer_config.image]]
name = "fedora"
match = {{ subvariant = "Container_Base" }}
repositories = ["docker://{host}/fedora", "docker://{host}/mirror/fedora"]
tags = ["{{release}}", "latest"]

[consumer_config.consume]
allowed-locations = ["{}"]
health = "HEALTH"
retry-delay = "1s"
takeover-grace = "1s"
{extra}"#,
        world.composes.display()
    )
}

/// The queues `roles/rabbit/queue` makes for the app: its queue on the
/// compose topic, and `QUEUE.failed` on its own key (docs/service.md);
/// beside them, other apps' queues: one that listens for composes, one for
/// FIU's results, and a catch-all archive as datanommer's.
fn fedora_queues(world: &World, broker: &FedoraBroker) {
    let rabbit = &world.rabbit;
    let compose_topic = "org.fedoraproject.*.pungi.compose.status.change";
    broker.role_queue(rabbit, FIU_QUEUE, &[compose_topic]);
    let failed = format!("{FIU_QUEUE}.failed");
    broker.role_queue(rabbit, &failed, &[&failed]);
    broker.role_queue(rabbit, "other-app", &[compose_topic]);
    broker.role_queue(rabbit, "results", &[FIU_RESULTS]);
    broker.role_queue(rabbit, "datanommer", &["#"]);
}

/// The service tests' set-up on a broker set up as Fedora's, with the
/// queues the roles make.
fn fedora() -> (World, FedoraBroker) {
    let mut broker = None;
    let world = World::with_rabbit(|dir| {
        let (rabbit, b) = FedoraBroker::start(dir);
        broker = Some(b);
        rabbit
    });
    let broker = broker.unwrap();
    fedora_queues(&world, &broker);
    (world, broker)
}

/// (ready, unacknowledged) of a queue on `/pubsub`.
fn queue(world: &World, name: &str) -> Option<(u64, u64)> {
    world.rabbit.queue_in("/pubsub", name)
}

/// The routing keys a queue holds, taken out of it.
fn keys(messages: &[Value]) -> Vec<String> {
    messages
        .iter()
        .map(|m| m["routing_key"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn fius_own_file_within_fedoras_roles_publishes_retries_sets_aside_and_replays() {
    let (world, broker) = fedora();
    let admin = broker.admin_url(&world.rabbit);
    let smtp = SmtpSink::start();
    let host = world.host();
    let file = broker.fiu_file(smtp.port, &consumer_config(&world, &host, ""));

    // The registry is down for the first try.
    for method in ["GET", "HEAD", "POST", "PUT", "PATCH"] {
        world.proxy.fault(Fault {
            method,
            path_contains: "/v2/".into(),
            skip: 0,
            times: usize::MAX,
            kind: FaultKind::Status(503, None),
        });
    }
    let consumer = Consumer::start(world.dir(), "fiu", &file);
    let id = "Fedora-41-20241101.n.0";
    announce_at(
        &admin,
        &world.compose("f41-incomplete"),
        id,
        "FINISHED_INCOMPLETE",
    );
    wait_for("a failed first try", 60, || {
        metric(
            &consumer.get("/metrics").1,
            "archgate_messages_total{outcome=\"retried\"}",
        ) >= 1
    });
    world.proxy.clear_faults();
    wait_for("the compose to be published", 120, || {
        queue(&world, FIU_QUEUE) == Some((0, 0)) && world.tag("fedora:41").is_some()
    });
    let (index, _) = world.tag("fedora:41").unwrap();
    assert_eq!(index["annotations"]["dev.archgate.compose"], id);
    assert_eq!(world.tag("mirror/fedora:latest").unwrap().0, index);

    // Announced once, in FIU's form, and seen by the archive; the app that
    // listens for composes got the compose message alone, no copy.
    let results = drain_at(&admin, "results");
    assert_eq!(results.len(), 1, "{results:#?}\n{}", consumer.log());
    assert!(results[0].get("invalid").is_none(), "{:#}", results[0]);
    assert_eq!(results[0]["body"]["compose_id"], id);
    assert_eq!(keys(&drain_at(&admin, "other-app")).len(), 1);
    let archived = keys(&drain_at(&admin, "datanommer"));
    assert_eq!(
        archived,
        [
            "org.fedoraproject.test.pungi.compose.status.change",
            FIU_RESULTS
        ],
        "what reached amq.topic"
    );
    for q in [FIU_QUEUE, &format!("{FIU_QUEUE}.failed")] {
        assert_eq!(queue(&world, q), Some((0, 0)), "{q}");
    }

    // A message that cannot publish (the registry refuses the
    // credentials): set aside at once, where the documented command finds
    // it, and replays it once the cause is mended.
    world.proxy.fault(Fault {
        method: "GET",
        path_contains: "/v2/".into(),
        skip: 0,
        times: usize::MAX,
        kind: FaultKind::Status(401, None),
    });
    let newer = "Fedora-41-20241103.n.0";
    announce_at(&admin, &world.compose("f41-checksums"), newer, "FINISHED");
    let failed = format!("{FIU_QUEUE}.failed");
    wait_for("the message to be set aside", 60, || {
        queue(&world, &failed) == Some((1, 0))
    });
    let path = world.dir().join("fiu.toml");
    let replay = |args: &[&str]| {
        let mut all = vec!["replay", "-c", path.to_str().unwrap()];
        all.extend_from_slice(args);
        archgate_env(world.dir(), &all, &[])
    };
    let (code, out, err) = replay(&["--list"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with(&format!("kept\t{newer}\tauth error")),
        "{out}\n{err}"
    );
    assert_eq!(queue(&world, &failed), Some((1, 0)), "--list moves nothing");
    world.proxy.clear_faults();
    let (code, out, err) = replay(&[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with(&format!("replayed\t{newer}")),
        "{out}\n{err}"
    );
    wait_or(
        "the replayed compose to be published",
        120,
        || {
            world
                .tag("fedora:41")
                .is_some_and(|(i, _)| i["annotations"]["dev.archgate.compose"] == newer)
        },
        || consumer.log(),
    );
    wait_for("every queue to be empty", 60, || {
        queue(&world, FIU_QUEUE) == Some((0, 0)) && queue(&world, &failed) == Some((0, 0))
    });
    let results = drain_at(&admin, "results");
    let ids: Vec<&Value> = results.iter().map(|m| &m["body"]["compose_id"]).collect();
    assert_eq!(ids, [newer], "{results:#?}");
    // The set-aside copy and the replay went under keys of the app's own,
    // which no other app binds.
    assert_eq!(keys(&drain_at(&admin, "other-app")).len(), 1);
    let archived: BTreeSet<String> = keys(&drain_at(&admin, "datanommer")).into_iter().collect();
    let want: BTreeSet<String> = [
        "org.fedoraproject.test.pungi.compose.status.change".to_string(),
        failed.clone(),
        format!("{FIU_QUEUE}.replay"),
        FIU_RESULTS.to_string(),
    ]
    .into();
    assert_eq!(archived, want);
    // The set-aside was an ERROR: mailed to the operators.
    wait_for("the error mail", 30, || !smtp.mails().is_empty());
    let mail = &smtp.mails()[0];
    assert!(
        mail.contains("Subject: An error occurred in fedora-image-uploader")
            && mail.contains(newer)
            && mail.contains("set aside"),
        "{mail}"
    );
    drop(consumer);
}

/// Two replicas with the roles' rights on one queue, each reaching the
/// registry through a proxy of its own (so that what each wrote can be
/// told apart): one is active, the other stands by. The active one is
/// killed in the middle of a run (its blobs sent, its manifest PUTs held
/// by its proxy, and never let through): the standby takes over by
/// itself, and publishes the compose once. No tag is written by both.
#[test]
fn the_active_replica_killed_mid_run_a_standby_publishes_once() {
    let (world, broker) = fedora();
    let admin = broker.admin_url(&world.rabbit);
    let smtp = SmtpSink::start();
    let other = support::Proxy::start(format!("http://{}", world.registry.host()));
    let file = |host: &str| broker.fiu_file(smtp.port, &consumer_config(&world, host, ""));
    // Each replica on a disk of its own, as pods are.
    let state = |name: &str| world.dir().join(format!("state-{name}"));
    let env = |name: &str| vec![("XDG_STATE_HOME", state(name).to_str().unwrap().to_string())];
    let start = |name: &str, host: &str| {
        let env = env(name);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Consumer::start_env(world.dir(), name, &file(host), &env)
    };
    let mut active = start("one", &world.host());
    let standby = start("two", &other.host());
    wait_for("the second replica to stand by", 30, || {
        standby.log().contains("standing by")
    });
    let metrics = standby.get("/metrics").1;
    assert_eq!(metric(&metrics, "archgate_consumer_active"), 0, "{metrics}");
    assert_eq!(
        metric(&active.get("/metrics").1, "archgate_consumer_active"),
        1
    );

    let gate = world.proxy.hold("PUT", "/manifests/");
    let id = "Fedora-41-20241101.n.0";
    announce_at(
        &admin,
        &world.compose("f41-incomplete"),
        id,
        "FINISHED_INCOMPLETE",
    );
    gate.wait_held(1, 60);
    assert!(other.requests().is_empty(), "the standby sent nothing");
    active.signal("-KILL");
    active.wait(10);
    wait_or(
        "the standby to publish",
        120,
        || {
            queue(&world, FIU_QUEUE) == Some((0, 0))
                && world
                    .tag("fedora:41")
                    .is_some_and(|(i, _)| i["annotations"]["dev.archgate.compose"] == id)
        },
        || standby.log(),
    );
    assert!(standby
        .log()
        .contains("took over messages another consumer had"));

    // Tags each replica wrote (a tag PUT its proxy let through): the
    // first wrote none (its manifest PUTs never left its proxy), the
    // second every one.
    let written = |p: &support::Proxy| -> BTreeSet<String> {
        p.requests()
            .into_iter()
            .filter(|(m, path, status)| {
                m == "PUT"
                    && *status < 300
                    && path
                        .rsplit_once("/manifests/")
                        .is_some_and(|(_, r)| !r.starts_with("sha256:"))
            })
            .map(|(_, path, _)| path)
            .collect()
    };
    let (one, two) = (written(&world.proxy), written(&other));
    assert!(one.is_disjoint(&two), "written by both: {one:?} {two:?}");
    assert!(one.is_empty(), "{one:?}");
    for tag in [
        "fedora/manifests/41",
        "fedora/manifests/latest",
        "mirror/fedora/manifests/41",
    ] {
        assert!(two.contains(&format!("/v2/{tag}")), "{two:?}");
    }
    assert_eq!(
        support::index_platforms(&world.tag("fedora:41").unwrap().0).len(),
        4
    );

    // Published once: one announcement, by the replica that wrote it.
    let results = drain_at(&admin, "results");
    assert_eq!(results.len(), 1, "{results:#?}");
    assert_eq!(
        results[0]["body"]["tags"],
        serde_json::json!(["41", "latest"])
    );
    drop(gate);
}

/// Errors go to the operators as FIU's `[log_config]` says (an
/// SMTPHandler at ERROR, to a local SMTP server here), and a burst is not
/// a burst of mails: ten errors within the interval make two mails, the
/// first at once and the other nine in one more.
#[test]
fn errors_are_mailed_and_a_burst_makes_one_more_mail() {
    let (world, broker) = fedora();
    let admin = broker.admin_url(&world.rabbit);
    let smtp = SmtpSink::start();
    let cfg = consumer_config(&world, &world.host(), "error-mail-every = \"20s\"\n");
    let consumer = Consumer::start(world.dir(), "mail", &broker.fiu_file(smtp.port, &cfg));
    // Ten messages that are not compose messages: each set aside, each an
    // ERROR.
    for i in 0..10 {
        support::amqp_peer(&[
            "publish-raw",
            &admin,
            "org.fedoraproject.test.pungi.compose.status.change",
            &format!("not json {i}"),
        ]);
    }
    let failed = format!("{FIU_QUEUE}.failed");
    wait_or(
        "ten messages set aside",
        60,
        || queue(&world, &failed) == Some((10, 0)),
        || consumer.log(),
    );
    wait_for("the second mail", 60, || smtp.mails().len() >= 2);
    let mails = smtp.mails();
    assert_eq!(mails.len(), 2, "{mails:#?}");
    assert!(
        mails[0].contains("Subject: An error occurred in fedora-image-uploader\r\n")
            && mails[0].contains("the body is not JSON"),
        "{}",
        mails[0]
    );
    assert!(
        mails[1].contains("Subject: An error occurred in fedora-image-uploader (9 more)")
            && mails[1].matches("the body is not JSON").count() == 9,
        "{}",
        mails[1]
    );
    let (_, metrics) = consumer.get("/metrics");
    assert_eq!(
        metric(&metrics, "archgate_messages_total{outcome=\"invalid\"}"),
        10
    );
}
