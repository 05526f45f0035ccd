//! One build for the README's commands: `cargo build --release -p kuper-bridge -p
//! kuper-bridge-bench` (BENCHMARKS.md) and then `cargo run --release -p kuper-bridge` (README)
//! must not build anything twice. Cargo unifies features over the packages it is asked to
//! build, so a dependency only the benchmark brings can turn on a feature of a crate the
//! gateway shares (it did: `tempfile` → `rustix` → `bitflags/std`, ten crates rebuilt), and
//! the gateway alone then needs those crates compiled again without it.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on what it did not expect

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// `cargo tree` for these packages: package → the feature sets it is built with (one per
/// platform, host for build scripts and proc-macros, target for the rest).
fn resolved(packages: &[&str]) -> BTreeMap<String, BTreeSet<String>> {
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.toml");
    let mut command = Command::new(env!("CARGO"));
    command.args(["tree", "--locked", "--manifest-path", manifest, "-e", "normal,build", "--prefix", "none"]);
    command.args(["--format", "{p}|{f}"]);
    for package in packages {
        command.args(["-p", package]);
    }
    let output = command.output().expect("run cargo tree");
    assert!(output.status.success(), "cargo tree failed: {}", String::from_utf8_lossy(&output.stderr));
    let mut packages: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Some((package, features)) = line.split_once('|') else { continue };
        let features = features.trim_end_matches(" (*)").trim().to_owned();
        // `name vX.Y.Z` (a path dependency adds its path; the name and version identify it).
        let id: String = package.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
        packages.entry(id).or_default().insert(features);
    }
    packages
}

#[test]
fn building_the_benchmark_beside_the_gateway_changes_no_feature_of_the_gateways_crates() {
    let gateway = resolved(&["kuper-bridge"]);
    let both = resolved(&["kuper-bridge", "kuper-bridge-bench"]);
    assert!(gateway.len() > 50, "cargo tree listed the gateway's graph: {gateway:?}");
    let changed: Vec<String> = gateway
        .iter()
        .filter(|(package, features)| both.get(*package) != Some(*features))
        .map(|(package, features)| format!("{package}: alone {features:?}, beside the benchmark {:?}", both[package]))
        .collect();
    assert!(
        changed.is_empty(),
        "the benchmark changes the features of crates the gateway shares, so the README's commands \
         build them twice; give the benchmark dependencies that enable no new feature (or enable the \
         same feature in the gateway):\n{}",
        changed.join("\n")
    );
}
