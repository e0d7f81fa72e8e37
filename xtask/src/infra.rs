//! `cargo xtask infra-check`: the infrastructure files checked by real tools.
//!
//! - Prometheus (`promtool check config`, `check rules`, `test rules`), from Debian's
//!   `prometheus` package, unpacked under `target/infra/` without installing a service;
//! - the Grafana dashboard against the vendored grafana-foundation-sdk schema, and every
//!   PromQL expression of the dashboard parsed by promtool;
//! - the Kubernetes manifests against their schemas (`kubernetes-validate --strict`);
//! - docker-compose: every image pinned to a version (no `latest`).
//!
//! Python tools come from PyPI into `target/infra/py` with pinned versions.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

const PY_PACKAGES: [&str; 3] =
    ["jsonschema==4.26.0", "kubernetes-validate==1.37.0", "PyYAML==6.0.3"];

/// Paths under `target/infra/`.
pub(crate) struct Infra {
    root: PathBuf,
    dir: PathBuf,
}

impl Infra {
    pub(crate) fn new(root: &Path) -> Self {
        Self { root: root.to_path_buf(), dir: root.join("target").join("infra") }
    }

    fn unpacked(&self) -> PathBuf {
        self.dir.join("debs").join("root")
    }

    /// The path of a binary from the unpacked Debian packages.
    pub(crate) fn bin(&self, name: &str) -> PathBuf {
        self.unpacked().join("usr").join("bin").join(name)
    }

    fn py(&self) -> PathBuf {
        self.dir.join("py")
    }

