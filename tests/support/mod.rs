//! What the registry tests start: Debian's `docker-registry` on a free port
//! in a temp dir (plain, htpasswd, or token auth), a small token server, and
//! a proxy that records requests and injects faults in front of it.

#![allow(dead_code)]

pub mod consume;

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

pub type Body = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Serves `handler` on 127.0.0.1 on a free port until dropped.
pub struct Server {
    pub addr: SocketAddr,
    _rt: tokio::runtime::Runtime,
}

impl Server {
    pub fn start<H, F>(handler: H) -> Server
    where
        H: Fn(Request<Incoming>) -> F + Send + Sync + Clone + 'static,
        F: std::future::Future<Output = Result<Response<Body>, std::io::Error>> + Send + 'static,
    {
        let rt = runtime();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        rt.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let handler = handler.clone();
                tokio::spawn(async move {
                    let svc = service_fn(handler);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Server { addr, _rt: rt }
    }
}

pub fn respond(status: u16, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::builder().status(status);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.body(full(body.into())).unwrap()
}

fn full(bytes: Bytes) -> Body {
    Full::new(bytes).map_err(|e| match e {}).boxed()
}

/// A body that sends `data`, then breaks (the connection is closed short of
/// the length its headers said). Once between the two it is not ready, so
/// that hyper sends what it has before the break.
struct Broken(Option<Bytes>, bool);

impl hyper::body::Body for Broken {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
        if let Some(data) = self.0.take() {
            return std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(data))));
        }
        if !self.1 {
            self.1 = true;
            cx.waker().wake_by_ref();
            return std::task::Poll::Pending;
        }
        std::task::Poll::Ready(Some(Err(std::io::Error::other("cut off (test)"))))
    }
}

/// How the registry authenticates.
pub enum Auth {
    None,
    /// htpasswd basic auth with this user and password.
    Basic(&'static str, &'static str),
    /// Bearer tokens from a [`TokenServer`].
    Token(Arc<TokenServer>),
}

/// A running `docker-registry serve`.
pub struct Registry {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Child,
    pub auth: Auth,
}

/// TLS for a test registry: its certificate and key, and the CA whose
/// client certificates it requires (mutual TLS), if any.
pub struct RegistryTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

/// A test PKI made with openssl: a server CA and a server certificate for
/// 127.0.0.1, a client CA with a client pair, and a second, unrelated CA
/// with a client pair of its own.
pub struct Pki {
    pub dir: PathBuf,
    pub server_ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_ca: PathBuf,
    /// (cert, key) signed by `client_ca`.
    pub client: (PathBuf, PathBuf),
    /// (cert, key) signed by another CA.
    pub stranger: (PathBuf, PathBuf),
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is needed (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const CLIENT_EXT: &str = "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n";

impl Pki {
    /// A leaf certificate `name.crt` (with `name.key`) of common name `cn`,
    /// signed by the CA `ca`, with the extensions `ext`.
    fn leaf(dir: &Path, name: &str, cn: &str, ca: &str, ext: &str) {
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                &format!("/CN={cn}"),
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
            ],
        );
        std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                &format!("{ca}.crt"),
                "-CAkey",
                &format!("{ca}.key"),
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &format!("{name}.ext"),
                "-out",
                &format!("{name}.crt"),
            ],
        );
    }

    /// A client pair whose common name is `cn` (a broker user, as Fedora
    /// names them), signed by the client CA.
    pub fn client_named(&self, cn: &str) -> (PathBuf, PathBuf) {
        let name = format!("client-{cn}");
        Pki::leaf(&self.dir, &name, cn, "client-ca", CLIENT_EXT);
        (
            self.dir.join(format!("{name}.crt")),
            self.dir.join(format!("{name}.key")),
        )
    }

    pub fn new(dir: &Path) -> Pki {
        std::fs::create_dir_all(dir).unwrap();
        let ca = |name: &str| {
            openssl(
                dir,
                &[
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-days",
                    "2",
                    "-subj",
                    &format!("/CN=archgate test {name}"),
                    "-keyout",
                    &format!("{name}.key"),
                    "-out",
                    &format!("{name}.crt"),
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign",
                ],
            );
        };
        ca("server-ca");
        ca("client-ca");
        ca("stranger-ca");
        let leaf = |name: &str, ca: &str, ext: &str| {
            Pki::leaf(dir, name, &format!("archgate test {name}"), ca, ext)
        };
        leaf(
            "server",
            "server-ca",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
        );
        leaf("client", "client-ca", CLIENT_EXT);
        leaf("stranger", "stranger-ca", CLIENT_EXT);
        let p = |n: &str| dir.join(n);
        Pki {
            dir: dir.to_path_buf(),
            server_ca: p("server-ca.crt"),
            server_cert: p("server.crt"),
            server_key: p("server.key"),
            client_ca: p("client-ca.crt"),
            client: (p("client.crt"), p("client.key")),
            stranger: (p("stranger.crt"), p("stranger.key")),
        }
    }

    /// A containers-certs.d(5) directory: the server CA as `ca.crt`, and
    /// the given client pair as `client.cert` + `client.key`.
    pub fn cert_dir(&self, dir: &Path, pair: Option<&(PathBuf, PathBuf)>) -> PathBuf {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::copy(&self.server_ca, dir.join("ca.crt")).unwrap();
        if let Some((cert, key)) = pair {
            std::fs::copy(cert, dir.join("client.cert")).unwrap();
            std::fs::copy(key, dir.join("client.key")).unwrap();
        }
        dir.to_path_buf()
    }

    pub fn tls(&self, mutual: bool) -> RegistryTls {
        RegistryTls {
            cert: self.server_cert.clone(),
            key: self.server_key.clone(),
            client_ca: mutual.then(|| self.client_ca.clone()),
        }
    }
}

