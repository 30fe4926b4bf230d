//! OCI image layout directories: read tags and blobs, write blobs and tags.
//!
//! Every write is atomic: a blob is written to a temporary file beside its
//! final place, checked against its digest and renamed; `index.json` is
//! rewritten the same way, so a crash never leaves it torn.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest as _, Sha256};

use crate::oci::{hex_digest, Descriptor, Index, REF_NAME};
use crate::transport::Store;

pub use crate::oci::MAX_DOCUMENT;

const LAYOUT_FILE: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// An OCI image layout at a path (which may not exist yet).
#[derive(Debug, Clone)]
pub struct OciLayout {
    root: PathBuf,
}

impl OciLayout {
    /// The layout at `root` (created when first written).
    pub fn new(root: impl Into<PathBuf>) -> OciLayout {
        OciLayout { root: root.into() }
    }

    /// Its directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn index_path(&self) -> PathBuf {
        self.root.join("index.json")
    }

    /// Whether the layout has an `index.json` (a layout that does not exist
    /// yet has no tags).
    pub fn exists(&self) -> bool {
        self.index_path().is_file()
    }

    /// Its `index.json`; an empty index when the layout does not exist yet.
    pub fn read_index(&self) -> Result<Index> {
        let path = self.index_path();
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Index::empty()),
            Err(e) => return Err(anyhow!("{}: cannot read: {e}", path.display())),
        };
        let index: Index = serde_json::from_slice(&bytes)
            .map_err(|e| anyhow!("{}: not a valid OCI index: {e}", path.display()))?;
        for d in &index.manifests {
            d.check().with_context(|| path.display().to_string())?;
        }
        Ok(index)
    }

    /// The descriptor a tag (`org.opencontainers.image.ref.name`) points to.
    pub fn find_tag(&self, tag: &str) -> Result<Option<Descriptor>> {
        Ok(self
            .read_index()?
            .manifests
            .into_iter()
            .find(|d| d.ref_name() == Some(tag)))
    }

    /// Where a blob lives. The digest must be a well-formed sha256 digest.
    pub fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        if !archgate_core::is_sha256_digest(digest) {
            bail!("`{digest}` is not a sha256 digest");
        }
        Ok(self
            .root
            .join("blobs/sha256")
            .join(&digest["sha256:".len()..]))
    }

    /// Whether the blob is there with the given size.
    pub fn has_blob(&self, digest: &str, size: u64) -> bool {
        self.blob_path(digest)
            .ok()
            .and_then(|p| fs::metadata(p).ok())
            .is_some_and(|m| m.is_file() && m.len() == size)
    }

    /// A small blob (manifest, index, config), checked against its descriptor.
    pub fn read_blob(&self, desc: &Descriptor) -> Result<Vec<u8>> {
        let path = self.blob_path(&desc.digest)?;
        if desc.size > MAX_DOCUMENT {
            bail!(
                "{}: {} bytes is too large for a manifest or config",
                path.display(),
                desc.size
            );
        }
        let bytes = fs::read(&path)
            .map_err(|e| anyhow!("{}: cannot read blob {}: {e}", path.display(), desc.digest))?;
        let actual = crate::oci::sha256_digest(&bytes);
        if actual != desc.digest || bytes.len() as u64 != desc.size {
            bail!(
                "{}: content is {actual} ({} bytes), but the descriptor says {} ({} bytes)",
                path.display(),
                bytes.len(),
                desc.digest,
                desc.size
            );
        }
        Ok(bytes)
    }

    /// Hashes a blob file of this layout and checks it against its descriptor.
    pub fn verify_blob(&self, desc: &Descriptor) -> Result<()> {
        let path = self.blob_path(&desc.digest)?;
        let file = File::open(&path)
            .map_err(|e| anyhow!("{}: cannot read blob {}: {e}", path.display(), desc.digest))?;
        let (digest, size) =
            hash_stream(file, io::sink()).with_context(|| path.display().to_string())?;
        check_content(&path, desc, &digest, size)
    }

    /// Creates the layout (directory, `oci-layout`, empty `index.json`) if it
    /// does not exist; refuses a directory that holds something else.
    pub fn init(&self) -> Result<()> {
        if self.exists() {
            return Ok(());
        }
        // A directory holding anything but archgate's own lock and temp
        // files, and no oci-layout, is someone else's.
        let foreign = |e: &fs::DirEntry| !e.file_name().to_string_lossy().starts_with(".archgate-");
        if self.root.is_dir()
            && fs::read_dir(&self.root)?.flatten().any(|e| foreign(&e))
            && !self.root.join("oci-layout").exists()
        {
            bail!(
                "{} exists and is not an OCI image layout; not writing into it",
                self.root.display()
            );
        }
        fs::create_dir_all(self.root.join("blobs/sha256"))
            .map_err(|e| anyhow!("{}: cannot create: {e}", self.root.display()))?;
        write_atomic(&self.root.join("oci-layout"), LAYOUT_FILE)?;
        write_atomic(&self.index_path(), &serde_json::to_vec(&Index::empty())?)?;
        Ok(())
    }

    /// Copies a blob into the layout, hashing it on the way; nothing is left
    /// behind unless it matches its descriptor.
    pub fn write_blob(&self, desc: &Descriptor, source: impl Read) -> Result<()> {
        let path = self.blob_path(&desc.digest)?;
        let dir = path.parent().expect("blob path has a parent");
        fs::create_dir_all(dir).map_err(|e| anyhow!("{}: cannot create: {e}", dir.display()))?;
        let tmp = temp_path(dir);
        let result = (|| {
            let mut file =
                File::create(&tmp).map_err(|e| anyhow!("{}: cannot create: {e}", tmp.display()))?;
            let (digest, size) = hash_stream(source, &mut file)?;
            check_content(&path, desc, &digest, size)?;
            file.sync_all()?;
            fs::rename(&tmp, &path)
                .map_err(|e| anyhow!("{}: cannot rename into place: {e}", path.display()))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// Points tags at descriptors in one atomic rewrite of `index.json`.
    pub fn set_tags(&self, tags: &[(String, Descriptor)]) -> Result<()> {
        let mut index = self.read_index()?;
        let mut changed = false;
        for (tag, desc) in tags {
            let mut desc = desc.clone();
            desc.annotations
                .get_or_insert_with(Default::default)
                .insert(REF_NAME.to_string(), tag.clone());
            let existing: Vec<&Descriptor> = index
                .manifests
                .iter()
                .filter(|d| d.ref_name() == Some(tag.as_str()))
                .collect();
            if existing.len() == 1 && *existing[0] == desc {
                continue;
            }
            index
                .manifests
                .retain(|d| d.ref_name() != Some(tag.as_str()));
            index.manifests.push(desc);
            changed = true;
        }
        if changed {
            write_atomic(&self.index_path(), &serde_json::to_vec(&index)?)?;
        }
        Ok(())
    }
}

impl Store for OciLayout {
    fn name(&self) -> String {
        format!("oci:{}", self.root.display())
    }

    async fn lock(&self) -> Result<Option<Box<dyn std::any::Any + Send>>> {
        // One writer per layout at a time (index.json is read, changed and
        // written whole): an advisory lock on .archgate-lock, waited for on
        // a blocking thread, released when the file is closed.
        let root = self.root.clone();
        let path = self.root.join(".archgate-lock");
        let file = tokio::task::spawn_blocking(move || -> Result<File> {
            fs::create_dir_all(&root)
                .map_err(|e| anyhow!("{}: cannot create: {e}", root.display()))?;
            let file = fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(|e| anyhow!("{}: cannot open: {e}", path.display()))?;
            file.lock()
                .map_err(|e| anyhow!("{}: cannot lock: {e}", path.display()))?;
            Ok(file)
        })
        .await
        .map_err(|e| anyhow!("internal error: the lock waiter stopped: {e}"))??;
        Ok(Some(Box::new(file)))
    }

    async fn prepare(&self) -> Result<()> {
        self.init()?;
        // What a killed run left behind.
        for dir in [self.root.clone(), self.root.join("blobs/sha256")] {
            remove_stale_temp(&dir, ".archgate-tmp-");
        }
        Ok(())
    }

    async fn resolve_tag(&self, tag: &str) -> Result<Option<Descriptor>> {
        self.find_tag(tag)
    }

    async fn fetch_manifest(&self, desc: &Descriptor) -> Result<Vec<u8>> {
        self.read_blob(desc)
    }

    async fn fetch_blob(&self, desc: &Descriptor) -> Result<Vec<u8>> {
        self.read_blob(desc)
    }

    async fn has_blob(&self, desc: &Descriptor) -> Result<bool> {
        Ok(OciLayout::has_blob(self, &desc.digest, desc.size))
    }

    fn checks_digests(&self) -> bool {
        true
    }

    async fn has_manifest(&self, desc: &Descriptor) -> Result<bool> {
        Ok(OciLayout::has_blob(self, &desc.digest, desc.size))
    }

    async fn push_blob(&self, desc: &Descriptor, from: &Path) -> Result<()> {
        let file = File::open(from).map_err(|e| anyhow!("{}: cannot read: {e}", from.display()))?;
        self.write_blob(desc, file)
    }

    async fn push_blob_bytes(&self, desc: &Descriptor, bytes: &[u8]) -> Result<()> {
        self.write_blob(desc, bytes)
    }

    async fn push_blob_stream<C>(&self, desc: &Descriptor, chunks: C) -> Result<()>
    where
        C: futures_util::Stream<Item = io::Result<bytes::Bytes>> + Send + Sync + 'static,
    {
        use futures_util::StreamExt;
        let path = self.blob_path(&desc.digest)?;
        let dir = path.parent().expect("blob path has a parent");
        fs::create_dir_all(dir).map_err(|e| anyhow!("{}: cannot create: {e}", dir.display()))?;
        let tmp = temp_path(dir);
        let result = async {
            let mut file =
                File::create(&tmp).map_err(|e| anyhow!("{}: cannot create: {e}", tmp.display()))?;
            let mut hasher = Sha256::new();
            let mut size = 0u64;
            let mut chunks = std::pin::pin!(chunks);
            while let Some(chunk) = chunks.next().await {
                let chunk = chunk?;
                hasher.update(&chunk);
                size += chunk.len() as u64;
                file.write_all(&chunk)?;
            }
            check_content(&path, desc, &hex_digest(&hasher.finalize()), size)?;
            file.sync_all()?;
            fs::rename(&tmp, &path)
                .map_err(|e| anyhow!("{}: cannot rename into place: {e}", path.display()))
        }
        .await;
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    async fn push_manifest(
        &self,
        desc: &Descriptor,
        bytes: &[u8],
        tag: Option<&str>,
    ) -> Result<()> {
        if !OciLayout::has_blob(self, &desc.digest, desc.size) {
            self.write_blob(desc, bytes)?;
        }
        if let Some(tag) = tag {
            let mut desc = desc.clone();
            desc.annotations = None;
            self.set_tags(&[(tag.to_string(), desc)])?;
        }
        Ok(())
    }
}

fn check_content(path: &Path, desc: &Descriptor, digest: &str, size: u64) -> Result<()> {
    if digest != desc.digest || size != desc.size {
        bail!(
            "blob {} ({}): content is {digest} ({size} bytes), but the descriptor says {} ({} bytes)",
            desc.digest,
            path.display(),
            desc.digest,
            desc.size
        );
    }
    Ok(())
}

/// Copies `source` to `sink`, returning the content's digest and size.
pub fn hash_stream(mut source: impl Read, mut sink: impl Write) -> Result<(String, u64)> {
    crate::archive::copy_hashing(&mut source, |chunk| sink.write_all(chunk))
}

/// Whether the process `pid` is alive (on Linux, by /proc).
pub fn process_alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

/// Removes the entries of `dir` named `PREFIX<pid>-...` whose process is
/// gone: the temp files and dirs of runs that were killed. Those of live
/// processes (this one, or another archgate) are left alone.
pub fn remove_stale_temp(dir: &Path, prefix: &str) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(prefix)
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if process_alive(pid) {
            continue;
        }
        let path = entry.path();
        let removed = if path.is_dir() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        match removed {
            Ok(()) => tracing::info!(path = %path.display(), "removed what a killed run left"),
            Err(e) => {
                tracing::warn!(path = %path.display(), "cannot remove what a killed run left: {e}")
            }
        }
    }
}

fn temp_path(dir: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(".archgate-tmp-{}-{n}", std::process::id()))
}

/// Write-then-rename, with the data synced before the rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = temp_path(dir);
    let result = (|| -> io::Result<()> {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        bail!("{}: cannot write: {e}", path.display());
    }
    Ok(())
}
