//! Every command through the binary: output, `--json`, exit codes, and what the store holds.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{TestIndex, closed_port, code, engram, parse, run};

fn ids(v: &Value, key: &str) -> Vec<String> {
    v[key]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    let e = if e.get("entry").is_some() { &e["entry"] } else { e };
                    e["id"].as_str().unwrap_or_default().to_owned()
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn remember_recall_get_list_forget_round_trip() {
    let Some(ix) = TestIndex::new("remember_recall_get_list_forget_round_trip") else { return };
    let ns = "agent-rt";
    let (c, v) = ix.json(&[
        "remember",
        "the user prefers short answers",
        "-n",
        ns,
        "-t",
        "semantic",
        "-i",
        "0.8",
        "--tag",
        "pref",
        "--meta",
        "source=chat",
        "--meta",
        "turn=3",
    ]);
    assert_eq!(c, 0, "{v}");
    let id = v["id"].as_str().expect("an id").to_owned();
    let (c, _) = ix.json(&["remember", "the build failed on arm64", "-n", ns, "-t", "episodic"]);
    assert_eq!(c, 0);

    // Recall finds the semantic memory first, and a type filter keeps only episodic ones.
    let (c, v) = ix.json(&["recall", "short answers please", "-n", ns, "-k", "2"]);
    assert_eq!(c, 0, "{v}");
    assert_eq!(ids(&v, "results").first(), Some(&id), "{v}");
    let (_, v) = ix.json(&["recall", "short answers please", "-n", ns, "-t", "episodic"]);
    let types: Vec<&str> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["entry"]["memory_type"].as_str().unwrap())
        .collect();
    assert_eq!(types, vec!["episodic"], "{v}");
    let (_, v) = ix.json(&["recall", "short answers", "-n", "other-ns"]);
    assert_eq!(ids(&v, "results"), Vec::<String>::new(), "nothing crosses namespaces");

    // get counts an access; --peek does not.
    let (c, v) = ix.json(&["get", &id, "-n", ns]);
    assert_eq!(c, 0);
    assert_eq!(v["content"], "the user prefers short answers");
    assert_eq!(v["tags"], serde_json::json!(["pref"]));
    assert_eq!(v["metadata"]["turn"], 3);
    assert_eq!(v["access_count"], 1);
    let (_, v) = ix.json(&["get", &id, "-n", ns, "--peek"]);
    assert_eq!(v["access_count"], 1, "peek must not count an access");

    let (c, v) = ix.json(&["list", "-n", ns, "--all"]);
    assert_eq!(c, 0);
    assert_eq!(ids(&v, "entries").len(), 2, "{v}");

    // Forget: gone afterwards; forgetting it again reports the miss with exit code 1.
    let (c, v) = ix.json(&["forget", &id, "-n", ns]);
    assert_eq!((c, v["deleted"].as_u64()), (0, Some(1)), "{v}");
    let (c, v) = ix.json(&["get", &id, "-n", ns]);
    assert_eq!(c, 1, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("not found"), "{v}");
    let (c, v) = ix.json(&["forget", &id, "-n", ns]);
    assert_eq!((c, v["missing"].as_u64()), (1, Some(1)), "{v}");

    // Text output for people.
    let out = ix.run(&["list", "-n", ns]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("the build failed on arm64") && text.contains("episodic"), "{text}");
}

#[test]
fn bad_input_exits_2_and_stores_nothing() {
    let Some(ix) = TestIndex::new("bad_input_exits_2_and_stores_nothing") else { return };
    let ns = "agent-bad";
    let (c, v) = ix.json(&["remember", "x", "-n", ns, "-i", "3"]);
    assert_eq!(c, 2, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("importance"), "{v}");

    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("v.json");
    std::fs::write(&short, "[0.1, 0.2, 0.3]").unwrap();
    let (c, v) = ix.json(&["remember", "x", "-n", ns, "--embedding-file", short.to_str().unwrap()]);
    assert_eq!(c, 2, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("3 dimensions, the index expects 384"),
        "{v}"
    );
    std::fs::write(&short, "{\"a\": 1}").unwrap();
    let (c, v) = ix.json(&["recall", "-n", ns, "--vector-file", short.to_str().unwrap()]);
    assert_eq!(c, 2, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("found an object"), "{v}");
    let (c, _) = ix.json(&["remember", "x", "-n", "__engram"]);
    assert_eq!(c, 2, "reserved namespace");

    let (c, v) = ix.json(&["stats", "-n", ns]);
    assert_eq!(c, 0);
    assert_eq!(v["namespace_count"], 0, "rejected input stored nothing: {v}");
    assert_eq!(v["index"]["indexing_failures"], 0, "{v}");

    // A bad configuration value names its field and source.
    let mut cmd = ix.cmd(&["--json", "list", "-n", ns]);
    cmd.env("ENGRAM__RETRY__MAX_ATTEMPTS", "many");
    let out = run(cmd);
    assert_eq!(code(&out), 2);
    let msg = parse(&out)["error"]["message"].as_str().unwrap().to_owned();
    assert!(
        msg.contains("retry.max_attempts") && msg.contains("ENGRAM__RETRY__MAX_ATTEMPTS"),
        "{msg}"
    );
}