    /// Downloads and unpacks `prometheus` and `prometheus-redis-exporter` when missing.
    pub(crate) fn ensure_prometheus(&self) -> Result<()> {
        if self.bin("promtool").is_file() && self.bin("prometheus-redis-exporter").is_file() {
            return Ok(());
        }
        let debs = self.dir.join("debs");
        std::fs::create_dir_all(&debs)?;
        let download = || {
            Command::new("apt-get")
                .args(["download", "-q", "prometheus", "prometheus-redis-exporter"])
                .current_dir(&debs)
                .status()
        };
        let ok = download()
            .context("cannot run apt-get (a Debian machine is needed for Prometheus)")?
            .success();
        if !ok {
            eprintln!("xtask infra-check: refreshing the package lists (apt-get update)");
            let updated = Command::new("apt-get")
                .args(["update", "-qq"])
                .status()
                .context("cannot run apt-get update")?;
            if !updated.success() || !download()?.success() {
                bail!("apt-get could not download prometheus and prometheus-redis-exporter");
            }
        }
        for entry in std::fs::read_dir(&debs)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "deb") {
                let status =
                    Command::new("dpkg").arg("-x").arg(&path).arg(self.unpacked()).status()?;
                if !status.success() {
                    bail!("dpkg -x {} failed", path.display());
                }
            }
        }
        if !self.bin("promtool").is_file() {
            bail!("the prometheus package holds no promtool");
        }
        Ok(())
    }

    /// Installs the pinned Python tools when missing.
    fn ensure_python(&self) -> Result<()> {
        if self.py().join("kubernetes_validate").is_dir() && self.py().join("jsonschema").is_dir() {
            return Ok(());
        }
        let status = Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--root-user-action=ignore",
            ])
            .arg("--target")
            .arg(self.py())
            .args(PY_PACKAGES)
            .status()
            .context("cannot run pip (python3 with pip is needed)")?;
        if !status.success() {
            bail!("pip could not install {}", PY_PACKAGES.join(" "));
        }
        Ok(())
    }

    fn python(&self, script: &str, args: &[&Path]) -> Result<bool> {
        Ok(Command::new("python3")
            .arg("-c")
            .arg(script)
            .args(args)
            .env("PYTHONPATH", self.py())
            .current_dir(&self.root)
            .status()?
            .success())
    }

    fn promtool(&self, args: &[&str]) -> Result<bool> {
        Ok(Command::new(self.bin("promtool"))
            .args(args)
            .current_dir(self.root.join("infrastructure").join("prometheus"))
            .status()
            .context("cannot run promtool")?
            .success())
    }

    /// The dashboard's expressions, with Grafana's `$__rate_interval` replaced by `window`.
    pub(crate) fn dashboard_queries(&self, window: &str) -> Result<Vec<(String, String)>> {
        let out = Command::new("python3")
            .arg("-c")
            .arg(LIST_QUERIES)
            .arg(self.root.join("infrastructure/grafana/dashboards/engram.json"))
            .output()?;
        if !out.status.success() {
            bail!("cannot read the dashboard: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .map(|(title, expr)| (title.to_owned(), expr.replace("$__rate_interval", window)))
            .collect())
    }

    /// Runs every static check; returns the names of those that failed.
    pub(crate) fn check_static(&self) -> Result<Vec<&'static str>> {
        self.ensure_prometheus()?;
        self.ensure_python()?;
        let mut failed = Vec::new();
        let mut run = |name: &'static str, ok: Result<bool>| {
            let ok = ok.unwrap_or_else(|e| {
                eprintln!("xtask infra-check: {name}: {e:#}");
                false
            });
            eprintln!("xtask infra-check: {name}: {}", if ok { "ok" } else { "FAILED" });
            if !ok {
                failed.push(name);
            }
        };
        run("promtool check config", self.promtool(&["check", "config", "prometheus.yml"]));
        run("promtool check rules", self.promtool(&["check", "rules", "alerts.yml"]));
        run("promtool test rules", self.promtool(&["test", "rules", "alerts.test.yml"]));
        run(
            "dashboard schema",
            self.python(
                VALIDATE_DASHBOARD,
                &[
                    &self.root.join("infrastructure/grafana/schema/dashboard.jsonschema.json"),
                    &self.root.join("infrastructure/grafana/dashboards/engram.json"),
                ],
            ),
        );
        run("dashboard PromQL parses", self.check_dashboard_promql());
        let manifests: Vec<PathBuf> = std::fs::read_dir(self.root.join("infrastructure/k8s"))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .collect();
        let k8s = Command::new("python3")
            .args(["-m", "kubernetes_validate", "--strict", "--quiet"])
            .args(&manifests)
            .env("PYTHONPATH", self.py())
            .status()
            .map(|s| s.success())
            .map_err(anyhow::Error::from);
        run("kubernetes manifests", k8s);
        run(
            "compose images pinned",
            self.python(CHECK_COMPOSE, &[&self.root.join("infrastructure/docker-compose.yml")]),
        );
        Ok(failed)
    }

    /// Every dashboard expression, as recording rules, through `promtool check rules`.
    fn check_dashboard_promql(&self) -> Result<bool> {
        let queries = self.dashboard_queries("5m")?;
        if queries.is_empty() {
            bail!("the dashboard has no queries");
        }
        let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
        for (i, (_, expr)) in queries.iter().enumerate() {
            let quoted = expr.replace('\\', "\\\\").replace('"', "\\\"");
            rules.push_str(&format!(
                "      - record: dashboard:query_{i}\n        expr: \"{quoted}\"\n"
            ));
        }
        std::fs::create_dir_all(&self.dir)?;
        let file = self.dir.join("dashboard-queries.rules.yml");
        std::fs::write(&file, rules)?;
        Ok(Command::new(self.bin("promtool"))
            .args(["check", "rules"])
            .arg(&file)
            .status()?
            .success())
    }
}

const LIST_QUERIES: &str = r#"
import json, sys
d = json.load(open(sys.argv[1]))
def walk(panels):
    for p in panels:
        yield p
        yield from walk(p.get("panels", []))
for p in walk(d.get("panels", [])):
    for t in p.get("targets", []):
        if t.get("expr"):
            print(p.get("title", "?") + "\t" + t["expr"].replace("\n", " "))
"#;

const VALIDATE_DASHBOARD: &str = r#"
import json, sys, jsonschema
schema = json.load(open(sys.argv[1]))
dash = json.load(open(sys.argv[2]))
errors = list(jsonschema.Draft7Validator(schema).iter_errors(dash))
for e in errors[:20]:
    print("dashboard:", "/".join(map(str, e.path)), e.message[:300])
sys.exit(1 if errors else 0)
"#;

const CHECK_COMPOSE: &str = r#"
import sys, yaml
c = yaml.safe_load(open(sys.argv[1]))
bad = []
for name, svc in c.get("services", {}).items():
    image = svc.get("image")
    if image is None:
        if "build" not in svc:
            bad.append(f"{name}: neither image nor build")
        continue
    tag = image.rsplit(":", 1)[1] if ":" in image.split("/")[-1] else ""
    if not tag or tag == "latest":
        bad.append(f"{name}: image {image} is not pinned to a version")
for b in bad:
    print("compose:", b)
sys.exit(1 if bad else 0)
"#;

