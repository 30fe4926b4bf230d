//! `archgate consume` on a broker set up the way Fedora's is: amqps with
//! client certificates and SASL EXTERNAL (`rabbitmq_auth_mechanism_ssl`,
//! the user taken from the certificate's common name), users with narrow
//! permissions, and fedora-messaging's own configuration file, checked by
//! fedora-messaging itself.

mod support;

use std::path::Path;

use support::consume::{announce, composes, drain, settled, wait_for, Consumer, RESULTS, TOPIC};
use support::{amqp_peer, free_port, registry_tag, Auth, Pki, Rabbit, Registry};

/// The archgate tables of a consumer's configuration, less `[consume]`.
fn tables(host: &str) -> String {
    format!(
        "[source]\nkind = \"pungi\"\n\n[gate]\npolicy = \"hybrid\"\n\n[registry.\"{host}\"]\ntls-verify = false\n\n[[image]]\nname = \"fedora\"\nmatch = {{ subvariant = \"Container_Base\" }}\nrepositories = [\"docker://{host}/fedora\"]\ntags = [\"{{release}}\"]\n"
    )
}

fn consume_table(url: &str, queue: &str, composes: &Path, extra: &str) -> String {
    format!(
        "\n[consume]\namqp-url = \"{url}\"\nqueue = \"{queue}\"\nrouting-keys = [\"{TOPIC}\"]\npublish-topic-prefix = \"org.fedoraproject.test\"\nhealth = \"HEALTH\"\nallowed-locations = [\"{}\"]\n{extra}",
        composes.display()
    )
}

#[test]
fn amqps_with_a_password_and_with_a_certificate_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let c = composes(dir);
    let pki = Pki::new(&dir.join("pki"));
    let tls_port = free_port();
    let rabbit = Rabbit::tls(&pki, tls_port);
    let user = "archgate test client";
    rabbit.ctl(&["add_user", "archie", "s3cret@x"]).unwrap();
    rabbit.ctl(&["add_user", user, "unused"]).unwrap();
    rabbit.ctl(&["clear_password", user]).unwrap();
    for u in ["archie", user] {
        rabbit
            .ctl(&["set_permissions", "-p", "/", u, ".*", ".*", ".*"])
            .unwrap();
    }
    amqp_peer(&["bind", &rabbit.url(), "results", RESULTS]);
    let registry = Registry::start(Auth::None);
    let host = registry.host();

    // A password (from the environment), over amqps.
    let url = format!("amqps://archie@localhost:{tls_port}/%2f");
    let extra = format!(
        "ca-file = \"{}\"\namqp-password-env = \"AMQP_PASSWORD\"\n",
        pki.server_ca.display()
    );
    let cfg = tables(&host) + &consume_table(&url, "qt", &c, &extra);
    let one = Consumer::start_env(dir, "password", &cfg, &[("AMQP_PASSWORD", "s3cret@x")]);
    announce(
        &rabbit,
        &c.join("f41-incomplete"),
        "Fedora-41-20241101.n.0",
        "FINISHED_INCOMPLETE",
    );
    settled(&rabbit, "qt", 60);
    assert!(
        registry_tag(&format!("{host}/fedora:41")).is_some(),
        "{}",
        one.log()
    );
    assert_eq!(drain(&rabbit, "results").len(), 1);
    assert!(!one.log().contains("s3cret"), "{}", one.log());
    drop(one);

    // The certificate alone: SASL EXTERNAL, the user from its common name.
    let url = format!("amqps://localhost:{tls_port}/%2f");
    let (cert, key) = &pki.client;
    let extra = format!(
        "ca-file = \"{}\"\nclient-cert = \"{}\"\nclient-key = \"{}\"\n",
        pki.server_ca.display(),
        cert.display(),
        key.display()
    );
    let cfg = tables(&host) + &consume_table(&url, "qt", &c, &extra);
    let two = Consumer::start(dir, "external", &cfg);
    let connections = rabbit
        .ctl(&[
            "list_connections",
            "-q",
            "--no-table-headers",
            "user",
            "auth_mechanism",
            "ssl",
        ])
        .unwrap();
    assert!(
        connections
            .lines()
            .any(|l| l.contains(user) && l.contains("EXTERNAL") && l.contains("true")),
        "{connections}"
    );
    announce(
        &rabbit,
        &c.join("f41-checksums"),
        "Fedora-41-20241103.n.0",
        "FINISHED",
    );
    settled(&rabbit, "qt", 60);
    let (index, _) = registry_tag(&format!("{host}/fedora:41")).unwrap();
    assert_eq!(
        index["annotations"]["dev.archgate.compose"],
        "Fedora-41-20241103.n.0",
        "{}",
        two.log()
    );
    drop(two);

    // A CA that did not sign the broker's certificate: no connection, and
    // the log says what is wrong with the certificate.
    let extra = format!(
        "ca-file = \"{}\"\nclient-cert = \"{}\"\nclient-key = \"{}\"\n",
        pki.client_ca.display(),
        cert.display(),
        key.display()
    );
    let cfg = tables(&host) + &consume_table(&url, "qt", &c, &extra);
    let three = Consumer::spawn(dir, "wrong-ca", &cfg, &[]);
    wait_for("the certificate problem in the log", 60, || {
        let log = three.log();
        log.contains("cannot connect") && log.to_lowercase().contains("certificate")
    });
    assert_eq!(three.get("/ready").0, 503);
}