impl Registry {
    pub fn start(auth: Auth) -> Registry {
        Registry::start_with(auth, None)
    }

    pub fn start_with(auth: Auth, tls: Option<RegistryTls>) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let auth_yaml = match &auth {
            Auth::None => String::new(),
            Auth::Basic(user, pass) => {
                let out = Command::new("htpasswd")
                    .args(["-Bbn", user, pass])
                    .output()
                    .expect("htpasswd is needed (apt-get install apache2-utils)");
                assert!(out.status.success());
                let file = dir.path().join("htpasswd");
                std::fs::write(&file, out.stdout).unwrap();
                format!("auth:\n  htpasswd:\n    realm: archgate-test\n    path: {}\n", file.display())
            }
            Auth::Token(ts) => format!(
                "auth:\n  token:\n    realm: http://{}/token\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                ts.server.addr,
                TokenServer::SERVICE,
                TokenServer::ISSUER,
                ts.cert.display()
            ),
        };
        let tls_yaml = match &tls {
            None => String::new(),
            Some(t) => {
                let mut y = format!(
                    "  tls:\n    certificate: {}\n    key: {}\n",
                    t.cert.display(),
                    t.key.display()
                );
                if let Some(ca) = &t.client_ca {
                    y.push_str(&format!("    clientcas:\n      - {}\n", ca.display()));
                }
                y
            }
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:0\n{tls_yaml}{auth_yaml}",
            dir.path().join("data").display()
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let mut child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .env("REGISTRY_HTTP_ADDR", "127.0.0.1:0")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect(
                "docker-registry is needed by the registry tests (apt-get install docker-registry)",
            );
        let (tx, rx) = mpsc::channel();
        for pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                // Keep draining so that the registry never blocks on a full pipe.
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if let Some(rest) = line.split("listening on 127.0.0.1:").nth(1) {
                        let port: String = rest.chars().take_while(char::is_ascii_digit).collect();
                        let _ = tx.send(port.parse::<u16>().unwrap());
                    }
                }
            });
        }
        let port = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("docker-registry did not say where it listens");
        Registry {
            port,
            dir,
            child,
            auth,
        }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A token server for the registry's token auth: checks basic credentials
/// and issues RS256 JWTs whose `x5c` header carries its certificate.
pub struct TokenServer {
    pub server: Server,
    pub cert: PathBuf,
    _dir: tempfile::TempDir,
    pub issued: Arc<AtomicUsize>,
    /// When set, the first token issued for each set of scopes is already
    /// expired, as if it had run out in the middle of a publish.
    pub expire_first: Arc<AtomicBool>,
    /// Every set of scopes a token was asked for.
    pub scopes_seen: Arc<Mutex<std::collections::HashSet<String>>>,
}

impl TokenServer {
    pub const SERVICE: &'static str = "archgate-test";
    pub const ISSUER: &'static str = "archgate-test-issuer";

    pub fn start(user: &'static str, password: &'static str) -> Arc<TokenServer> {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key.pem");
        let cert = dir.path().join("cert.pem");
        let out = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=archgate-test-token",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("openssl is needed by the token tests (apt-get install openssl)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let der = Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(&cert)
            .output()
            .unwrap()
            .stdout;
        let x5c = base64::engine::general_purpose::STANDARD.encode(der);
        let issued = Arc::new(AtomicUsize::new(0));
        let expire = Arc::new(AtomicBool::new(false));
        let (i2, e2) = (issued.clone(), expire.clone());
        let scopes_seen: Arc<Mutex<std::collections::HashSet<String>>> = Default::default();
        let seen = scopes_seen.clone();
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        );
        let server = Server::start(move |req: Request<Incoming>| {
            let (key, x5c, issued, expire, expected, seen) = (
                key.clone(),
                x5c.clone(),
                i2.clone(),
                e2.clone(),
                expected.clone(),
                seen.clone(),
            );
            async move {
                let authorized = req
                    .headers()
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    == Some(expected.as_str());
                if !authorized {
                    return Ok(respond(401, &[], "bad credentials"));
                }
                let query = req.uri().query().unwrap_or("").to_string();
                let mut access = Vec::new();
                for pair in query.split('&') {
                    if let Some(scope) = pair.strip_prefix("scope=") {
                        let scope = percent_decode(scope);
                        let parts: Vec<&str> = scope.split(':').collect();
                        if parts.len() == 3 {
                            access.push(serde_json::json!({"type": parts[0], "name": parts[1], "actions": parts[2].split(',').collect::<Vec<_>>()}));
                        }
                    }
                }
                let n = issued.fetch_add(1, Ordering::SeqCst) + 1;
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs() as i64;
                let first_for_scopes = seen.lock().unwrap().insert(query.clone());
                let expired = expire.load(Ordering::SeqCst) && first_for_scopes;
                let exp = if expired { now - 3600 } else { now + 600 };
                let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [x5c]});
                let claims = serde_json::json!({
                    "iss": TokenServer::ISSUER, "sub": "rel", "aud": TokenServer::SERVICE,
                    "exp": exp, "nbf": exp - 7200, "iat": exp - 7200, "jti": format!("t{n}"), "access": access,
                });
                let b64 = |v: &serde_json::Value| {
                    base64::engine::general_purpose::URL_SAFE_NO_PAD
                        .encode(serde_json::to_vec(v).unwrap())
                };
                let signing_input = format!("{}.{}", b64(&header), b64(&claims));
                let mut child = Command::new("openssl")
                    .args(["dgst", "-sha256", "-sign"])
                    .arg(&key)
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .spawn()?;
                use std::io::Write;
                child
                    .stdin
                    .take()
                    .unwrap()
                    .write_all(signing_input.as_bytes())?;
                let sig = child.wait_with_output()?.stdout;
                let jwt = format!(
                    "{signing_input}.{}",
                    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sig)
                );
                let body =
                    serde_json::json!({"token": jwt, "access_token": jwt, "expires_in": 600});
                Ok(respond(
                    200,
                    &[("content-type", "application/json")],
                    body.to_string(),
                ))
            }
        });
        Arc::new(TokenServer {
            server,
            cert,
            _dir: dir,
            issued,
            expire_first: expire,
            scopes_seen,
        })
    }
}

pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

/// What the proxy does to a matching request.
#[derive(Clone)]
pub enum FaultKind {
    /// Answer with this status (and `Retry-After`, if given) instead of forwarding.
    Status(u16, Option<&'static str>),
    /// Close the connection without an answer.
    Drop,
    /// Forward a mount request without `mount`/`from`, so the registry opens
    /// an upload session and answers 202.
    DeclineMount,
    /// Wait this long, then forward.
    Delay(Duration),
    /// Forward, then answer with the body cut in half (the connection ends
    /// before the Content-Length it announces).
    Truncate,
    /// First PUT these manifest bytes under this path upstream, then forward.
    PutFirst {
        path: String,
        media_type: String,
        bytes: Vec<u8>,
    },
    /// Hold the request until the gate is released, then forward it.
    Hold(Arc<HoldGate>),
}

/// Requests held by the proxy until the test releases them: a state that
/// lasts until the test ends it, so a test can wait for it without racing.
pub struct HoldGate {
    held: AtomicUsize,
    open: tokio::sync::watch::Sender<bool>,
}

impl HoldGate {
    /// A gate holding nothing yet, for a [`Fault`] of the test's own.
    pub fn new() -> HoldGate {
        HoldGate {
            held: AtomicUsize::new(0),
            open: tokio::sync::watch::channel(false).0,
        }
    }

