//! Archive passes that stream their blobs into a store while they read:
//! blobs larger than what a pass reads ahead, several passes sharing one
//! reader's permit, every blob whole in the store.

use std::path::Path;

use archgate_core::{Arch, Artifact, Location};
use archgate_fixtures::{write_oci_archive, Compress, Image};
use archgate_native::{
    resolve_and_push, AnyStore, Destination, OciLayout, ReadEnv, Reading, Store,
};

/// About `n` bytes of text that gzip cannot shrink much: a layer of several
/// MB, more than a pass reads ahead.
fn noise(n: usize, seed: u64) -> String {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b"0123456789abcdef"[(x % 16) as usize])
        })
        .collect()
}

fn archive(dir: &Path, arch: &str, content: &str) -> (Artifact, String) {
    let path = dir.join(format!("{arch}.oci.tar"));
    let image = Image::for_arch(arch, content);
    let digest = write_oci_archive(&path, &image, Compress::None).unwrap();
    (Artifact::at(Location::Path(path)), digest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_blobs_of_several_archives_stream_whole_through_one_reader_to_each_destination() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, a_digest) = archive(tmp.path(), "x86_64", &noise(12 << 20, 1));
    let (b, b_digest) = archive(tmp.path(), "aarch64", &noise(9 << 20, 2));
    // Two destinations of one pass: each gets every blob whole.
    let layouts = [
        OciLayout::new(tmp.path().join("out")),
        OciLayout::new(tmp.path().join("other")),
    ];
    let dests: Vec<_> = layouts
        .iter()
        .map(|l| Destination::to(AnyStore::Layout(l.clone())))
        .collect();
    for d in &dests {
        d.store.prepare().await.unwrap();
    }
    // One reader for both passes: a pass gives its permit back when it has
    // read, while its blobs may still be going up.
    let reading = Reading::new(1, 2);
    let (ra, rb) = tokio::join!(
        resolve_and_push(&dests, &reading, Arch::X86_64, a, ReadEnv::default()),
        resolve_and_push(&dests, &reading, Arch::Aarch64, b, ReadEnv::default()),
    );
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(ra.entry.digest, a_digest);
    assert_eq!(rb.entry.digest, b_digest);
    for art in [&ra, &rb] {
        assert!(
            art.layers[0].size > 4 << 20,
            "the layer must be larger than a pass reads ahead: {}",
            art.layers[0].size
        );
        for (layout, blob) in layouts
            .iter()
            .flat_map(|l| art.layers.iter().chain([&art.config]).map(move |b| (l, b)))
        {
            let bytes = std::fs::read(layout.blob_path(&blob.digest).unwrap()).unwrap();
            assert_eq!(bytes.len() as u64, blob.size, "{}", blob.digest);
            assert_eq!(archgate_native::sha256_digest(&bytes), blob.digest);
        }
    }
    assert_eq!(reading.readers.available_permits(), 1);
}

/// A pass tells of the image manifest it meets as soon as it has met it
/// (its signatures can be made ready while the layers still go up), and
/// again once it has read the archive; never of a config or a layer. The
/// manifest itself is not sent as a blob.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_tells_of_the_manifest_it_meets() {
    let tmp = tempfile::tempdir().unwrap();
    let (art, digest) = archive(tmp.path(), "x86_64", &noise(1 << 20, 4));
    let dests = vec![Destination::to(AnyStore::Layout(OciLayout::new(
        tmp.path().join("out"),
    )))];
    dests[0].store.prepare().await.unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let told = seen.clone();
    let got = archgate_native::resolve_and_push_then(
        &dests,
        &Reading::new(1, 2),
        (Arch::X86_64, art),
        ReadEnv::default(),
        move |d| told.lock().unwrap().push(d.to_string()),
    )
    .await
    .unwrap();
    assert_eq!(got.entry.digest, digest);
    // Met (a document of the archive), then read.
    assert_eq!(*seen.lock().unwrap(), vec![digest.clone(), digest.clone()]);
    // Its config and layers went up while it was read; the manifest did
    // not go as a blob (publishing puts it as a manifest, under its tag).
    let out = OciLayout::new(tmp.path().join("out"));
    for blob in got.layers.iter().chain([&got.config]) {
        assert!(
            out.blob_path(&blob.digest).unwrap().exists(),
            "{}",
            blob.digest
        );
    }
    assert!(
        !out.blob_path(&digest).unwrap().exists(),
        "the manifest was sent as a blob"
    );
}

/// A layer that is not what its name says, in an archive the compose gave
/// no checksum for: the pass leaves the layer to its destination to check
/// (a layout checks before its rename, a registry on upload), the
/// destination refuses it, and the artifact is read again checking every
/// blob: the arch is `failed`, naming the blob, and nothing of it is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layer_that_is_not_what_its_name_says_fails_its_arch_though_only_its_destination_hashed_it(
) {
    let tmp = tempfile::tempdir().unwrap();
    let (art, _) = archive(tmp.path(), "x86_64", &noise(12 << 20, 3));
    let Location::Path(path) = &art.location else {
        unreachable!()
    };
    let mut bytes = std::fs::read(path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(path, bytes).unwrap();
    let layout = OciLayout::new(tmp.path().join("out"));
    let dests = vec![Destination::to(AnyStore::Layout(layout.clone()))];
    dests[0].store.prepare().await.unwrap();
    let got = resolve_and_push(
        &dests,
        &Reading::new(1, 2),
        Arch::X86_64,
        art,
        ReadEnv::default(),
    )
    .await;
    match got {
        Err(archgate_native::ReadFailure::Unusable(why)) => {
            assert!(why.contains("in the archive has content"), "{why}")
        }
        other => panic!("the arch must be failed: {other:?}"),
    }
    let kept: Vec<_> = std::fs::read_dir(tmp.path().join("out/blobs/sha256"))
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    let large: Vec<_> = kept
        .iter()
        .filter(|p| std::fs::metadata(p).unwrap().len() > 4 << 20)
        .collect();
    assert!(large.is_empty(), "the bad layer is not kept: {large:?}");
}
