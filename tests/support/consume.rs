//! The service's side of the tests: `archgate consume` started as a
//! process, its health address, its log; messages sent and read with
//! fedora-messaging (tests/support/amqp_peer.py).

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{amqp_peer, free_port, Auth, Pki, Proxy, Rabbit, Registry};

pub const TOPIC: &str = "org.fedoraproject.test.pungi.compose.status.change";
pub const RESULTS: &str = "org.fedoraproject.test.fedora_image_uploader.published.v1.container";

pub fn composes(dir: &Path) -> PathBuf {
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/real/data/pungi");
    let to = dir.join("composes");
    super::copy_tree(&from, &to);
    to
}

pub struct Consumer {
    pub child: Child,
    pub health: u16,
    pub log: PathBuf,
}

impl Consumer {
    pub fn start(dir: &Path, name: &str, config: &str) -> Consumer {
        Consumer::start_env(dir, name, config, &[])
    }

    /// [`Consumer::start`] with these environment variables.
    pub fn start_env(dir: &Path, name: &str, config: &str, env: &[(&str, &str)]) -> Consumer {
        let c = Consumer::spawn(dir, name, config, env);
        wait_for(&format!("{name} ready"), 30, || c.get("/ready").0 == 200);
        c
    }

    /// The consumer started, not waited for (it may never be ready).
    pub fn spawn(dir: &Path, name: &str, config: &str, env: &[(&str, &str)]) -> Consumer {
        Consumer::spawn_under(dir, name, config, env, &[])
    }

