//! Archive artifacts: every packing and compression, checksums, and the
//! entries that are refused.

use std::fs;
use std::path::Path;

use archgate_core::{Arch, Artifact, Checksum, Location};
use archgate_fixtures::{
    tar_of, write_docker_archive, write_layout, write_oci_archive, Compress, Image,
};
use archgate_native::BlobSource;
use archgate_native::{resolve, ReadFailure, ResolvedArtifact};

fn artifact(path: &Path, sha256: Option<String>) -> Artifact {
    let mut a = Artifact::at(Location::Path(path.to_path_buf()));
    a.checksum = sha256.map(|hex| Checksum::new("sha256", &hex).unwrap().unwrap());
    a
}

/// The reason an artifact is unusable (its arch fails); anything else panics.
fn unusable(arch: Arch, artifact: &Artifact) -> String {
    match resolve(arch, artifact) {
        Err(ReadFailure::Unusable(reason)) => reason,
        Err(ReadFailure::Internal(e)) => panic!("an internal error, not an unusable artifact: {e}"),
        Err(ReadFailure::Later(_, e)) => {
            panic!("a transient error, not an unusable artifact: {e}")
        }
        Ok(_) => panic!("{}: read, but should be unusable", artifact.location),
    }
}

fn ok(arch: Arch, path: &Path) -> ResolvedArtifact {
    resolve(arch, &artifact(path, None)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn oci_archives_keep_the_manifest_digest_in_every_compression() {
    let tmp = tempfile::tempdir().unwrap();
    let image = Image::for_arch("aarch64", "oci archive");
    let layout_digest = write_layout(&tmp.path().join("layout"), &image).unwrap();
    for c in Compress::ALL {
        let path = tmp.path().join(format!("img.oci.tar{}", c.suffix()));
        let digest = write_oci_archive(&path, &image, c).unwrap();
        assert_eq!(digest, layout_digest);
        let art = ok(Arch::Aarch64, &path);
        assert_eq!(art.entry.digest, layout_digest, "{c:?}");
        assert_eq!(art.entry.platform.to_string(), "linux/arm64");
        assert!(matches!(art.source, BlobSource::Archive { .. }));
    }
}

#[test]
fn docker_archives_become_gzip_oci_layers_deterministically() {
    let tmp = tempfile::tempdir().unwrap();
    let image = Image::for_arch("x86_64", "docker archive");
    let mut digests = Vec::new();
    for c in Compress::ALL {
        let path = tmp.path().join(format!("img.tar{}", c.suffix()));
        write_docker_archive(&path, &image, c).unwrap();
        let art = ok(Arch::X86_64, &path);
        assert_eq!(art.layers.len(), 1);
        assert_eq!(
            art.layers[0].media_type,
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
        let BlobSource::Archive { layers, .. } = &art.source else {
            panic!()
        };
        assert_eq!(layers.len(), 1);
        digests.push(art.entry.digest.clone());
    }
    digests.dedup();
    assert_eq!(
        digests.len(),
        1,
        "the same image gives the same manifest whatever the compression"
    );
    // And again, later: the same bytes.
    let again = ok(Arch::X86_64, &tmp.path().join("img.tar"));
    assert_eq!(again.entry.digest, digests[0]);
}

#[test]
fn the_compose_checksum_is_checked_in_the_same_pass() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("img.oci.tar.xz");
    write_oci_archive(&path, &Image::for_arch("x86_64", "sum"), Compress::Xz).unwrap();
    let good = archgate_fixtures::digest(&fs::read(&path).unwrap());
    let hex = good.trim_start_matches("sha256:").to_string();
    assert!(resolve(Arch::X86_64, &artifact(&path, Some(hex))).is_ok());
    let err = unusable(Arch::X86_64, &artifact(&path, Some("ab".repeat(32))));
    assert!(
        err.contains("checksum mismatch: the file's sha256 is "),
        "{err}"
    );
}

#[test]
fn every_checksum_algorithm_is_checked() {
    use sha2::Digest;
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("img.oci.tar.gz");
    write_oci_archive(&path, &Image::for_arch("x86_64", "sums"), Compress::Gzip).unwrap();
    let bytes = fs::read(&path).unwrap();
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let right = [
        ("md5", hex(&md5::Md5::digest(&bytes))),
        ("sha1", hex(&sha1::Sha1::digest(&bytes))),
        ("sha256", hex(&sha2::Sha256::digest(&bytes))),
        ("sha512", hex(&sha2::Sha512::digest(&bytes))),
    ];
    for (algo, good) in &right {
        let mut a = Artifact::at(Location::Path(path.clone()));
        a.checksum = Some(Checksum::new(algo, good).unwrap().unwrap());
        assert!(resolve(Arch::X86_64, &a).is_ok(), "{algo}");
        let bad: String = good.chars().rev().collect();
        a.checksum = Some(Checksum::new(algo, &bad).unwrap().unwrap());
        let err = unusable(Arch::X86_64, &a);
        assert!(
            err.contains(&format!("checksum mismatch: the file's {algo} is {good}")),
            "{err}"
        );
    }
}

#[test]
fn an_arm_config_without_variant_is_armhfp_v7() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("armhfp.tar.xz");
    let image = Image {
        variant: None,
        ..Image::for_arch("armhfp", "old armhfp")
    };
    write_docker_archive(&path, &image, Compress::Xz).unwrap();
    let art = ok(Arch::Armhfp, &path);
    assert_eq!(art.entry.platform.to_string(), "linux/arm/v7");
    let oci = tmp.path().join("armhfp.oci.tar");
    write_oci_archive(&oci, &image, Compress::None).unwrap();
    assert_eq!(
        ok(Arch::Armhfp, &oci).entry.platform.to_string(),
        "linux/arm/v7"
    );
}

#[test]
fn a_blob_that_is_not_its_name_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    let manifest = write_layout(&layout, &Image::for_arch("x86_64", "tamper")).unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(
        &fs::read(
            layout
                .join("blobs/sha256")
                .join(manifest.trim_start_matches("sha256:")),
        )
        .unwrap(),
    )
    .unwrap();
    let layer = format!(
        "blobs/sha256/{}",
        manifest["layers"][0]["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:")
    );
    let mut files = Vec::new();
    for entry in walk(&layout) {
        let mut data = fs::read(&entry).unwrap();
        let rel = entry
            .strip_prefix(&layout)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if rel == layer {
            let middle = data.len() / 2;
            data[middle] ^= 0xff;
        }
        files.push((rel, data));
    }
    let path = tmp.path().join("bad.oci.tar");
    fs::write(&path, tar_of(&files).unwrap()).unwrap();
    let err = unusable(Arch::X86_64, &artifact(&path, None));
    assert!(err.contains("in the archive has content sha256:"), "{err}");
}