    /// Waits until at least `n` requests are held (they stay held).
    pub fn wait_held(&self, n: usize, secs: u64) {
        let start = std::time::Instant::now();
        while self.held.load(Ordering::SeqCst) < n {
            assert!(
                start.elapsed() < Duration::from_secs(secs),
                "timed out waiting for {n} held request(s)"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// How many requests have been held so far.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::SeqCst)
    }

    /// Lets every held request, and every later one, through.
    pub fn release(&self) {
        self.open.send_replace(true);
    }

    /// Holds the caller (a request of a server of the test's own) until
    /// the gate is released; counted as held.
    pub async fn pass(&self) {
        let mut open = self.open.subscribe();
        self.held.fetch_add(1, Ordering::SeqCst);
        let _ = open.wait_for(|o| *o).await;
    }
}

#[derive(Clone)]
pub struct Fault {
    pub method: &'static str,
    pub path_contains: String,
    /// Skip this many matching requests first.
    pub skip: usize,
    /// Then act on this many.
    pub times: usize,
    pub kind: FaultKind,
}

/// What the proxy saw of a tag PUT while watching signatures: the path,
/// the digest of the manifest put, and whether its signature
/// (`sha256-HEX.sig`) was in the registry at that moment.
pub type TagPut = (String, String, bool);

/// A recording, fault-injecting proxy in front of a registry.
pub struct Proxy {
    pub server: Server,
    pub log: Arc<Mutex<Vec<(String, String, u16)>>>,
    /// Requests that reached the proxy, counted as they arrive (the log
    /// has them once answered).
    pub arrived: Arc<AtomicUsize>,
    pub faults: Arc<Mutex<VecDeque<Fault>>>,
    /// When set, every manifest PUT under a tag (not a digest, not a
    /// signature tag) is checked against the registry first.
    pub tag_puts: Arc<Mutex<Option<Vec<TagPut>>>>,
}

/// The manifest PUT under a tag (not a digest, not a `.sig` tag) that a
/// request is: its repository and tag.
fn tag_put(method: &str, path: &str) -> Option<(String, String)> {
    let rest = path.strip_prefix("/v2/")?;
    let (repo, reference) = rest.rsplit_once("/manifests/")?;
    let plain =
        method == "PUT" && !reference.starts_with("sha256:") && !reference.ends_with(".sig");
    plain.then(|| (repo.to_string(), reference.to_string()))
}

impl Proxy {
    pub fn start(upstream: String) -> Proxy {
        let log = Arc::new(Mutex::new(Vec::new()));
        let faults: Arc<Mutex<VecDeque<Fault>>> = Arc::new(Mutex::new(VecDeque::new()));
        let client = reqwest::Client::new();
        let me: Arc<Mutex<String>> = Arc::new(Mutex::new(String::new()));
        let tag_puts: Arc<Mutex<Option<Vec<TagPut>>>> = Default::default();
        let arrived = Arc::new(AtomicUsize::new(0));
        let (l2, f2, me2, w2) = (log.clone(), faults.clone(), me.clone(), tag_puts.clone());
        let a2 = arrived.clone();
        let server = Server::start(move |req: Request<Incoming>| {
            let (log, faults, client, upstream, me, watch) = (
                l2.clone(),
                f2.clone(),
                client.clone(),
                upstream.clone(),
                me2.clone(),
                w2.clone(),
            );
            a2.fetch_add(1, Ordering::SeqCst);
            async move {
                let method = req.method().to_string();
                let mut path_q = req
                    .uri()
                    .path_and_query()
                    .map(|p| p.to_string())
                    .unwrap_or_default();
                let asked = path_q.clone();
                let mut action = None;
                {
                    let mut faults = faults.lock().unwrap();
                    // A NUL marks the end of the path: `/manifests/41\0`
                    // matches that path only, not `/manifests/41-x86_64`.
                    let ended = format!("{path_q}\0");
                    for f in faults.iter_mut() {
                        if f.method == method && ended.contains(&f.path_contains) {
                            if f.skip > 0 {
                                f.skip -= 1;
                            } else if f.times > 0 {
                                f.times -= 1;
                                action = Some(f.kind.clone());
                            }
                            break;
                        }
                    }
                }
                let headers = req.headers().clone();
                let body = req
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                let watching = watch.lock().unwrap().is_some();
                if let (true, Some((repo, _))) = (watching, tag_put(&method, &path_q)) {
                    let digest = sha256(&body);
                    let sig = format!(
                        "{upstream}/v2/{repo}/manifests/{}.sig",
                        digest.replacen(':', "-", 1)
                    );
                    let there = client
                        .head(sig)
                        .header("accept", "application/vnd.oci.image.manifest.v1+json")
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success());
                    if let Some(seen) = watch.lock().unwrap().as_mut() {
                        seen.push((path_q.clone(), digest, there));
                    }
                }
                let truncate = matches!(action, Some(FaultKind::Truncate));
                match action {
                    Some(FaultKind::Truncate) => {}
                    Some(FaultKind::Status(code, retry_after)) => {
                        log.lock().unwrap().push((method, path_q, code));
                        let h: Vec<(&str, &str)> = retry_after
                            .map(|r| vec![("retry-after", r)])
                            .unwrap_or_default();
                        return Ok(respond(code, &h, "{\"errors\":[{\"code\":\"INJECTED\",\"message\":\"injected by the test proxy\"}]}"));
                    }
                    Some(FaultKind::Drop) => {
                        log.lock().unwrap().push((method, path_q, 0));
                        return Err(std::io::Error::other("dropped by the test proxy"));
                    }
                    Some(FaultKind::DeclineMount) => {
                        path_q = path_q.split('?').next().unwrap().to_string();
                    }
                    Some(FaultKind::Delay(d)) => tokio::time::sleep(d).await,
                    Some(FaultKind::Hold(gate)) => {
                        let mut open = gate.open.subscribe();
                        gate.held.fetch_add(1, Ordering::SeqCst);
                        let _ = open.wait_for(|o| *o).await;
                    }
                    Some(FaultKind::PutFirst {
                        path,
                        media_type,
                        bytes,
                    }) => {
                        let r = client
                            .put(format!("{upstream}{path}"))
                            .header("content-type", media_type)
                            .body(bytes)
                            .send()
                            .await
                            .unwrap();
                        assert!(r.status().is_success(), "proxy PutFirst: {}", r.status());
                    }
                    None => {}
                }
                let mut fwd = client.request(
                    reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                    format!("{upstream}{path_q}"),
                );
                for (k, v) in headers.iter() {
                    if k != "host" {
                        fwd = fwd.header(k, v);
                    }
                }
                let resp = match fwd.body(body).send().await {
                    Ok(r) => r,
                    Err(e) => return Err(std::io::Error::other(e.to_string())),
                };
                let status = resp.status().as_u16();
                log.lock().unwrap().push((method, asked, status));
                let mut out = Response::builder().status(StatusCode::from_u16(status).unwrap());
                let me = me.lock().unwrap().clone();
                for (k, v) in resp.headers() {
                    if k == "location" {
                        let v = v.to_str().unwrap().replace(&upstream, &me);
                        out = out.header(k, v);
                    } else if k != "content-length" && k != "transfer-encoding" {
                        out = out.header(k, v);
                    }
                }
                let bytes = resp.bytes().await.unwrap_or_default();
                if truncate && bytes.len() > 1 {
                    let half = bytes.slice(..bytes.len() / 2);
                    out = out.header("content-length", bytes.len().to_string());
                    return Ok(out.body(full(half)).unwrap());
                }
                Ok(out.body(full(bytes)).unwrap())
            }
        });
        *me.lock().unwrap() = format!("http://{}", server.addr);
        Proxy {
            server,
            log,
            arrived,
            faults,
            tag_puts,
        }
    }

    /// How many requests have reached the proxy so far.
    pub fn arrivals(&self) -> usize {
        self.arrived.load(Ordering::SeqCst)
    }

    /// From now on, checks at every tag PUT whether the signature of the
    /// manifest put is already in the registry (see [`Proxy::tag_puts`]).
    pub fn watch_signatures(&self) {
        *self.tag_puts.lock().unwrap() = Some(Vec::new());
    }

    /// Every tag PUT seen while watching: (path, digest, signed then).
    pub fn tag_puts(&self) -> Vec<TagPut> {
        self.tag_puts.lock().unwrap().clone().unwrap_or_default()
    }

    pub fn host(&self) -> String {
        self.server.addr.to_string()
    }

    pub fn fault(&self, f: Fault) {
        self.faults.lock().unwrap().push_back(f);
    }

    /// Holds every `method` request whose path contains `path` (end it with
    /// `\0` to match the end of the path) until the gate is released.
    pub fn hold(&self, method: &'static str, path: &str) -> Arc<HoldGate> {
        let gate = Arc::new(HoldGate::new());
        self.fault(Fault {
            method,
            path_contains: path.into(),
            skip: 0,
            times: usize::MAX,
            kind: FaultKind::Hold(gate.clone()),
        });
        gate
    }

    pub fn clear_log(&self) {
        self.log.lock().unwrap().clear();
    }

    /// Drops every fault not used up yet.
    pub fn clear_faults(&self) {
        self.faults.lock().unwrap().clear();
    }

    /// (method, path and query, status) of every request seen, in order.
    pub fn requests(&self) -> Vec<(String, String, u16)> {
        self.log.lock().unwrap().clone()
    }

    pub fn count(&self, method: &str, path_contains: &str) -> usize {
        self.requests()
            .iter()
            .filter(|(m, p, _)| m == method && p.contains(path_contains))
            .count()
    }
}

/// Request lines with their connection's number, and a signal for each new one.
type Lines = (Mutex<Vec<(usize, String)>>, std::sync::Condvar);

/// A TCP relay in front of a server that records, per connection, the
/// HTTP/1.1 request lines that went over it (`METHOD PATH`), so a test can
/// tell which requests shared a connection. Lines are found in the byte
/// stream as it passes (a request body that held such a line would be
/// taken for one; the blobs of the tests hold none).
pub struct Connections {
    pub addr: SocketAddr,
    /// Every request line in the order it passed, with its connection.
    seen: Arc<Lines>,
}

impl Connections {
    pub fn start(upstream: SocketAddr) -> Connections {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Lines> = Default::default();
        let all = seen.clone();
        std::thread::spawn(move || {
            for (id, client) in listener.incoming().flatten().enumerate() {
                let Ok(server) = std::net::TcpStream::connect(upstream) else {
                    continue;
                };
                let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut s2, &mut c2);
                    let _ = c2.shutdown(std::net::Shutdown::Write);
                });
                let all = all.clone();
                std::thread::spawn(move || relay_recording(client, server, id, &all));
            }
        });
        Connections { addr, seen }
    }

    /// Every request line so far (`METHOD PATH`) with the number of its
    /// connection (in the order connections were opened), in the order the
    /// lines passed.
    pub fn lines(&self) -> Vec<(usize, String)> {
        self.seen.0.lock().unwrap().clone()
    }

    /// Waits until `done` holds of the lines (asked again at each new
    /// line); panics after a minute.
    pub fn wait_until(&self, done: impl Fn(&[(usize, String)]) -> bool) {
        let (lock, changed) = &*self.seen;
        let lines = lock.lock().unwrap();
        let (lines, timeout) = changed
            .wait_timeout_while(lines, Duration::from_secs(60), |l| !done(l))
            .unwrap();
        assert!(!timeout.timed_out(), "never came: {:?}", *lines);
    }
}