/// A user with the rights Fedora's roles give (no configure at all), and
/// its queue, but no `QUEUE.failed` made beside it: exit 2 naming the
/// queue and what makes it, and the message still in its queue. With the
/// queue made, the same user runs.
#[test]
fn a_missing_failed_queue_is_named_and_nothing_is_taken() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let c = composes(dir);
    let rabbit = Rabbit::start();
    rabbit.ctl(&["add_user", "narrow", "pw"]).unwrap();
    let (configure, write, read) = support::consume::role_permissions("narrow");
    rabbit
        .ctl(&[
            "set_permissions",
            "-p",
            "/",
            "narrow",
            &configure,
            &write,
            &read,
        ])
        .unwrap();
    amqp_peer(&["bind", &rabbit.url(), "narrow-q", TOPIC]);
    announce(
        &rabbit,
        &c.join("f41-incomplete"),
        "Fedora-41-20241101.n.0",
        "FINISHED_INCOMPLETE",
    );
    assert_eq!(rabbit.queue("narrow-q"), Some((1, 0)));
    let url = format!("amqp://narrow:pw@127.0.0.1:{}/%2f", rabbit.port);
    let cfg = tables("127.0.0.1:5999")
        + &consume_table(&url, "narrow-q", &c, "passive-declares = true\n");
    let mut consumer = Consumer::spawn(dir, "narrow", &cfg, &[]);
    assert_eq!(consumer.wait(60), Some(2), "{}", consumer.log());
    let log = consumer.log();
    assert!(
        log.contains("narrow-q.failed")
            && log.contains("NOT_FOUND")
            && log.contains("\"Permissions\""),
        "{log}"
    );
    assert_eq!(rabbit.queue("narrow-q"), Some((1, 0)), "nothing taken");

    // Without passive declares, the same user may not declare it either:
    // the refusal names the right it lacks.
    let cfg = tables("127.0.0.1:5999") + &consume_table(&url, "narrow-q", &c, "");
    let mut consumer = Consumer::spawn(dir, "narrow2", &cfg, &[]);
    assert_eq!(consumer.wait(60), Some(2), "{}", consumer.log());
    assert!(
        consumer.log().contains("configure on `narrow-q`"),
        "{}",
        consumer.log()
    );
    assert_eq!(rabbit.queue("narrow-q"), Some((1, 0)), "nothing taken");
}