fn walk(root: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p)
            } else {
                out.push(p)
            }
        }
    }
    out.sort();
    out
}

/// A tar with one raw entry whose name and type are set by hand.
fn raw_tar(name: &[u8], kind: tar::EntryType, link: Option<&[u8]>) -> Vec<u8> {
    let mut header = tar::Header::new_gnu();
    let data = b"x";
    header.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name);
    if let Some(l) = link {
        header.as_gnu_mut().unwrap().linkname[..l.len()].copy_from_slice(l);
    }
    header.set_entry_type(kind);
    header.set_size(if kind.is_file() { 1 } else { 0 });
    header.set_mode(0o644);
    header.set_cksum();
    let mut b = tar::Builder::new(Vec::new());
    if kind.is_file() {
        b.append(&header, &data[..]).unwrap();
    } else {
        b.append(&header, &[][..]).unwrap();
    }
    b.into_inner().unwrap()
}

#[test]
fn unsafe_entries_are_refused_with_a_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: [(&str, Vec<u8>, &str); 5] = [
        (
            "absolute",
            raw_tar(b"/etc/passwd", tar::EntryType::Regular, None),
            "has an absolute path",
        ),
        (
            "dotdot",
            raw_tar(b"../../evil", tar::EntryType::Regular, None),
            "has `..` in its path",
        ),
        (
            "symlink",
            raw_tar(b"index.json", tar::EntryType::Symlink, Some(b"/etc/passwd")),
            "is a link",
        ),
        (
            "hardlink",
            raw_tar(b"index.json", tar::EntryType::Link, Some(b"other")),
            "is a link",
        ),
        (
            "device",
            raw_tar(b"dev", tar::EntryType::Char, None),
            "is not a regular file",
        ),
    ];
    for (name, tar, reason) in cases {
        let path = tmp.path().join(format!("{name}.tar"));
        fs::write(&path, tar).unwrap();
        let err = unusable(Arch::X86_64, &artifact(&path, None));
        assert!(err.contains(reason), "{name}: {err}");
    }
    assert_eq!(
        fs::read_dir(tmp.path()).unwrap().count(),
        5,
        "nothing was written beside the archives"
    );
}

