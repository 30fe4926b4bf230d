//! The buildah and skopeo engines. The gate, the plan and the report are the
//! same as with the native engine; only the writing is done by the tools:
//!
//! - skopeo: `skopeo copy` of each built arch to its arch tag; the index,
//!   rendered by archgate exactly as the native engine renders it, is written
//!   with archgate's registry client (with the moved-tag check and read-back).
//! - buildah: arch tags with `skopeo copy`; then a throwaway list, unique to
//!   the run, `buildah manifest add` per entry (built arches from their
//!   artifacts, carried ones by digest from the registry), `buildah manifest
//!   push` of the list alone into an OCI layout in the run's temp dir, and
//!   `buildah manifest rm` of the list. buildah 1.28 cannot annotate an
//!   index: archgate sets the index annotations on buildah's list (entries
//!   checked against the plan) and writes it with its own client.
//!
//! With both, archgate's client writes the index under its tag, right after
//! the moved-tag check, and reads it back.
//!
//! Both run with their own storage (vfs) in a temp dir, and are given the
//! registry's `tls-verify`, its cert dir (`--cert-dir`) and its credentials:
//! the configured auth file, or, for credentials from environment
//! variables, an auth file written for the run (mode 0600, in the run's temp
//! dir, removed with it), so that no secret is on a command line. Their
//! stderr goes into archgate's error when they fail. Targets in `oci:`
//! layouts are written natively.
#![warn(missing_docs)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, bail, Context, Result};
use archgate_core::{Arch, Decision, TargetPlan};
use archgate_native::sign_all;
use archgate_native::BlobSource;
use archgate_native::Compression;
use archgate_native::RegistryRepo;
use archgate_native::{Published, ResolvedArtifact, Store};

/// Which tool writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    /// buildah makes the list; skopeo the arch tags.
    Buildah,
    /// skopeo copies each arch; archgate writes the index.
    Skopeo,
}

/// The tools, with their own storage for this run.
pub struct Tools {
    /// The tool of the engine.
    pub tool: Tool,
    dir: tempfile::TempDir,
    storage_conf: PathBuf,
}

/// A tool that is not installed: a usage error (exit 2).
#[derive(Debug)]
pub struct Missing(pub String);

