//! Archive artifacts, read in one streaming pass: oci-archive and
//! docker-archive, each plain or compressed with gzip, xz or zstd (found by
//! content, not by file name). Nothing is unpacked to disk and no blob is
//! held whole in memory; every blob is hashed while it streams, and the
//! artifact file itself is hashed in the same pass for the compose checksum.
//!
//! A docker-archive's plain-tar layers become gzip OCI layers. The gzip
//! stream has no timestamp or name and a fixed level, so the same layer
//! always gives the same bytes and digest.

use std::collections::BTreeMap;
use std::io::{self, BufReader, Read, Write};
use std::path::Component;

use anyhow::{anyhow, bail, Context, Result};
use archgate_core::ChecksumAlgo;
use sha2::{Digest as _, Sha256};

use crate::oci::hex_digest;

/// Files this small are kept in memory while scanning (manifests, configs, index.json).
pub const KEEP_IN_MEMORY: u64 = 4 << 20;

/// How an archive file is compressed (told by its first bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip.
    Gzip,
    /// xz.
    Xz,
    /// zstd.
    Zstd,
}

/// Finds the compression by the first bytes of a stream.
pub fn detect_bytes(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Compression::Xz
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// Reads until `buf` is full or the stream ends: how many bytes it holds.
pub(crate) fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// The hash state of one checksum algorithm.
enum FileHash {
    None,
    Md5(md5::Md5),
    Sha1(sha1::Sha1),
    Sha256(Sha256),
    Sha512(sha2::Sha512),
}

/// Hashes what passes through it (the artifact file, for the compose
/// checksum) with the algorithm the compose recorded, and counts it.
pub struct HashingReader<R> {
    inner: R,
    hash: FileHash,
    pub count: u64,
    meter: Option<crate::progress::ReadMeter>,
}

impl<R: Read> HashingReader<R> {
    /// Hashes with `algo`; with `None`, only counts.
    pub fn new(inner: R, algo: Option<ChecksumAlgo>) -> Self {
        let hash = match algo {
            None => FileHash::None,
            Some(ChecksumAlgo::Md5) => FileHash::Md5(md5::Md5::new()),
            Some(ChecksumAlgo::Sha1) => FileHash::Sha1(sha1::Sha1::new()),
            Some(ChecksumAlgo::Sha256) => FileHash::Sha256(Sha256::new()),
            Some(ChecksumAlgo::Sha512) => FileHash::Sha512(sha2::Sha512::new()),
        };
        HashingReader {
            inner,
            hash,
            count: 0,
            meter: None,
        }
    }

    /// Reports progress as it reads (see [`crate::progress`]).
    pub fn with_meter(mut self, meter: crate::progress::ReadMeter) -> Self {
        self.meter = Some(meter);
        self
    }

    /// The hex digest (when hashing) and the number of bytes read.
    pub fn finish(self) -> (Option<String>, u64) {
        if let Some(m) = &self.meter {
            m.finish(self.count);
        }
        let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect();
        let digest = match self.hash {
            FileHash::None => None,
            FileHash::Md5(h) => Some(hex(&h.finalize())),
            FileHash::Sha1(h) => Some(hex(&h.finalize())),
            FileHash::Sha256(h) => Some(hex(&h.finalize())),
            FileHash::Sha512(h) => Some(hex(&h.finalize())),
        };
        (digest, self.count)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let data = &buf[..n];
        match &mut self.hash {
            FileHash::None => {}
            FileHash::Md5(h) => h.update(data),
            FileHash::Sha1(h) => h.update(data),
            FileHash::Sha256(h) => h.update(data),
            FileHash::Sha512(h) => h.update(data),
        }
        self.count += n as u64;
        if let Some(m) = &mut self.meter {
            m.at(self.count);
        }
        Ok(n)
    }
}

/// The decompressed tar stream of an artifact.
pub fn decompress<'a, R: Read + 'a>(
    raw: R,
    compression: Compression,
) -> Result<Box<dyn Read + 'a>> {
    let raw = BufReader::with_capacity(64 << 10, raw);
    Ok(match compression {
        Compression::None => Box::new(raw),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(raw)),
        Compression::Xz => Box::new(liblzma::bufread::XzDecoder::new_parallel(raw)),
        Compression::Zstd => {
            Box::new(zstd::stream::read::Decoder::with_buffer(raw).context("zstd")?)
        }
    })
}