#[test]
fn a_size_that_disagrees_with_its_descriptor_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    write_layout(&layout, &Image::for_arch("x86_64", "sizes")).unwrap();
    // Rewrite the manifest with a wrong layer size, and index.json to point at it.
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let old = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("blobs/sha256").join(&old)).unwrap()).unwrap();
    manifest["layers"][0]["size"] = serde_json::json!(99999);
    let bytes = serde_json::to_vec(&manifest).unwrap();
    let new = archgate_fixtures::digest(&bytes);
    fs::write(
        layout
            .join("blobs/sha256")
            .join(new.trim_start_matches("sha256:")),
        &bytes,
    )
    .unwrap();
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": new, "size": bytes.len()}]});
    fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    let mut files = Vec::new();
    for p in walk(&layout) {
        files.push((
            p.strip_prefix(&layout)
                .unwrap()
                .to_string_lossy()
                .into_owned(),
            fs::read(&p).unwrap(),
        ));
    }
    let path = tmp.path().join("sizes.oci.tar");
    fs::write(&path, tar_of(&files).unwrap()).unwrap();
    let err = unusable(Arch::X86_64, &artifact(&path, None));
    assert!(
        err.contains("bytes in the archive, 99999 in its descriptor"),
        "{err}"
    );
}

#[test]
fn a_docker_archive_for_another_arch_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("img.tar.gz");
    write_docker_archive(&path, &Image::for_arch("s390x", "z"), Compress::Gzip).unwrap();
    let err = unusable(Arch::X86_64, &artifact(&path, None));
    assert!(
        err.contains("its config says linux/s390x (s390x), but it was delivered as x86_64"),
        "{err}"
    );
    let junk = tmp.path().join("junk.tar.xz");
    fs::write(&junk, b"\xfd7zXZ\x00 definitely not xz").unwrap();
    unusable(Arch::X86_64, &artifact(&junk, None));
}

#[test]
fn the_cache_remembers_a_checked_archive_until_it_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let path = tmp.path().join("img.oci.tar.zst");
    write_oci_archive(&path, &Image::for_arch("x86_64", "cached"), Compress::Zstd).unwrap();
    let first = archgate_native::resolve_cached(Arch::X86_64, &artifact(&path, None), Some(&cache))
        .unwrap();
    assert_eq!(fs::read_dir(&cache).unwrap().count(), 1);
    let again = archgate_native::resolve_cached(Arch::X86_64, &artifact(&path, None), Some(&cache))
        .unwrap();
    assert_eq!(
        (again.entry, again.manifest, again.config, again.layers),
        (
            first.entry.clone(),
            first.manifest,
            first.config,
            first.layers
        )
    );
    // Asked as another arch, the cached answer does not do: the file is read and refused.
    let err = archgate_native::resolve_cached(Arch::Aarch64, &artifact(&path, None), Some(&cache))
        .unwrap_err();
    assert!(
        matches!(&err, ReadFailure::Unusable(r) if r.contains("delivered as aarch64")),
        "{err}"
    );
    // A changed file is read again.
    fs::write(&path, b"not an archive any more").unwrap();
    assert!(
        archgate_native::resolve_cached(Arch::X86_64, &artifact(&path, None), Some(&cache))
            .is_err()
    );
}

#[test]
fn a_cache_entry_that_makes_no_sense_is_a_miss() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let path = tmp.path().join("img.oci.tar.xz");
    write_oci_archive(
        &path,
        &Image::for_arch("x86_64", "broken cache"),
        Compress::Xz,
    )
    .unwrap();
    let read = || {
        archgate_native::resolve_cached(Arch::X86_64, &artifact(&path, None), Some(&cache)).unwrap()
    };
    let first = read();
    let entry = fs::read_dir(&cache)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let good: serde_json::Value = serde_json::from_slice(&fs::read(&entry).unwrap()).unwrap();
    let mut breakages: Vec<(&str, serde_json::Value)> = Vec::new();
    let mut v = good.clone();
    v["layers"] = serde_json::json!([]);
    v["config"] = serde_json::json!({});
    breakages.push(("no config descriptor", v));
    let mut v = good.clone();
    v["manifest"] = serde_json::json!("{}");
    breakages.push(("a manifest that is not its digest", v));
    let mut v = good.clone();
    v["config_json"] = serde_json::json!("{\"architecture\": \"amd64\"}");
    breakages.push(("a config that is not its digest", v));
    let mut v = good.clone();
    v["blobs"] = serde_json::json!([]);
    v.as_object_mut().unwrap().remove("layers");
    breakages.push(("the old shape", v));
    breakages.push(("not JSON", serde_json::json!("][")));
    for (what, value) in breakages {
        let text = match &value {
            serde_json::Value::String(s) if s == "][" => s.clone(),
            v => v.to_string(),
        };
        fs::write(&entry, text).unwrap();
        let again = read();
        assert_eq!(again.entry, first.entry, "{what}");
        assert_eq!(again.config, first.config, "{what}");
        assert_eq!(again.layers, first.layers, "{what}");
        // Read again from the archive, and the entry written anew.
        let rewritten: serde_json::Value =
            serde_json::from_slice(&fs::read(&entry).unwrap()).unwrap();
        assert_eq!(rewritten, good, "{what}");
    }
}
