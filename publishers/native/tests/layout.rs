//! The layout writer's guarantees: checked blobs, atomic index.json, the
//! moved-tag check, and no path escapes through a digest.

use std::collections::BTreeMap;
use std::fs;

use archgate_core::{decide, Arch, ArchInput, ComposeStatus, GateInput, GateSettings};
use archgate_core::{Artifact, Location};
use archgate_fixtures::{write_layout, Image};
use archgate_native::resolve;
use archgate_native::Descriptor;
use archgate_native::OciLayout;
use archgate_native::{publish, Target};

fn desc(digest: &str, size: u64) -> Descriptor {
    Descriptor {
        media_type: "application/octet-stream".into(),
        digest: digest.into(),
        size,
        urls: None,
        annotations: None,
        platform: None,
        artifact_type: None,
    }
}

fn no_temp_files(dir: &std::path::Path) -> bool {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".archgate-tmp")
            {
                return false;
            }
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
    true
}

#[test]
fn a_blob_that_does_not_match_is_not_written() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = OciLayout::new(tmp.path().join("l"));
    layout.init().unwrap();
    let good = archgate_native::sha256_digest(b"hello");
    let err = layout
        .write_blob(&desc(&good, 5), &b"hellO"[..])
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("but the descriptor says"),
        "{err:#}"
    );
    assert!(!layout.has_blob(&good, 5));
    layout.write_blob(&desc(&good, 5), &b"hello"[..]).unwrap();
    assert!(layout.has_blob(&good, 5));
    assert!(no_temp_files(layout.root()));
}

#[test]
fn digests_cannot_name_paths_outside_the_layout() {
    let layout = OciLayout::new("/tmp/whatever");
    for bad in [
        "sha256:../../etc/passwd",
        "sha512:abcd",
        "sha256:ABCDEF",
        "../x",
    ] {
        assert!(layout.blob_path(bad).is_err(), "{bad}");
    }
}

#[test]
fn a_moved_tag_is_not_overwritten() {
    let tmp = tempfile::tempdir().unwrap();
    let art_dir = tmp.path().join("artifact");
    write_layout(&art_dir, &Image::for_arch("x86_64", "one")).unwrap();
    let art = resolve(Arch::X86_64, &Artifact::at(Location::Path(art_dir))).unwrap();

    let status = ComposeStatus::Finished;
    let results = vec![(Arch::X86_64, ArchInput::Built(art.entry.clone()))];
    let settings = GateSettings::default();
    let plan = decide(&GateInput {
        status: &status,
        results: &results,
        current: None,
        settings: &settings,
        annotations: &Default::default(),
        compose: None,
        now: 0,
    })
    .unwrap();

    // Someone else tags 41 after archgate planned against "no index".
    let target = OciLayout::new(tmp.path().join("target"));
    let other = write_layout(target.root(), &Image::for_arch("x86_64", "someone else")).unwrap();
    let index = fs::read_to_string(target.root().join("index.json"))
        .unwrap()
        .replace("\"latest\"", "\"41\"");
    fs::write(target.root().join("index.json"), &index).unwrap();

    let artifacts = BTreeMap::from([(Arch::X86_64, art)]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let arch_tags = [(Arch::X86_64, "41-x86_64".to_string())];
    let t = Target {
        store: &target,
        tag: "41",
        planned_from: None,
        sign: None,
    };
    let err = rt
        .block_on(publish(&t, &plan, &artifacts, &arch_tags))
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("tag 41 moved") && msg.contains(&other),
        "{msg}"
    );
    assert_eq!(
        target.find_tag("41").unwrap().unwrap().digest,
        other,
        "the moved tag is left as it is"
    );

    // Planned against the right digest, it goes through and reads back.
    let t = Target {
        store: &target,
        tag: "41",
        planned_from: Some(&other),
        sign: None,
    };
    let digest = rt
        .block_on(publish(&t, &plan, &artifacts, &arch_tags))
        .unwrap()
        .digest
        .unwrap();
    assert_eq!(target.find_tag("41").unwrap().unwrap().digest, digest);
    assert!(no_temp_files(target.root()));
}

#[test]
fn resolve_reports_why_an_artifact_is_unusable() {
    let tmp = tempfile::tempdir().unwrap();
    let at = |p: &std::path::Path| Artifact::at(Location::Path(p.to_path_buf()));
    let missing = resolve(Arch::X86_64, &at(&tmp.path().join("missing")))
        .unwrap_err()
        .to_string();
    assert!(
        missing.contains("missing: cannot read artifact"),
        "{missing}"
    );

    let dir = tmp.path().join("arm");
    write_layout(&dir, &Image::for_arch("aarch64", "a")).unwrap();
    let wrong = resolve(Arch::X86_64, &at(&dir)).unwrap_err().to_string();
    assert!(
        wrong.ends_with("its config says linux/arm64 (aarch64), but it was delivered as x86_64"),
        "{wrong}"
    );

    let ok = resolve(Arch::Aarch64, &at(&dir)).unwrap();
    assert_eq!(ok.entry.platform.to_string(), "linux/arm64");
    assert_eq!(ok.entry.created.as_deref(), Some("2024-11-01T00:00:00Z"));
    assert_eq!(ok.blobs().count(), 2);

    let file = tmp.path().join("x.oci.tar.xz");
    fs::write(&file, b"xz").unwrap();
    let err = resolve(Arch::X86_64, &at(&file)).unwrap_err().to_string();
    assert!(err.starts_with(&format!("{}: ", file.display())), "{err}");
}