/// A child process killed (and reaped) when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// One dashboard query's answer in the live check.
pub(crate) struct PanelResult {
    pub(crate) panel: String,
    pub(crate) expr: String,
    pub(crate) series: Vec<String>,
}

impl Infra {
    fn query(&self, prometheus: &str, expr: &str) -> Result<Vec<String>> {
        let out = Command::new(self.bin("promtool"))
            .args(["query", "instant", prometheus, expr])
            .output()?;
        if !out.status.success() {
            bail!("promtool query failed for {expr}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect())
    }

    /// Runs the engram demo (real traffic against `redis_url`, then its metrics endpoint kept
    /// up), redis_exporter and a loopback Prometheus scraping both every second, and asks
    /// Prometheus every dashboard query: each must return at least one series.
    pub(crate) fn check_live(&self, redis_url: &str) -> Result<Vec<PanelResult>> {
        self.ensure_prometheus()?;
        let run_dir = self.dir.join(format!("live-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&run_dir);
        std::fs::create_dir_all(&run_dir)?;
        let log = |name: &str| -> Result<std::fs::File> {
            Ok(std::fs::File::create(run_dir.join(name))?)
        };

        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let built = Command::new(&cargo)
            .args(["build", "--quiet", "--locked", "-p", "engram-cli"])
            .current_dir(&self.root)
            .status()?;
        if !built.success() {
            bail!("cannot build the engram binary");
        }
        let engram = self.root.join("target").join("debug").join("engram");
        let (engram_port, exporter_port, prom_port) = (free_port()?, free_port()?, free_port()?);

        let _exporter = Child(
            Command::new(self.bin("prometheus-redis-exporter"))
                .arg(format!("-redis.addr={redis_url}"))
                .arg(format!("-web.listen-address=127.0.0.1:{exporter_port}"))
                .stdout(log("redis-exporter.log")?)
                .stderr(log("redis-exporter.err")?)
                .spawn()
                .context("cannot start redis_exporter")?,
        );
        let _demo = Child(
            Command::new(&engram)
                .args(["demo", "--metrics-seconds", "120"])
                .env("REDIS_URL", redis_url)
                .env("ENGRAM__OBSERVABILITY__METRICS_ADDRESS", format!("127.0.0.1:{engram_port}"))
                .stdout(log("demo.log")?)
                .stderr(log("demo.err")?)
                .spawn()
                .context("cannot start the engram demo")?,
        );
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {rules}\nscrape_configs:\n  - job_name: engram\n    static_configs:\n      - targets: [\"127.0.0.1:{engram_port}\"]\n  - job_name: redis\n    static_configs:\n      - targets: [\"127.0.0.1:{exporter_port}\"]\n",
            rules = self.root.join("infrastructure/prometheus/alerts.yml").display()
        );
        std::fs::write(run_dir.join("prometheus.yml"), config)?;
        let _prometheus = Child(
            Command::new(self.bin("prometheus"))
                .arg(format!("--config.file={}", run_dir.join("prometheus.yml").display()))
                .arg(format!("--storage.tsdb.path={}", run_dir.join("tsdb").display()))
                .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
                .stdout(log("prometheus.log")?)
                .stderr(log("prometheus.err")?)
                .spawn()
                .context("cannot start prometheus")?,
        );
        let url = format!("http://127.0.0.1:{prom_port}");
        // Wait until both targets are up and engram has exported its operations.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
        loop {
            let ready =
                self.query(&url, "count(up == 1) >= 2").map(|r| !r.is_empty()).unwrap_or(false)
                    && self
                        .query(&url, "count(engram_operation_duration_seconds_count) > 0")
                        .map(|r| !r.is_empty())
                        .unwrap_or(false);
            if ready {
                break;
            }
            if std::time::Instant::now() > deadline {
                bail!(
                    "prometheus did not see both targets with engram operations within 90 s (logs in {})",
                    run_dir.display()
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
        // A few more scrapes, so that rates have two samples in their window.
        std::thread::sleep(std::time::Duration::from_secs(5));
        let mut results = Vec::new();
        for (panel, expr) in self.dashboard_queries("1m")? {
            let series = self.query(&url, &expr)?;
            results.push(PanelResult { panel, expr, series });
        }
        for alert_expr in ["ALERTS", "up"] {
            let _ = self.query(&url, alert_expr)?;
        }
        let _ = std::fs::remove_dir_all(run_dir.join("tsdb"));
        Ok(results)
    }
}