/// docker-archive layer paths and the (digest, size) of the gzip layers they become.
pub type LayerMap = BTreeMap<String, (String, u64)>;

/// A docker-archive layer, as the OCI layer it becomes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DockerLayer {
    /// sha256 of the layer as stored in the archive (the config's diff_id when plain tar).
    pub diff_id: String,
    /// The gzip layer pushed: digest and size.
    pub digest: String,
    pub size: u64,
    /// Already gzip in the archive: pushed as it is.
    pub passthrough: bool,
}

/// What one pass over an archive found.
#[derive(Debug, Default)]
pub struct Scan {
    /// Small regular files by path (index.json, manifest.json, configs, manifests).
    pub files: BTreeMap<String, Vec<u8>>,
    /// `blobs/sha256/<hex>` entries: digest → size, each checked against its name.
    pub blobs: BTreeMap<String, u64>,
    /// docker-archive layers by path.
    pub layers: BTreeMap<String, DockerLayer>,
}

/// Where the bytes of a blob go during a pass, besides the hasher.
pub trait BlobSink {
    /// `Some` to receive the blob with this digest (already known from an
    /// earlier pass for converted layers); `None` to only hash it.
    fn open(&mut self, digest: &str, size: u64) -> Result<Option<Box<dyn Write + '_>>>;
    /// Whether every place the sink sends a blob's bytes checks them
    /// against its digest itself: then a layer the sink takes is not
    /// hashed here too (documents always are: they are read here).
    fn checked_downstream(&self) -> bool {
        false
    }
    /// A blob kept as what may be a document (it starts as JSON does), once
    /// its bytes matched its digest: a manifest, a config.
    fn document(&mut self, _digest: &str, _bytes: &[u8]) {}
}

/// Whether a blob starting with `head` may be a JSON document: its first
/// byte that is not white space is `{` (a layer starts with a
/// compression's magic bytes, or a tar header).
fn may_be_json(head: &[u8]) -> bool {
    head.iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_none_or(|b| *b == b'{')
}

/// Only hashes.
pub struct NoSink;

impl BlobSink for NoSink {
    fn open(&mut self, _: &str, _: u64) -> Result<Option<Box<dyn Write + '_>>> {
        Ok(None)
    }
}

/// A blob that may be a document, read whole after its first bytes
/// `head` and checked against its digest. An image manifest or an index is
/// not a blob a registry needs (publishing puts it as a manifest): the
/// sink is not offered it. Anything else (a config) is sent whole.
fn read_document(
    mut head: Vec<u8>,
    rest: &mut impl Read,
    (digest, size): (&str, u64),
    sink: &mut dyn BlobSink,
) -> Result<Vec<u8>> {
    rest.read_to_end(&mut head)?;
    let actual = crate::oci::sha256_digest(&head);
    check_content((digest, size), &actual, head.len() as u64)?;
    if !crate::oci::is_manifest_document(&head) {
        if let Some(mut w) = sink.open(digest, size)? {
            w.write_all(&head)?;
        }
    }
    Ok(head)
}

