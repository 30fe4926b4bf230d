//! Names the commit archgate is built from, for `--version`.

fn main() {
    // A build from a tree without .git (a container build) is told: by
    // ARCHGATE_COMMIT, or by OpenShift's OPENSHIFT_BUILD_COMMIT.
    println!("cargo:rerun-if-env-changed=ARCHGATE_COMMIT");
    println!("cargo:rerun-if-env-changed=OPENSHIFT_BUILD_COMMIT");
    let told = ["ARCHGATE_COMMIT", "OPENSHIFT_BUILD_COMMIT"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .map(|c| c.trim().chars().take(12).collect::<String>())
        .find(|c| !c.is_empty());
    let from_git = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|c| !c.is_empty());
    let commit = from_git
        .clone()
        .or(told)
        .unwrap_or_else(|| "unknown".to_string());
    let dirty = from_git.is_some()
        && std::process::Command::new("git")
            .args(["status", "--porcelain", "--untracked-files=no"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .is_some_and(|o| !o.stdout.is_empty());
    let suffix = if dirty { "-dirty" } else { "" };
    println!("cargo:rustc-env=ARCHGATE_COMMIT={commit}{suffix}");
    // Again when HEAD moves (a commit, a checkout) or the index changes.
    for path in ["../.git/HEAD", "../.git/index", "../.git/refs/heads"] {
        if std::path::Path::new(path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}
