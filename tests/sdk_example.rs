//! The SDK's example program (`sdk/examples/quickstart.rs`) against a real
//! `dlog standalone` node: it writes and reads through the `distributedlog`
//! crate alone, and a second run continues the same log.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::standalone::Standalone;

/// The example's binary: the one the test build made beside this test
/// (`cargo test` and `cargo nextest run` build examples too), else built
/// now with the workspace's features.
fn example_binary() -> PathBuf {
    let deps = std::env::current_exe().unwrap();
    let built = deps
        .parent()
        .and_then(Path::parent)
        .map(|profile| profile.join("examples").join("quickstart"));
    if let Some(built) = built.filter(|path| path.is_file()) {
        return built;
    }
    let output = Command::new(env!("CARGO"))
        .args([
            "build",
            "--workspace",
            "--locked",
            "--example",
            "quickstart",
        ])
        .arg("--message-format=json-render-diagnostics")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(output.status.success(), "building the example failed");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|message| message["target"]["name"] == "quickstart")
        .find_map(|message| message["executable"].as_str().map(PathBuf::from))
        .expect("cargo names the example's executable")
}

/// Runs the example with `args`; its stdout, after asserting it succeeded.
fn run_example(binary: &Path, args: &[&str]) -> String {
    let output = Command::new(binary).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "the example failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn the_sdk_example_writes_and_reads_a_standalone_node() {
    let node = Standalone::start();
    let endpoint = node.address();
    let example = example_binary();

    let first = run_example(&example, &[&endpoint, "sdk/example"]);
    assert!(first.contains("created sdk/example"), "{first}");
    assert!(
        first.contains("wrote 100 records at offsets 0..100"),
        "{first}"
    );
    assert!(first.contains("read 100 records back in order"), "{first}");

    // A second run finds the log and continues it.
    let second = run_example(&example, &[&endpoint, "sdk/example"]);
    assert!(second.contains("sdk/example exists"), "{second}");
    assert!(
        second.contains("wrote 100 records at offsets 100..200"),
        "{second}"
    );
    assert!(second.contains("next offset 200"), "{second}");
}