    /// [`Consumer::spawn`] as the last arguments of `wrapper` (a command
    /// that ends by running them: `unshare ... sh -c '...; exec "$@"'`).
    pub fn spawn_under(
        dir: &Path,
        name: &str,
        config: &str,
        env: &[(&str, &str)],
        wrapper: &[&str],
    ) -> Consumer {
        let health = free_port();
        let cfg = dir.join(format!("{name}.toml"));
        fs::write(
            &cfg,
            config.replace("HEALTH", &format!("127.0.0.1:{health}")),
        )
        .unwrap();
        let log = dir.join(format!("{name}.log"));
        let archgate = env!("CARGO_BIN_EXE_archgate");
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(archgate);
                c
            }
            None => Command::new(archgate),
        };
        let child = command
            .args(["consume", "-c"])
            .arg(&cfg)
            .current_dir(dir)
            .env("HOME", dir)
            .env("ARCHGATE_CACHE_DIR", dir.join(format!("cache-{name}")))
            .env_remove("ARCHGATE_LOG")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Consumer { child, health, log }
    }

    /// (status, body) of GET PATH on the health address.
    pub fn get(&self, path: &str) -> (u16, String) {
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.health)) else {
            return (0, String::new());
        };
        let _ = s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
        (status, body)
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, sig: &str) {
        Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
    }

    /// Whether the process has exited (by itself or by a signal).
    pub fn exited(&mut self) -> bool {
        self.child.try_wait().unwrap().is_some()
    }

    /// Waits for the process to exit: its exit code.
    pub fn wait(&mut self, secs: u64) -> Option<i32> {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(secs) {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn wait_for(what: &str, secs: u64, f: impl FnMut() -> bool) {
    wait_or(what, secs, f, String::new);
}

/// [`wait_for`], saying `why()` (a consumer's log) when it times out.
pub fn wait_or(what: &str, secs: u64, mut f: impl FnMut() -> bool, why: impl Fn() -> String) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(secs) {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}\n{}", why());
}

/// A consumer's configuration; `composes` is the one allowed location.
pub fn config(rabbit: &Rabbit, host: &str, queue: &str, composes: &Path, extra: &str) -> String {
    format!(
        "[source]\nkind = \"pungi\"\n\n[registry.\"{host}\"]\ntls-verify = false\n\n[[image]]\nname = \"fedora\"\nmatch = {{ subvariant = \"Container_Base\" }}\nrepositories = [\"docker://{host}/fedora\", \"docker://{host}/mirror/fedora\"]\ntags = [\"{{release}}\", \"latest\"]\n\n[consume]\namqp-url = \"{}\"\nqueue = \"{queue}\"\nrouting-keys = [\"{TOPIC}\"]\npublish-topic-prefix = \"org.fedoraproject.test\"\nmax-attempts = 2\nretry-delay = \"1s\"\ntakeover-grace = \"1s\"\nhealth = \"HEALTH\"\nallowed-locations = [\"{}\"]\n{extra}",
        rabbit.url(),
        composes.display()
    )
}

/// The value of a metric line `NAME VALUE` in Prometheus text; 0 if absent.
pub fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

/// Publishes a Pungi status change through fedora-messaging.
pub fn announce(rabbit: &Rabbit, compose: &Path, id: &str, status: &str) {
    announce_at(&rabbit.url(), compose, id, status);
}

/// [`announce`] on the broker at `url`.
pub fn announce_at(url: &str, compose: &Path, id: &str, status: &str) {
    let body = serde_json::json!({
        "status": status,
        "compose_id": id,
        "location": format!("{}/compose", compose.display()),
        "compose_type": "nightly",
    });
    amqp_peer(&["publish", url, TOPIC, &body.to_string()]);
}

pub fn drain(rabbit: &Rabbit, queue: &str) -> Vec<Value> {
    drain_at(&rabbit.url(), queue)
}

/// [`drain`] on the broker at `url`.
pub fn drain_at(url: &str, queue: &str) -> Vec<Value> {
    serde_json::from_str(&amqp_peer(&["drain", url, queue])).unwrap()
}

/// The service tests' shared set-up: a temp dir holding the composes, a
/// RabbitMQ node, a registry and a proxy in front of it.
pub struct World {
    pub tmp: tempfile::TempDir,
    pub composes: PathBuf,
    pub rabbit: Rabbit,
    pub registry: Registry,
    pub proxy: Proxy,
}

impl World {
    /// With a plain node (guest on `/`).
    pub fn new() -> World {
        World::with_rabbit(|_| Rabbit::start())
    }

    /// With the node `start` makes in the temp dir.
    pub fn with_rabbit(start: impl FnOnce(&Path) -> Rabbit) -> World {
        let tmp = tempfile::tempdir().unwrap();
        let composes = composes(tmp.path());
        let rabbit = start(tmp.path());
        let registry = Registry::start(Auth::None);
        let proxy = Proxy::start(format!("http://{}", registry.host()));
        World {
            tmp,
            composes,
            rabbit,
            registry,
            proxy,
        }
    }

    pub fn dir(&self) -> &Path {
        self.tmp.path()
    }

    /// The registry as consumers reach it: through the proxy.
    pub fn host(&self) -> String {
        self.proxy.host()
    }

    /// A compose of the fixtures, by its directory name.
    pub fn compose(&self, name: &str) -> PathBuf {
        self.composes.join(name)
    }

    /// [`config`] for this world: its node, its proxy, its composes.
    pub fn config(&self, queue: &str, extra: &str) -> String {
        config(&self.rabbit, &self.host(), queue, &self.composes, extra)
    }

    /// A consumer, started and ready.
    pub fn start(&self, name: &str, cfg: &str) -> Consumer {
        Consumer::start(self.dir(), name, cfg)
    }

    /// What the registry itself holds under `repo:tag`.
    pub fn tag(&self, reference: &str) -> Option<(Value, String)> {
        super::registry_tag(&format!("{}/{reference}", self.registry.host()))
    }
}

/// FIU's broker user (the common name of its certificate) and its
/// containers queue, in production (fedora-infra/ansible).
pub const FIU_USER: &str = "cloud-image-uploader";
pub const FIU_QUEUE: &str = "cloud-image-uploader-containers";

/// What FIU's production file publishes results under (`topic_prefix`).
pub const FIU_RESULTS: &str = "org.fedoraproject.prod.fedora_image_uploader.published.v1.container";

/// A node set up as Fedora's broker and its roles set an app up (SPEC 8b):
/// amqps with client certificates and EXTERNAL, the vhost `/pubsub`, the
/// exchange `zmq.topic` beside `amq.topic`, and the app's user made as
/// `roles/rabbit/user` makes it: configure `^$`, and its read and write
/// strings as the role writes them; topic permissions as in staging.
/// Queues are made by the administrator, as `roles/rabbit/queue` makes
/// them ([`FedoraBroker::role_queue`]).
pub struct FedoraBroker {
    pub pki: Pki,
    pub tls_port: u16,
    /// The app's client pair (common name [`FIU_USER`]).
    pub client: (PathBuf, PathBuf),
}

/// The permission strings `roles/rabbit/user` gives an app that consumes
/// (`publish_only: false`, no `write_queues`).
pub fn role_permissions(user: &str) -> (String, String, String) {
    (
        "^$".to_string(),
        format!("^(amq\\.topic)|({user}.*)$"),
        format!("^(zmq\\.topic)|^(amq\\.topic)|({user}.*)$"),
    )
}

impl FedoraBroker {
    /// The node (in `world`'s start) and the broker's set-up.
    pub fn start(dir: &Path) -> (Rabbit, FedoraBroker) {
        let pki = Pki::new(&dir.join("pki"));
        let tls_port = free_port();
        let rabbit = Rabbit::tls(&pki, tls_port);
        let ctl = |args: &[&str]| {
            rabbit
                .ctl(args)
                .unwrap_or_else(|| panic!("rabbitmqctl {args:?} failed"))
        };
        ctl(&["add_vhost", "/pubsub"]);
        ctl(&[
            "set_permissions",
            "-p",
            "/pubsub",
            "guest",
            ".*",
            ".*",
            ".*",
        ]);
        ctl(&["add_user", FIU_USER, "unused"]);
        ctl(&["clear_password", FIU_USER]);
        let (configure, write, read) = role_permissions(FIU_USER);
        ctl(&[
            "set_permissions",
            "-p",
            "/pubsub",
            FIU_USER,
            &configure,
            &write,
            &read,
        ]);
        // Staging's topic permissions: read `.*`, write its sent topics.
        ctl(&[
            "set_topic_permissions",
            "-p",
            "/pubsub",
            FIU_USER,
            "amq.topic",
            &format!("^(org\\.fedoraproject\\.prod\\.fedora_image_uploader\\..*|{q}\\.failed|{q}\\.replay)$", q = FIU_QUEUE.replace('-', "\\-")),
            ".*",
        ]);
        let client = pki.client_named(FIU_USER);
        let broker = FedoraBroker {
            pki,
            tls_port,
            client,
        };
        amqp_peer(&["exchange", &broker.admin_url(&rabbit), "zmq.topic"]);
        (rabbit, broker)
    }

    /// The administrator on `/pubsub`.
    pub fn admin_url(&self, rabbit: &Rabbit) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2Fpubsub", rabbit.port)
    }

    /// What `roles/rabbit/queue` makes: a durable queue bound to
    /// `amq.topic` and `zmq.topic` with `keys`.
    pub fn role_queue(&self, rabbit: &Rabbit, queue: &str, keys: &[&str]) {
        let keys = serde_json::to_string(keys).unwrap();
        amqp_peer(&["role-queue", &self.admin_url(rabbit), queue, &keys]);
    }

    /// FIU's production configuration file (containers, production), as
    /// fedora-infra/ansible renders it, with what differs here put in:
    /// the broker's address, the TLS files' paths, the mail host; and
    /// `consumer_config` (archgate's tables) in place of FIU's.
    pub fn fiu_file(&self, smtp_port: u16, consumer_config: &str) -> String {
        let (cert, key) = &self.client;
        format!(
            r#"# FIU's production file (fedora-infra/ansible, cloud-image-uploader's
# config.toml, containers), its broker, TLS paths and mail host put in.
amqp_url = "amqps://{FIU_USER}:@localhost:{port}/%2Fpubsub"
callback = "fedora_image_uploader:Uploader"
passive_declares = true
publish_exchange = "amq.topic"
topic_prefix = "org.fedoraproject.prod"

[tls]
ca_cert = "{ca}"
keyfile = "{key}"
certfile = "{cert}"

[client_properties]
app = "Fedora Cloud Image Uploader (containers)"
app_url = "https://pagure.io/cloud-image-uploader"
app_contacts_email = "cloud@lists.fedoraproject.org"

[[bindings]]
queue = "{FIU_QUEUE}"
exchange = "amq.topic"
routing_keys = ["org.fedoraproject.*.pungi.compose.status.change"]

[queues."{FIU_QUEUE}"]
durable = true
auto_delete = false
exclusive = false
arguments = {{}}

{consumer_config}

[qos]
prefetch_size = 0
prefetch_count = 25

[log_config]
version = 1
disable_existing_loggers = true

[log_config.formatters.simple]
format = "[%(asctime)s %(name)s %(levelname)s] %(message)s"

[log_config.handlers.console]
class = "logging.StreamHandler"
formatter = "simple"
stream = "ext://sys.stdout"

[log_config.handlers.email]
class = "logging.handlers.SMTPHandler"
formatter = "simple"
level = "ERROR"
mailhost = ["127.0.0.1", {smtp_port}]
fromaddr = "fedora-image-uploader@fedoraproject.org"
toaddrs = ["releng@example.org"]
subject = "An error occurred in fedora-image-uploader"

[log_config.loggers.fedora_messaging]
level = "INFO"
propagate = false
handlers = ["console", "email"]

[log_config.loggers.fedora_image_uploader]
level = "INFO"
propagate = false
handlers = ["console", "email"]

[log_config.loggers.twisted]
level = "INFO"
propagate = false
handlers = ["console"]

[log_config.loggers.pika]
level = "WARNING"
propagate = false
handlers = ["console"]

[log_config.root]
level = "ERROR"
handlers = ["console", "email"]
"#,
            port = self.tls_port,
            ca = self.pki.server_ca.display(),
            key = key.display(),
            cert = cert.display(),
        )
    }
}

/// Waits until the queue holds nothing, ready or unacknowledged.
pub fn settled(rabbit: &Rabbit, queue: &str, secs: u64) {
    wait_for(&format!("{queue} to empty"), secs, || {
        rabbit.queue(queue) == Some((0, 0))
    });
}

/// A local SMTP server (aiosmtpd, tests/support/smtp_sink.py) on a free
/// port: what it took, mail by mail.
pub struct SmtpSink {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl SmtpSink {
    pub fn start() -> SmtpSink {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let python = std::env::var("ARCHGATE_PYTHON").unwrap_or_else(|_| "python3".into());
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/support/smtp_sink.py");
        let child = Command::new(python)
            .arg(script)
            .arg(port.to_string())
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("python3 with aiosmtpd is needed");
        let sink = SmtpSink { child, port, dir };
        wait_for("the SMTP server", 30, || {
            sink.dir.path().join("ready").exists()
        });
        sink
    }

    /// Every mail taken so far, in order, whole (headers and body).
    pub fn mails(&self) -> Vec<String> {
        (1..)
            .map(|n| self.dir.path().join(format!("{n}.eml")))
            .take_while(|p| p.exists())
            .map(|p| fs::read_to_string(p).unwrap())
            .collect()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