#[test]
fn an_index_with_another_schema_exits_3() {
    let Some(ix) = TestIndex::new("an_index_with_another_schema_exits_3") else { return };
    // Describing a missing index does not create it.
    for _ in 0..2 {
        let (c, v) = ix.json(&["index", "describe"]);
        assert_eq!(c, 3, "{v}");
        let msg = v["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains("does not exist") && msg.contains("index ensure"), "{v}");
    }
    assert_eq!(ix.json(&["index", "ensure"]).0, 0);
    let mut cmd = ix.cmd(&["--json", "index", "describe"]);
    cmd.env("ENGRAM__INDEX__DIMENSION", "12");
    let out = run(cmd);
    assert_eq!(code(&out), 3);
    let v = parse(&out);
    assert_eq!(v["error"]["storage_kind"], "schema_mismatch", "{v}");
    let (c, v) = ix.json(&["index", "describe"]);
    assert_eq!(c, 0);
    assert_eq!(v["schema"]["vector"]["dimension"], 384);
    assert_eq!(v["schema"]["name"], ix.name.as_str());
}

#[test]
fn unreachable_server_exits_3_and_health_says_unhealthy() {
    // No server needed: nothing listens on this port.
    let url = format!("redis://127.0.0.1:{}", closed_port());
    let mut cmd = engram(&["--json", "list", "-n", "x"]);
    cmd.env("REDIS_URL", &url).env("ENGRAM__REDIS__CONNECT_TIMEOUT", "1s");
    let out = run(cmd);
    assert_eq!(code(&out), 3, "{}", String::from_utf8_lossy(&out.stdout));
    let msg = parse(&out)["error"]["message"].as_str().unwrap().to_owned();
    assert!(msg.contains("cargo xtask stack up"), "{msg}");
    assert!(msg.contains("Connection refused (os error 111)"), "an I/O error as it reads: {msg}");

    let mut cmd = engram(&["--json", "health"]);
    cmd.env("REDIS_URL", &url).env("ENGRAM__REDIS__CONNECT_TIMEOUT", "1s");
    let out = run(cmd);
    assert_eq!(code(&out), 2);
    assert_eq!(parse(&out)["status"], "unhealthy");
}

#[test]
fn usage_errors_exit_2_and_help_exits_0() {
    let out = run(engram(&["recall", "-n", "x"]));
    assert_eq!(code(&out), 2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("<QUERY>"));
    let out = run(engram(&["--help"]));
    assert_eq!(code(&out), 0);
    let help = String::from_utf8_lossy(&out.stdout);
    for cmd in [
        "remember",
        "recall",
        "get",
        "forget",
        "list",
        "stats",
        "health",
        "serve-metrics",
        "index",
        "import",
    ] {
        assert!(help.contains(cmd), "help lists {cmd}");
    }
    let out = run(engram(&["--json", "config", "check", "/nonexistent/engram.toml"]));
    assert_eq!(code(&out), 2);
}

#[test]
fn config_check_never_prints_the_password() {
    let mut cmd = engram(&["--json", "config", "check"]);
    cmd.env("REDIS_URL", "redis://user:hunter2-secret@127.0.0.1:6379");
    let out = run(cmd);
    assert_eq!(code(&out), 0);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("127.0.0.1:6379"), "{text}");
}