/// A blob that is not a document (a layer), streamed into the sink as it
/// is read (`head`, its first bytes, then `rest`); hashed unless every
/// destination checks it itself, and checked against its digest.
fn stream_blob(
    sink: &mut dyn BlobSink,
    trusted: bool,
    (digest, size): (&str, u64),
    head: Vec<u8>,
    rest: &mut impl Read,
) -> Result<()> {
    let mut writer = sink.open(digest, size)?;
    // A layer whose every destination checks it: its digest is checked
    // there (a store that fails it fails the pass there).
    let hash = !(trusted && writer.is_some() && size > KEEP_IN_MEMORY);
    let (actual, n) = copy_maybe_hashing(&mut head.as_slice().chain(rest), hash, |chunk| {
        if let Some(w) = writer.as_mut() {
            w.write_all(chunk)?;
        }
        Ok(())
    })?;
    drop(writer);
    // Not hashed here: the destinations check it.
    let actual = actual.as_deref().unwrap_or(digest);
    check_content((digest, size), actual, n)
}

/// A blob's content (its digest and length as read) must be what its
/// name and entry say.
fn check_content((digest, size): (&str, u64), actual: &str, n: u64) -> Result<()> {
    if actual != digest || n != size {
        bail!("blob {digest} in the archive has content {actual} ({n} bytes)");
    }
    Ok(())
}

/// Checks an entry name and returns it without a leading `./`.
fn entry_path(entry: &tar::Entry<'_, impl Read>) -> Result<String> {
    let path = entry
        .path()
        .map_err(|e| anyhow!("an entry name cannot be read: {e}"))?
        .into_owned();
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => {
                bail!("entry {} has an absolute path", path.display())
            }
            Component::ParentDir => bail!("entry {} has `..` in its path", path.display()),
        }
    }
    Ok(parts.join("/"))
}

/// A docker-archive layer: any `.tar` file outside `blobs/` (`<id>/layer.tar`, `<hex>.tar`).
fn is_docker_layer(path: &str) -> bool {
    path.ends_with(".tar") && !path.starts_with("blobs/")
}

/// One pass over a decompressed archive.
///
/// `layer_digests` maps docker layer paths to the digests an earlier pass
/// found, so that a sink can be opened for them before they are converted.
pub fn scan(
    tar_stream: impl Read,
    sink: &mut dyn BlobSink,
    layer_digests: &LayerMap,
) -> Result<Scan> {
    let mut archive = tar::Archive::new(tar_stream);
    let mut out = Scan::default();
    let trusted = sink.checked_downstream();
    for entry in archive
        .entries()
        .map_err(|e| anyhow!("not a tar archive: {e}"))?
    {
        let mut entry = entry.map_err(|e| anyhow!("not a valid tar archive: {e}"))?;
        let path = entry_path(&entry)?;
        let kind = entry.header().entry_type();
        if kind.is_dir()
            || kind.is_pax_global_extensions()
            || kind.is_pax_local_extensions()
            || kind.is_gnu_longname()
        {
            continue;
        }
        if kind.is_symlink() || kind.is_hard_link() {
            bail!("entry {path} is a link; archives with links are refused");
        }
        if !kind.is_file() && kind != tar::EntryType::Continuous {
            bail!("entry {path} is not a regular file ({kind:?})");
        }
        let size = entry
            .header()
            .size()
            .map_err(|e| anyhow!("entry {path}: bad size: {e}"))?;
        if let Some(hex) = path.strip_prefix("blobs/sha256/") {
            let digest = format!("sha256:{hex}");
            if !archgate_core::is_sha256_digest(&digest) {
                bail!("entry {path} is not named by a sha256 digest");
            }
            // What may be a document (small, and JSON: a manifest, a
            // config) is read whole first; anything else streams.
            let mut head = vec![0u8; size.min(512) as usize];
            let got = read_up_to(&mut entry, &mut head).with_context(|| format!("entry {path}"))?;
            head.truncate(got);
            if size <= KEEP_IN_MEMORY && may_be_json(&head) {
                let kept = read_document(head, &mut entry, (&digest, size), sink)
                    .with_context(|| format!("entry {path}"))?;
                sink.document(&digest, &kept);
                out.files.insert(path, kept);
            } else {
                stream_blob(sink, trusted, (&digest, size), head, &mut entry)
                    .with_context(|| format!("entry {path}"))?;
            }
            out.blobs.insert(digest, size);
        } else if is_docker_layer(&path) {
            let layer = convert_layer(&mut entry, &path, sink, layer_digests.get(&path))?;
            out.layers.insert(path, layer);
        } else if size <= KEEP_IN_MEMORY {
            let mut bytes = Vec::with_capacity(size as usize);
            entry
                .read_to_end(&mut bytes)
                .map_err(|e| anyhow!("entry {path}: {e}"))?;
            out.files.insert(path, bytes);
        } else {
            tracing::debug!(
                path,
                size,
                "large entry that is neither a blob nor a layer; skipped"
            );
            io::copy(&mut entry, &mut io::sink())?;
        }
    }
    Ok(out)
}

