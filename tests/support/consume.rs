//! The service's side of the tests: `archgate consume` started as a
//! process, its health address, its log; messages sent and read with
//! fedora-messaging (tests/support/amqp_peer.py).

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{amqp_peer, free_port, Rabbit};

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
        let health = free_port();
        let cfg = dir.join(format!("{name}.toml"));
        fs::write(
            &cfg,
            config.replace("HEALTH", &format!("127.0.0.1:{health}")),
        )
        .unwrap();
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_archgate"))
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

pub fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(secs) {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

/// A consumer's configuration; `composes` is the one allowed location.
pub fn config(rabbit: &Rabbit, host: &str, queue: &str, composes: &Path, extra: &str) -> String {
    format!(
        "[source]\nkind = \"pungi\"\n\n[registry.\"{host}\"]\ntls-verify = false\n\n[[image]]\nname = \"fedora\"\nmatch = {{ subvariant = \"Container_Base\" }}\nrepositories = [\"docker://{host}/fedora\", \"docker://{host}/mirror/fedora\"]\ntags = [\"{{release}}\", \"latest\"]\n\n[consume]\namqp-url = \"{}\"\nqueue = \"{queue}\"\nrouting-keys = [\"{TOPIC}\"]\npublish-topic-prefix = \"org.fedoraproject.test\"\nmax-attempts = 2\nretry-delay = \"1s\"\nhealth = \"HEALTH\"\nallowed-locations = [\"{}\"]\n{extra}",
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
    let body = serde_json::json!({
        "status": status,
        "compose_id": id,
        "location": format!("{}/compose", compose.display()),
        "compose_type": "nightly",
    });
    amqp_peer(&["publish", &rabbit.url(), TOPIC, &body.to_string()]);
}

pub fn drain(rabbit: &Rabbit, queue: &str) -> Vec<Value> {
    serde_json::from_str(&amqp_peer(&["drain", &rabbit.url(), queue])).unwrap()
}

/// Waits until the queue holds nothing, ready or unacknowledged.
pub fn settled(rabbit: &Rabbit, queue: &str, secs: u64) {
    wait_for(&format!("{queue} to empty"), secs, || {
        rabbit.queue(queue) == Some((0, 0))
    });
}