fn present(name: &str) -> bool {
    Command::new(name)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Whether the programs an engine runs are installed.
pub fn check(tool: Tool) -> Result<(), Missing> {
    let needed: &[&str] = match tool {
        Tool::Skopeo => &["skopeo"],
        Tool::Buildah => &["buildah", "skopeo"],
    };
    for name in needed {
        if !present(name) {
            let engine = match tool {
                Tool::Buildah => "buildah",
                Tool::Skopeo => "skopeo",
            };
            return Err(Missing(format!(
                "`{name}` is not installed; the {engine} engine needs it (apt-get install {name})"
            )));
        }
    }
    Ok(())
}

impl Tools {
    /// The tools, with their storage in a new directory under the system's temp dir.
    pub fn new(tool: Tool) -> Result<Tools, Missing> {
        Tools::new_in(tool, &std::env::temp_dir())
    }

    /// The tools, with their storage in a new directory under `parent` (a
    /// run's own temp dir), removed when they are dropped.
    pub fn new_in(tool: Tool, parent: &Path) -> Result<Tools, Missing> {
        check(tool)?;
        let dir = tempfile::Builder::new()
            .prefix("archgate-tools-")
            .tempdir_in(parent)
            .map_err(|e| {
                Missing(format!(
                    "cannot make a temp dir in {}: {e}",
                    parent.display()
                ))
            })?;
        let storage_conf = dir.path().join("storage.conf");
        let conf = format!(
            "[storage]\ndriver = \"vfs\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
            dir.path().join("graph").display(),
            dir.path().join("run").display()
        );
        std::fs::write(&storage_conf, conf)
            .map_err(|e| Missing(format!("cannot write the tools' storage.conf: {e}")))?;
        Ok(Tools {
            tool,
            dir,
            storage_conf,
        })
    }

    /// An auth file holding `username`/`password` for `host`, written for
    /// this run with mode 0600; removed with the run's temp dir.
    pub fn auth_file(&self, host: &str, username: &str, password: &str) -> Result<PathBuf> {
        use base64::Engine as _;
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let path = self
            .dir
            .path()
            .join(format!("auth-{}.json", host.replace(['/', ':'], "_")));
        let token =
            base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
        let body = serde_json::json!({"auths": {host: {"auth": token}}});
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        file.write_all(body.to_string().as_bytes())?;
        Ok(path)
    }

    /// Runs a tool without blocking the async runtime.
    async fn run(&self, program: &str, args: &[String]) -> Result<String> {
        tracing::debug!(program, ?args, "running");
        let out = tokio::process::Command::new(program)
            .args(args)
            .env("CONTAINERS_STORAGE_CONF", &self.storage_conf)
            .env("TMPDIR", self.dir.path())
            .kill_on_drop(true)
            .output()
            .await
            .with_context(|| format!("cannot run {program}"))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let stderr: String = stderr.split_whitespace().collect::<Vec<_>>().join(" ");
            bail!(
                "{program} {} failed: {stderr}",
                args.first().map(String::as_str).unwrap_or("")
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A transport reference the tools can read for an artifact; compressed
    /// archives are decompressed once into the tools' temp dir.
    fn source_ref(&self, art: &ResolvedArtifact) -> Result<String> {
        match &art.source {
            BlobSource::Layout(layout) => Ok(format!("oci:{}", layout.root().display())),
            BlobSource::Registry {
                registry,
                repository,
                ..
            } => Ok(format!(
                "docker://{}/{repository}@{}",
                registry.host(),
                art.entry.digest
            )),
            BlobSource::Archive {
                at,
                compression,
                layers,
            } => {
                let docker = !layers.is_empty();
                let plain = match at {
                    archgate_native::ArchiveAt::File(path) if *compression == Compression::None => {
                        path.clone()
                    }
                    _ => {
                        // The tools read files: an archive from HTTP, or a
                        // compressed one, is written out once, plain.
                        let out = self.dir.path().join(format!("{}.tar", art.arch));
                        if !out.exists() {
                            let file = at.open().with_context(|| at.name())?;
                            let mut reader = archgate_native::decompress(file, *compression)?;
                            let mut dest = std::fs::File::create(&out)?;
                            std::io::copy(&mut reader, &mut dest)?;
                        }
                        out
                    }
                };
                Ok(format!(
                    "{}:{}",
                    if docker {
                        "docker-archive"
                    } else {
                        "oci-archive"
                    },
                    plain.display()
                ))
            }
        }
    }
}

/// How to reach one registry target with the tools.
pub struct ToolTarget<'a> {
    /// The repository, through archgate's client (checks, the index, signatures).
    pub repo: &'a RegistryRepo,
    /// `HOST[:PORT]`.
    pub host: &'a str,
    /// The repository's path.
    pub path: &'a str,
    /// The index tag.
    pub tag: &'a str,
    /// What the tag pointed to when planned.
    pub planned_from: Option<&'a str>,
    /// The registry's `tls-verify`.
    pub tls_verify: bool,
    /// An auth file for the tools, if any.
    pub auth_file: Option<&'a Path>,
    /// containers-certs.d(5) directory: CAs and a client certificate.
    pub cert_dir: Option<&'a Path>,
    /// The key that signs what is written (Debian's tools cannot sign:
    /// archgate signs each digest before a tool or archgate tags it).
    pub sign: Option<&'a archgate_sign::SigningKey>,
}

impl ToolTarget<'_> {
    fn dest_flags(&self, prefix: &str) -> Vec<String> {
        let mut flags = vec![format!("--{prefix}tls-verify={}", self.tls_verify)];
        if let Some(f) = self.auth_file {
            flags.push(format!("--{prefix}authfile={}", f.display()));
        }
        if let Some(d) = self.cert_dir {
            flags.push(format!("--{prefix}cert-dir={}", d.display()));
        }
        flags
    }
}

/// Carries a plan out on a registry target with the tools: the arches'
/// signatures, then each arch's `skopeo copy` to its arch tag; then the index's
/// signature, the moved-tag check, the index under its tag (archgate's
/// client), and the read-back.
pub async fn publish(
    tools: &Tools,
    t: &ToolTarget<'_>,
    plan: &TargetPlan,
    artifacts: &BTreeMap<Arch, ResolvedArtifact>,
    arch_tags: &[(Arch, String)],
) -> Result<Published> {
    if let Some(done) = archgate_native::nothing_to_write(plan, t.planned_from) {
        return Ok(done);
    }
    // The arches whose tag does not point at their manifest yet: all of
    // them signed at once, then each copied to its arch tag.
    let mut to_copy = Vec::new();
    for (arch, arch_tag) in arch_tags {
        let art = artifacts
            .get(arch)
            .ok_or_else(|| anyhow!("internal: no artifact for {arch}"))?;
        let tagged = t.repo.resolve_tag(arch_tag).await?;
        if tagged.is_none_or(|d| d.digest != art.entry.digest) {
            to_copy.push((art, arch_tag));
        }
    }
    let digests: Vec<&str> = to_copy
        .iter()
        .map(|(a, _)| a.entry.digest.as_str())
        .collect();
    let mut signed = sign_all(t.repo, t.sign, &digests).await?;
    for (art, arch_tag) in to_copy {
        copy_arch(tools, t, art, arch_tag).await?;
    }
    if plan.decision != Decision::Published {
        return Ok(Published {
            digest: None,
            signed,
        });
    }
    let bytes = match tools.tool {
        // The index archgate plans, written as the native engine writes it.
        Tool::Skopeo => archgate_native::render_index(&plan.index, &plan.annotations),
        Tool::Buildah => buildah_index(tools, t, plan, artifacts).await?,
    };
    let desc = archgate_native::Descriptor::new(archgate_native::OCI_INDEX, &bytes);
    signed.extend(sign_all(t.repo, t.sign, &[&desc.digest]).await?);
    archgate_native::check_not_moved(t.repo, t.tag, t.planned_from).await?;
    t.repo.push_manifest(&desc, &bytes, Some(t.tag)).await?;
    archgate_native::read_back(t.repo, t.tag, &desc.digest).await?;
    Ok(Published {
        digest: Some(desc.digest),
        signed,
    })
}

/// `skopeo copy` of one arch to its arch tag, digests preserved.
async fn copy_arch(
    tools: &Tools,
    t: &ToolTarget<'_>,
    art: &ResolvedArtifact,
    arch_tag: &str,
) -> Result<()> {
    let mut args = vec![
        "copy".to_string(),
        "--quiet".to_string(),
        "--preserve-digests".to_string(),
    ];
    args.extend(t.dest_flags("dest-"));
    args.push(tools.source_ref(art)?);
    args.push(format!("docker://{}/{}:{arch_tag}", t.host, t.path));
    tools.run("skopeo", &args).await?;
    tracing::info!(tag = %arch_tag, digest = %art.entry.digest, "arch tag set with skopeo");
    Ok(())
}

/// A list name no other run uses, never the target's.
fn list_name() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("localhost/archgate-list-{}-{nanos}", std::process::id())
}