fn relay_recording(
    mut from: std::net::TcpStream,
    mut to: std::net::TcpStream,
    id: usize,
    seen: &Lines,
) {
    use std::io::{Read, Write};
    let mut buf = [0u8; 64 * 1024];
    let mut line: Vec<u8> = Vec::new();
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for &b in &buf[..n] {
            if b != b'\n' {
                if line.len() < 4096 {
                    line.push(b);
                }
                continue;
            }
            let text = String::from_utf8_lossy(&line).trim_end().to_string();
            line.clear();
            let mut words = text.split(' ');
            if let (Some(method), Some(path), Some("HTTP/1.1"), None) =
                (words.next(), words.next(), words.next(), words.next())
            {
                let methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"];
                if methods.contains(&method) && path.starts_with("/v2/") {
                    seen.0
                        .lock()
                        .unwrap()
                        .push((id, format!("{method} {path}")));
                    seen.1.notify_all();
                }
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

/// Runs the archgate binary in `dir`: (exit code, stdout, stderr).
pub fn archgate(dir: &Path, args: &[&str]) -> (i32, String, String) {
    archgate_env(dir, args, &[])
}

/// [`archgate`] with more environment variables (set last, so they may
/// override). The run is hermetic: `HOME` is `dir`, the artifact cache is
/// `dir/cache`, and no auth file or log filter of the machine running the
/// tests is seen. Every report it prints (`--format json`) or writes
/// (`--report FILE`) is checked against `docs/report.schema.json`.
pub fn archgate_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_archgate"));
    cmd.args(args)
        .current_dir(dir)
        .env("HOME", dir)
        .env("ARCHGATE_CACHE_DIR", dir.join("cache"));
    for k in [
        "ARCHGATE_LOG",
        "REGISTRY_AUTH_FILE",
        "XDG_RUNTIME_DIR",
        "DOCKER_CONFIG",
        "XDG_CACHE_HOME",
    ] {
        cmd.env_remove(k);
    }
    let out = cmd.envs(env.iter().copied()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if matches!(args.first(), Some(&"plan" | &"publish")) {
        if let Ok(report) = serde_json::from_str::<serde_json::Value>(&stdout) {
            check_report(&report);
        }
        if let Some(i) = args.iter().position(|a| *a == "--report") {
            if let Ok(bytes) = std::fs::read(dir.join(args[i + 1])) {
                check_report(&serde_json::from_slice(&bytes).expect("the report file is JSON"));
            }
        }
    }
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `skopeo inspect --raw` of a reference on a plain-HTTP registry.
pub fn skopeo_raw(reference: &str, creds: Option<&str>) -> Option<Vec<u8>> {
    skopeo_raw_with(reference, creds, None)
}

/// [`skopeo_raw`] with a cert dir (CA and client pair) for a TLS registry.
pub fn skopeo_raw_with(
    reference: &str,
    creds: Option<&str>,
    cert_dir: Option<&Path>,
) -> Option<Vec<u8>> {
    let mut cmd = Command::new("skopeo");
    cmd.args(["inspect", "--raw"]);
    match cert_dir {
        Some(d) => {
            cmd.arg("--tls-verify=true")
                .arg(format!("--cert-dir={}", d.display()));
        }
        None => {
            cmd.arg("--tls-verify=false");
        }
    }
    if let Some(c) = creds {
        cmd.args(["--creds", c]);
    }
    let out = cmd
        .arg(format!("docker://{reference}"))
        .output()
        .expect("skopeo is needed (apt-get install skopeo)");
    out.status.success().then_some(out.stdout)
}

/// What a tag holds, read straight from the registry: the raw manifest or
/// index as JSON, and its digest. `None` when the tag does not exist.
pub fn registry_tag(reference: &str) -> Option<(serde_json::Value, String)> {
    let raw = skopeo_raw(reference, None)?;
    Some((serde_json::from_slice(&raw).unwrap(), sha256(&raw)))
}

/// The tags of a repository on a plain-HTTP registry, sorted.
pub fn registry_tags(repository: &str) -> Vec<String> {
    let out = Command::new("skopeo")
        .args(["list-tags", "--tls-verify=false"])
        .arg(format!("docker://{repository}"))
        .output()
        .expect("skopeo is needed (apt-get install skopeo)");
    if !out.status.success() {
        return Vec::new();
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut tags: Vec<String> = v["Tags"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    tags.sort();
    tags
}

/// `os/architecture[/variant]` of each entry of an index, in order.
pub fn index_platforms(index: &serde_json::Value) -> Vec<String> {
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let p = &m["platform"];
            let mut s = format!(
                "{}/{}",
                p["os"].as_str().unwrap(),
                p["architecture"].as_str().unwrap()
            );
            if let Some(v) = p["variant"].as_str() {
                s.push('/');
                s.push_str(v);
            }
            s
        })
        .collect()
}

/// The paths a [`serve_dir`] server was asked for, in order.
pub type Log = Arc<Mutex<Vec<String>>>;

/// A static file server for a directory, as a compose is served: `GET
/// /PATH` gives `root/PATH`; `/fail/...` answers 500. Notes every path
/// asked for (without the leading `/`). No Range requests.
pub fn serve_dir(root: PathBuf) -> (Server, Log) {
    let (server, served) = serve_compose(root, Serving::default());
    (server, served.log)
}

/// How [`serve_compose`] serves.
#[derive(Clone, Default)]
pub struct Serving {
    /// Offer Range requests (`Accept-Ranges: bytes`, an `ETag`, 206
    /// answers), as Fedora's compose servers do.
    pub ranges: bool,
    /// The first GET of the path ending so is cut off (the connection
    /// closed) after this many bytes.
    pub cut: Option<(String, usize)>,
    /// GETs of a path ending so wait until the gate is opened.
    pub hold: Option<(String, Gate)>,
}

/// A gate that requests wait at until the test opens it.
#[derive(Clone)]
pub struct Gate(Arc<tokio::sync::Semaphore>);

impl Default for Gate {
    fn default() -> Gate {
        Gate(Arc::new(tokio::sync::Semaphore::new(0)))
    }
}

impl Gate {
    pub fn open(&self) {
        self.0.add_permits(tokio::sync::Semaphore::MAX_PERMITS / 2);
    }
}

/// What a [`serve_compose`] server saw: each path asked for, each Range
/// asked for (path, header), and the bytes of files it sent.
#[derive(Clone, Default)]
pub struct Served {
    pub log: Log,
    pub ranges: Arc<Mutex<Vec<(String, String)>>>,
    pub bytes: Arc<AtomicUsize>,
}

/// [`serve_dir`], as `how` says: with Range requests, a transfer cut off,
/// a request held.
pub fn serve_compose(root: PathBuf, how: Serving) -> (Server, Served) {
    let served = Served::default();
    let seen = served.clone();
    let cut_done = Arc::new(AtomicBool::new(false));
    let server = Server::start(move |req: Request<Incoming>| {
        let (root, seen, how, cut_done) =
            (root.clone(), seen.clone(), how.clone(), cut_done.clone());
        async move {
            let path = percent_decode(req.uri().path());
            let path = path.trim_start_matches('/').to_string();
            seen.log.lock().unwrap().push(path.clone());
            if path.starts_with("fail/") {
                return Ok(respond(500, &[], "boom"));
            }
            if path.split('/').any(|c| c == "..") {
                return Ok(respond(400, &[], ""));
            }
            if let Some((end, gate)) = &how.hold {
                if path.ends_with(end.as_str()) {
                    let _ = gate.0.acquire().await;
                }
            }
            let Ok(bytes) = std::fs::read(root.join(&path)) else {
                return Ok(respond(404, &[], "not found"));
            };
            let etag = format!("\"{}\"", &sha256(&bytes)[7..23]);
            let range = req
                .headers()
                .get("range")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let (status, body) = match (&range, how.ranges) {
                (Some(r), true) => {
                    seen.ranges.lock().unwrap().push((path.clone(), r.clone()));
                    let same = req
                        .headers()
                        .get("if-range")
                        .is_none_or(|v| v.to_str().ok() == Some(etag.as_str()));
                    let from: usize = r
                        .strip_prefix("bytes=")
                        .and_then(|r| r.strip_suffix('-'))
                        .and_then(|n| n.parse().ok())
                        .unwrap();
                    match same {
                        true => (206, bytes[from.min(bytes.len())..].to_vec()),
                        false => (200, bytes),
                    }
                }
                _ => (200, bytes),
            };
            let whole = body.len();
            let mut headers = vec![("content-length".to_string(), whole.to_string())];
            if how.ranges {
                headers.push(("accept-ranges".into(), "bytes".into()));
                headers.push(("etag".into(), etag));
            }
            if status == 206 {
                let start = std::fs::metadata(root.join(&path)).unwrap().len() as usize - whole;
                let total = start + whole;
                headers.push((
                    "content-range".into(),
                    format!("bytes {start}-{}/{total}", total - 1),
                ));
            }
            let headers: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            if let Some((end, n)) = &how.cut {
                if path.ends_with(end.as_str()) && !cut_done.swap(true, Ordering::SeqCst) {
                    // Says the whole length, sends `n` bytes, breaks.
                    let part = Bytes::from(body[..*n].to_vec());
                    seen.bytes.fetch_add(part.len(), Ordering::SeqCst);
                    let mut r = Response::builder().status(status);
                    for (k, v) in &headers {
                        r = r.header(*k, *v);
                    }
                    return Ok(r.body(Broken(Some(part), false).boxed()).unwrap());
                }
            }
            seen.bytes.fetch_add(body.len(), Ordering::SeqCst);
            Ok(respond(status, &headers, body))
        }
    });
    (server, served)
}

/// The report schema of the project's docs.
pub fn report_schema() -> &'static jsonschema::Validator {
    static SCHEMA: std::sync::OnceLock<jsonschema::Validator> = std::sync::OnceLock::new();
    SCHEMA.get_or_init(|| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/report.schema.json");
        let schema: serde_json::Value =
            serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        jsonschema::validator_for(&schema).expect("docs/report.schema.json is a valid schema")
    })
}

/// Panics, listing every violation, when `report` does not follow the schema.
pub fn check_report(report: &serde_json::Value) {
    let errors: Vec<String> = report_schema()
        .iter_errors(report)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "the report breaks docs/report.schema.json: {errors:#?}\n{report:#}"
    );
}

pub fn sha256(bytes: &[u8]) -> String {
    archgate_native::sha256_digest(bytes)
}

pub fn path_str(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

/// A free TCP port on 127.0.0.1 (free when asked; taken by the caller soon after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// How a test's RabbitMQ node is set up: `rabbitmq.conf` lines (`DIR` is
/// the node's own directory) and the plugins to enable.
#[derive(Default)]
pub struct RabbitSetup {
    pub conf: String,
    pub plugins: Vec<&'static str>,
}

/// A private RabbitMQ node (Debian's rabbitmq-server, not the system
/// service) on free loopback ports, in a temp dir; stopped when dropped.
pub struct Rabbit {
    pub port: u16,
    pub node: String,
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
    child: Child,
}

impl Rabbit {
    pub fn start() -> Rabbit {
        Rabbit::start_with(&RabbitSetup::default())
    }

    /// A node set up as `setup` says. A node that does not come up (a
    /// port taken between its choice and the node's start, on a busy
    /// machine) is tried again on new ports, twice at most; then the test
    /// fails with what the node printed.
    pub fn start_with(setup: &RabbitSetup) -> Rabbit {
        let mut last = String::new();
        for _ in 0..3 {
            match Rabbit::try_start(setup) {
                Ok(rabbit) => return rabbit,
                Err(output) => last = output,
            }
        }
        panic!("the RabbitMQ node did not start:\n{last}");
    }

    fn try_start(setup: &RabbitSetup) -> Result<Rabbit, String> {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (port, dist, epmd) = (free_port(), free_port(), free_port());
        let node = format!("archgate{}x{port}@localhost", std::process::id());
        let plugins = setup.plugins.join(",");
        std::fs::write(d.join("enabled_plugins"), format!("[{plugins}].\n")).unwrap();
        let conf = setup.conf.replace("DIR", &d.display().to_string());
        std::fs::write(
            d.join("rabbitmq.conf"),
            format!("loopback_users = none\n{conf}"),
        )
        .unwrap();
        std::fs::create_dir_all(d.join("home")).unwrap();
        let env: Vec<(String, String)> = [
            ("RABBITMQ_NODENAME", node.clone()),
            ("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1".into()),
            ("RABBITMQ_NODE_PORT", port.to_string()),
            ("RABBITMQ_DIST_PORT", dist.to_string()),
            (
                "RABBITMQ_MNESIA_BASE",
                d.join("mnesia").display().to_string(),
            ),
            ("RABBITMQ_LOG_BASE", d.join("log").display().to_string()),
            ("RABBITMQ_PID_FILE", d.join("pid").display().to_string()),
            (
                "RABBITMQ_ENABLED_PLUGINS_FILE",
                d.join("enabled_plugins").display().to_string(),
            ),
            (
                "RABBITMQ_CONFIG_FILE",
                d.join("rabbitmq.conf").display().to_string(),
            ),
            ("ERL_EPMD_PORT", epmd.to_string()),
            ("HOME", d.join("home").display().to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        // In its own directory: an Erlang VM that fails writes its
        // erl_crash.dump where it runs, never in the work tree.
        let child = Command::new("/usr/lib/rabbitmq/bin/rabbitmq-server")
            .current_dir(d)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(std::fs::File::create(d.join("server.out")).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("rabbitmq-server is needed (apt-get install rabbitmq-server)");
        let rabbit = Rabbit {
            port,
            node,
            dir,
            env,
            child,
        };
        let pid = rabbit.dir.path().join("pid");
        if rabbit
            .ctl(&["wait", "--timeout", "90", pid.to_str().unwrap()])
            .is_some()
        {
            return Ok(rabbit);
        }
        let out = std::fs::read_to_string(rabbit.dir.path().join("server.out")).unwrap_or_default();
        let tail: Vec<&str> = out.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        Err(tail.join("\n"))
    }

    /// A node that also listens for amqps on `tls_port` (the server
    /// certificate of `pki`), asks for client certificates (of `pki`'s
    /// client CA) and offers EXTERNAL, the user taken from the
    /// certificate's common name, as Fedora's broker does.
    pub fn tls(pki: &Pki, tls_port: u16) -> Rabbit {
        let conf = format!(
            "listeners.ssl.default = {tls_port}\nssl_options.cacertfile = {}\nssl_options.certfile = {}\nssl_options.keyfile = {}\nssl_options.verify = verify_peer\nssl_options.fail_if_no_peer_cert = false\nauth_mechanisms.1 = PLAIN\nauth_mechanisms.2 = AMQPLAIN\nauth_mechanisms.3 = EXTERNAL\nssl_cert_login_from = common_name\n",
            pki.client_ca.display(),
            pki.server_cert.display(),
            pki.server_key.display()
        );
        Rabbit::start_with(&RabbitSetup {
            conf,
            plugins: vec!["rabbitmq_auth_mechanism_ssl"],
        })
    }

    /// `amqp://` to this node.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// `rabbitmqctl -n NODE ARGS`: its stdout, or `None` when it failed.
    pub fn ctl(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("/usr/lib/rabbitmq/bin/rabbitmqctl")
            .current_dir(self.dir.path())
            .arg("-n")
            .arg(&self.node)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// (ready, unacknowledged) messages of a queue; `None` when it does not exist.
    pub fn queue(&self, name: &str) -> Option<(u64, u64)> {
        self.queue_in("/", name)
    }

    /// [`Rabbit::queue`] in a vhost of its own.
    pub fn queue_in(&self, vhost: &str, name: &str) -> Option<(u64, u64)> {
        let out = self.ctl(&[
            "list_queues",
            "-p",
            vhost,
            "-q",
            "--no-table-headers",
            "name",
            "messages_ready",
            "messages_unacknowledged",
        ])?;
        out.lines().find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 3 && f[0] == name)
                .then(|| (f[1].parse().unwrap_or(0), f[2].parse().unwrap_or(0)))
        })
    }
}

impl Drop for Rabbit {
    fn drop(&mut self) {
        let _ = self.ctl(&["stop"]);
        let _ = self.child.kill();
        let _ = self.child.wait();
        let epmd = self
            .env
            .iter()
            .find(|(k, _)| k == "ERL_EPMD_PORT")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let _ = Command::new("epmd")
            .arg("-kill")
            .env("ERL_EPMD_PORT", epmd)
            .output();
    }
}

/// Runs the Python peer (`tests/support/amqp_peer.py`, on fedora-messaging
/// and pika) with `ARCHGATE_PYTHON`: its stdout.
pub fn amqp_peer(args: &[&str]) -> String {
    let python = std::env::var("ARCHGATE_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/support/amqp_peer.py");
    let out = Command::new(&python)
        .arg(script)
        .args(args)
        .output()
        .expect("python3 is needed");
    assert!(
        out.status.success(),
        "amqp_peer {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Copies a directory tree (fixtures into a test's temp dir).
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// The report line of `arch` in a target of a JSON report.
pub fn arch_of<'a>(target: &'a serde_json::Value, arch: &str) -> &'a serde_json::Value {
    target["arches"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["arch"] == arch)
        .unwrap_or_else(|| panic!("no {arch} in {target}"))
}

/// A dir compose at `root` with x86_64 and aarch64 of `fedora` built
/// (`content` makes the build): its path.
pub fn two_arch_compose(root: &Path, id: &str, release: &str, content: &str) -> String {
    use archgate_fixtures::{write_dir_compose, ArchFixture, Image};
    write_dir_compose(
        root,
        id,
        "FINISHED",
        release,
        &[
            (
                "fedora",
                "x86_64",
                ArchFixture::Built(Image::for_arch("x86_64", content)),
            ),
            (
                "fedora",
                "aarch64",
                ArchFixture::Built(Image::for_arch("aarch64", content)),
            ),
        ],
    )
    .unwrap();
    root.to_str().unwrap().to_string()
}

/// Each YAML document of a file, as JSON (parsed by PyYAML).
pub fn yaml(path: &Path) -> Vec<serde_json::Value> {
    let python = std::env::var("ARCHGATE_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(python)
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None]))",
        ])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Pushes `image` with skopeo to `repo:tag` on a plain-HTTP registry, as a
/// CI platform job pushes its build: the manifest digest. The layout it
/// goes through is written under `dir`.
pub fn push_image(
    dir: &Path,
    registry: &Registry,
    repo: &str,
    tag: &str,
    image: &archgate_fixtures::Image,
) -> String {
    let layout = dir.join(format!("layout-{repo}-{tag}").replace('/', "_"));
    archgate_fixtures::write_layout(&layout, image).unwrap();
    let digestfile = dir.join("digest");
    let out = Command::new("skopeo")
        .args(["copy", "--quiet", "--dest-tls-verify=false", "--digestfile"])
        .arg(&digestfile)
        .arg(format!("oci:{}", layout.display()))
        .arg(format!("docker://{}/{repo}:{tag}", registry.host()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(&digestfile)
        .unwrap()
        .trim()
        .to_string()
}