/// fedora-messaging's configuration file, as fedora-messaging itself loads
/// it: its queue (a quorum queue), bindings, prefetch and client properties
/// are archgate's; and the same with passive declares against queues made
/// beforehand (one missing: exit 2 naming it).
#[test]
fn a_fedora_messaging_config_file_is_read_as_fedora_messaging_reads_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let c = composes(dir);
    let rabbit = Rabbit::start();
    let registry = Registry::start(Auth::None);
    let host = registry.host();
    amqp_peer(&["bind", &rabbit.url(), "results", RESULTS]);
    let file = |queue: &str, passive: bool| {
        format!(
            r#"amqp_url = "{url}"
callback = "fedora_image_uploader:Uploader"
passive_declares = {passive}
publish_exchange = "amq.topic"
topic_prefix = "org.fedoraproject.test"

[client_properties]
app = "archgate (test)"
app_url = "https://example.org/archgate"

[exchanges."amq.topic"]
type = "topic"
durable = true
auto_delete = false
arguments = {{}}

[queues."{queue}"]
durable = true
auto_delete = false
exclusive = false
arguments = {{ x-queue-type = "quorum" }}

[[bindings]]
queue = "{queue}"
exchange = "amq.topic"
routing_keys = ["{TOPIC}"]

[qos]
prefetch_size = 0
prefetch_count = 3

[log_config]
version = 1

[consumer_config.source]
kind = "pungi"

[consumer_config.gate]
policy = "hybrid"

[consumer_config.registry."{host}"]
tls-verify = false

[[consumer_config.image]]
name = "fedora"
match = {{ subvariant = "Container_Base" }}
repositories = ["docker://{host}/fedora"]
tags = ["{{release}}"]

[consumer_config.consume]
allowed-locations = ["{composes}"]
health = "HEALTH"
max-attempts = 2
retry-delay = "1s"
"#,
            url = rabbit.url(),
            composes = c.display()
        )
    };
    let path = dir.join("fm.toml");
    std::fs::write(&path, file("fm-q", false)).unwrap();
    let loaded = amqp_peer(&["check-config", path.to_str().unwrap()]);
    assert!(
        loaded.contains("fm-q") && loaded.contains("\"prefetch\": 3"),
        "{loaded}"
    );

    let consumer = Consumer::start(dir, "fm", &file("fm-q", false));
    let queues = rabbit
        .ctl(&["list_queues", "-q", "--no-table-headers", "name", "type"])
        .unwrap();
    assert!(
        queues
            .lines()
            .any(|l| l.starts_with("fm-q") && l.contains("quorum") && !l.contains('.')),
        "{queues}"
    );
    let bindings = rabbit
        .ctl(&[
            "list_bindings",
            "-q",
            "--no-table-headers",
            "source_name",
            "destination_name",
            "routing_key",
        ])
        .unwrap();
    assert!(
        bindings
            .lines()
            .any(|l| l.contains("amq.topic") && l.contains("fm-q") && l.contains(TOPIC)),
        "{bindings}"
    );
    let channels = rabbit
        .ctl(&[
            "list_consumers",
            "-q",
            "--no-table-headers",
            "queue_name",
            "prefetch_count",
        ])
        .unwrap();
    assert!(
        channels
            .lines()
            .any(|l| l.starts_with("fm-q") && l.trim_end().ends_with('3')),
        "{channels}"
    );
    let props = rabbit
        .ctl(&[
            "list_connections",
            "-q",
            "--no-table-headers",
            "client_properties",
        ])
        .unwrap();
    assert!(props.contains("archgate (test)"), "{props}");
    announce(
        &rabbit,
        &c.join("f41-incomplete"),
        "Fedora-41-20241101.n.0",
        "FINISHED_INCOMPLETE",
    );
    settled(&rabbit, "fm-q", 60);
    assert!(
        registry_tag(&format!("{host}/fedora:41")).is_some(),
        "{}",
        consumer.log()
    );
    assert_eq!(drain(&rabbit, "results").len(), 1, "announced");
    drop(consumer);

    // Passive declares: the queues made beforehand are used as they are.
    amqp_peer(&[
        "declare",
        &rabbit.url(),
        "fm-p",
        r#"{"x-queue-type": "quorum"}"#,
    ]);
    amqp_peer(&["declare", &rabbit.url(), "fm-p.failed", "{}"]);
    amqp_peer(&[
        "declare",
        &rabbit.url(),
        "fm-p2",
        r#"{"x-queue-type": "quorum"}"#,
    ]);
    let mut missing = Consumer::spawn(dir, "fm-missing", &file("fm-p2", true), &[]);
    assert_eq!(missing.wait(60), Some(2), "{}", missing.log());
    assert!(missing.log().contains("fm-p2.failed"), "{}", missing.log());
    let passive = Consumer::start(dir, "fm-passive", &file("fm-p", true));
    announce(
        &rabbit,
        &c.join("f41-checksums"),
        "Fedora-41-20241103.n.0",
        "FINISHED",
    );
    wait_for("the newer compose to be published", 60, || {
        registry_tag(&format!("{host}/fedora:41")).is_some_and(|(i, _)| {
            i["annotations"]["dev.archgate.compose"] == "Fedora-41-20241103.n.0"
        })
    });
    settled(&rabbit, "fm-p", 60);
    assert!(
        passive.log().contains("passive_declares"),
        "{}",
        passive.log()
    );
}