/// The index of a target, as buildah makes it: a throwaway list, `buildah
/// manifest add` per entry (built arches from their artifacts, carried ones
/// by digest from the registry), written (the list alone) into an OCI
/// layout in the tools' temp dir, then `buildah manifest rm`. buildah 1.28
/// cannot annotate an index, so archgate adds the index annotations (the
/// compose stamp and the image's own) to buildah's list. Returns the bytes
/// to write; their entries are checked against the plan's.
async fn buildah_index(
    tools: &Tools,
    t: &ToolTarget<'_>,
    plan: &TargetPlan,
    artifacts: &BTreeMap<Arch, ResolvedArtifact>,
) -> Result<Vec<u8>> {
    let list = list_name();
    tools
        .run(
            "buildah",
            &["manifest".into(), "create".into(), list.clone()],
        )
        .await?;
    let layout = tools.dir.path().join(format!("list-{}", list_id(&list)));
    let result = async {
        for entry in &plan.index {
            let built = artifacts.values().find(|a| a.entry.digest == entry.digest);
            let source = match built {
                Some(art) => tools.source_ref(art)?,
                None => format!("docker://{}/{}@{}", t.host, t.path, entry.digest),
            };
            let mut args = vec!["manifest".to_string(), "add".to_string()];
            args.extend(t.dest_flags(""));
            args.push(list.clone());
            args.push(source);
            tools.run("buildah", &args).await?;
        }
        let args = [
            "manifest".to_string(),
            "push".to_string(),
            "--quiet".to_string(),
            list.clone(),
            format!("oci:{}", layout.display()),
        ];
        tools.run("buildah", &args).await?;
        read_list(&layout)
    }
    .await;
    // Cleanup: a list that is not there is fine; any other failure is reported.
    let cleanup = match tools
        .run("buildah", &["manifest".into(), "rm".into(), list.clone()])
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if format!("{e:#}").contains("image not known") => Ok(()),
        Err(e) => Err(e.context(format!("removing the list {list}"))),
    };
    let made = result?;
    cleanup?;
    annotated(made, plan)
}

/// The part of a list name that is unique to it.
fn list_id(list: &str) -> &str {
    list.rsplit('/').next().unwrap_or(list)
}

/// The one index buildah wrote into the layout at `dir`.
fn read_list(dir: &Path) -> Result<Vec<u8>> {
    let layout = archgate_native::OciLayout::new(dir.to_path_buf());
    let index: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("index.json")).context("buildah wrote no index.json")?,
    )?;
    let digest = index["manifests"][0]["digest"]
        .as_str()
        .ok_or_else(|| anyhow!("buildah's layout names no index"))?;
    let path = layout.blob_path(digest)?;
    std::fs::read(&path).with_context(|| format!("{}: buildah's index", path.display()))
}

/// buildah's list with the plan's index annotations set; its entries must
/// be the plan's (same digests), or nothing is written.
fn annotated(made: Vec<u8>, plan: &TargetPlan) -> Result<Vec<u8>> {
    let mut list: serde_json::Value =
        serde_json::from_slice(&made).context("buildah's index is not JSON")?;
    let digests = |v: &serde_json::Value| -> Vec<String> {
        let mut d: Vec<String> = v["manifests"]
            .as_array()
            .map(|m| {
                m.iter()
                    .filter_map(|e| e["digest"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        d.sort();
        d
    };
    let mut planned: Vec<String> = plan.index.iter().map(|e| e.digest.clone()).collect();
    planned.sort();
    if digests(&list) != planned {
        bail!(
            "buildah's index lists {:?}, the plan {planned:?}; not written",
            digests(&list)
        );
    }
    if !plan.annotations.is_empty() {
        list["annotations"] = serde_json::to_value(&plan.annotations)?;
    }
    Ok(serde_json::to_vec(&list)?)
}