/// Streams `source`, calling `each` per chunk, and returns its digest and size.
pub(crate) fn copy_hashing(
    source: &mut impl Read,
    each: impl FnMut(&[u8]) -> io::Result<()>,
) -> Result<(String, u64)> {
    let (digest, n) = copy_maybe_hashing(source, true, each)?;
    Ok((digest.expect("hashed"), n))
}

/// [`copy_hashing`], hashing only when `hash` (else no digest).
fn copy_maybe_hashing(
    source: &mut impl Read,
    hash: bool,
    mut each: impl FnMut(&[u8]) -> io::Result<()>,
) -> Result<(Option<String>, u64)> {
    let mut hasher = hash.then(Sha256::new);
    let mut buf = vec![0u8; 64 * 1024];
    let mut n = 0u64;
    loop {
        let k = match source.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        if let Some(h) = hasher.as_mut() {
            h.update(&buf[..k]);
        }
        each(&buf[..k])?;
        n += k as u64;
    }
    Ok((hasher.map(|h| hex_digest(&h.finalize())), n))
}

/// Writes through, hashing and counting.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The gzip level of converted layers. Changing it changes their digests.
const GZIP_LEVEL: u32 = 6;

fn convert_layer(
    entry: &mut impl Read,
    path: &str,
    sink: &mut dyn BlobSink,
    known: Option<&(String, u64)>,
) -> Result<DockerLayer> {
    let mut head = [0u8; 2];
    let n = read_up_to(entry, &mut head)?;
    let mut entry = (&head[..n]).chain(entry);
    let passthrough = n == 2 && head == [0x1f, 0x8b];
    let mut writer = match known {
        Some((digest, size)) => sink.open(digest, *size)?,
        None => None,
    };
    let out: &mut dyn Write = match writer.as_mut() {
        Some(w) => w,
        None => &mut io::sink(),
    };
    let mut compressed = HashingWriter {
        inner: out,
        hasher: Sha256::new(),
        count: 0,
    };
    let (diff_id, _) = if passthrough {
        copy_hashing(&mut entry, |chunk| compressed.write_all(chunk))?
    } else {
        let mut gz = flate2::GzBuilder::new()
            .mtime(0)
            .operating_system(255)
            .write(&mut compressed, flate2::Compression::new(GZIP_LEVEL));
        let r = copy_hashing(&mut entry, |chunk| gz.write_all(chunk))?;
        gz.finish()?;
        r
    };
    compressed.flush()?;
    let digest = hex_digest(&compressed.hasher.finalize());
    let size = compressed.count;
    drop(writer);
    if let Some((want, want_size)) = known {
        if *want != digest || *want_size != size {
            bail!("layer {path} gave {digest} ({size} bytes) this time, {want} ({want_size} bytes) before");
        }
    }
    Ok(DockerLayer {
        diff_id,
        digest,
        size,
        passthrough,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_what_may_be_json_is_kept() {
        assert!(super::may_be_json(b"{\"schemaVersion\":2}"));
        assert!(super::may_be_json(b"\n  {"));
        assert!(super::may_be_json(b""));
        assert!(!super::may_be_json(&[0x1f, 0x8b, 8, 0]));
        assert!(!super::may_be_json(&[0x28, 0xb5, 0x2f, 0xfd]));
        assert!(!super::may_be_json(b"etc/\0\0\0"));
    }
}