#[test]
fn import_reports_each_bad_line_and_imports_the_rest() {
    let Some(ix) = TestIndex::new("import_reports_each_bad_line_and_imports_the_rest") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("m.jsonl");
    std::fs::write(
        &file,
        concat!(
            "{\"content\":\"the user likes tea\",\"type\":\"semantic\",\"tags\":[\"pref\"]}\n",
            "{\"content\":\"\"}\n",
            "{\"content\":\"meeting at noon\",\"namespace\":\"agent-imp2\",\"expires_in\":\"1h\"}\n",
            "not json\n",
            "\n",
            "{\"content\":\"deploys happen on tuesdays\",\"importance\":0.9,\"id\":\"deploy-day\"}\n",
        ),
    )
    .unwrap();
    let (c, v) = ix.json(&["import", file.to_str().unwrap(), "-n", "agent-imp"]);
    assert_eq!(c, 2, "every failure was bad input: {v}");
    assert_eq!((v["imported"].as_u64(), v["failed"].as_u64()), (Some(3), Some(2)), "{v}");
    let lines: Vec<u64> =
        v["errors"].as_array().unwrap().iter().map(|e| e["line"].as_u64().unwrap()).collect();
    assert_eq!(lines, vec![2, 4], "{v}");
    let (_, v) = ix.json(&["get", "deploy-day", "-n", "agent-imp", "--peek"]);
    assert_eq!(v["importance"].as_f64().map(|x| (x * 10.0).round()), Some(9.0), "{v}");
    assert_eq!(v["memory_type"], "semantic", "the default type of import");
    let (_, v) = ix.json(&["stats", "-n", "agent-imp2"]);
    assert_eq!(v["namespace_count"], 1, "{v}");
}

#[test]
fn health_and_stats_report_the_index() {
    let Some(ix) = TestIndex::new("health_and_stats_report_the_index") else { return };
    assert_eq!(ix.json(&["remember", "one memory", "-n", "agent-h"]).0, 0);
    let (c, v) = ix.json(&["health"]);
    assert_eq!(c, 0, "{v}");
    assert_eq!(v["status"], "healthy");
    assert!(v["checker"]["checks_run"].as_u64().unwrap() >= 2, "{v}");
    assert!(v["index"]["documents"].as_u64().unwrap() >= 1, "{v}");
    let (c, v) = ix.json(&["stats"]);
    assert_eq!(c, 0);
    let ops: Vec<&str> = v["metrics"]["operations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["operation"].as_str().unwrap())
        .collect();
    assert!(ops.contains(&"ensure_index"), "{v}");
    assert_eq!(v["metrics"]["breaker"]["state"], "closed");
}

#[test]
fn serve_metrics_exposes_histograms_with_buckets() {
    let Some(ix) = TestIndex::new("serve_metrics_exposes_histograms_with_buckets") else { return };
    let port = closed_port();
    let address = format!("127.0.0.1:{port}");
    let mut child = ix
        .cmd(&["serve-metrics", "--address", &address, "--seconds", "20"])
        .spawn()
        .expect("spawn serve-metrics");
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut body = String::new();
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        if let Ok(mut s) = std::net::TcpStream::connect(&address) {
            let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            body.clear();
            let _ = s.read_to_string(&mut body);
            if body.contains("engram_index_documents") {
                break;
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(body.contains("engram_build_info"), "{body}");
    assert!(body.contains(&format!("engram_index_documents{{index=\"{}\"}}", ix.name)), "{body}");
    assert!(
        body.contains("engram_operation_duration_seconds_bucket"),
        "histograms, not summaries: {body}"
    );
    assert!(!body.contains("quantile="), "no summaries: {body}");
}

#[test]
fn demo_runs_every_step() {
    let Some(ix) = TestIndex::new("demo_runs_every_step") else { return };
    let (c, v) = ix.json(&["demo", "--ttl-seconds", "1"]);
    assert_eq!(c, 0, "{v}");
    let steps: Vec<&str> =
        v["steps"].as_array().unwrap().iter().map(|s| s["step"].as_str().unwrap()).collect();
    for s in ["remember", "update", "touch", "forget", "ttl", "stats", "health"] {
        assert!(steps.contains(&s), "step {s} missing: {steps:?}");
    }
    assert!(v["steps"][0]["data"]["stored"].as_u64().unwrap() >= 200, "{v}");
    assert!(v["seconds"].as_f64().unwrap() < 60.0);
}
