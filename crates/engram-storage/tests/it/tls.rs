//! TLS: a `rediss://` connection with a private CA to a TLS-only server this test starts.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use engram_config::test_support::require_server_binary;
use engram_config::{RedisConfig, RedisUrl};
use engram_storage::ErrorKind;
use engram_storage::redis::RedisConnection;

/// A redis-server child that is killed when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// Writes a CA and a server certificate for 127.0.0.1 and localhost; returns (ca, cert, key).
fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().expect("server key");
    let params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .expect("params");
    let cert = params.signed_by(&key, &issuer).expect("server cert");
    let paths = (dir.join("ca.pem"), dir.join("server.pem"), dir.join("server.key"));
    std::fs::write(&paths.0, ca_cert.pem()).expect("write ca");
    std::fs::write(&paths.1, cert.pem()).expect("write cert");
    std::fs::write(&paths.2, key.serialize_pem()).expect("write key");
    paths
}

fn start_tls_server(bin: &Path, dir: &Path, port: u16) -> Server {
    let (ca, cert, key) = certificates(dir);
    let lib = bin.parent().and_then(Path::parent).expect("layout").join("lib");
    let child = Command::new(bin)
        .args(["--port", "0", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .args(["--tls-port", &port.to_string(), "--tls-auth-clients", "no"])
        .arg("--tls-cert-file")
        .arg(&cert)
        .arg("--tls-key-file")
        .arg(&key)
        .arg("--tls-ca-cert-file")
        .arg(&ca)
        .arg("--dir")
        .arg(dir)
        .arg("--loadmodule")
        .arg(lib.join("redisearch.so"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start redis-server");
    Server(child)
}

#[tokio::test]
async fn rediss_with_a_private_ca_connects_and_without_it_fails() {
    let Some(bin) = require_server_binary("rediss_with_a_private_ca_connects_and_without_it_fails")
    else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("engram-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let port = free_port();
    let _server = start_tls_server(&bin, &dir, port);
    let mut config = RedisConfig {
        url: RedisUrl::new(format!("rediss://127.0.0.1:{port}")),
        connect_timeout: Duration::from_secs(2),
        ..RedisConfig::default()
    };
    config.tls.ca_path = Some(dir.join("ca.pem"));

    // The server needs a moment to listen.
    let deadline = Instant::now() + Duration::from_secs(10);
    let conn = loop {
        match RedisConnection::connect(&config).await {
            Ok(c) => break c,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("TLS connection with the private CA failed: {e}"),
        }
    };
    conn.ping().await.expect("PING over TLS");
    assert!(conn.server().module("search").is_some());
    conn.disconnect().await;

    // The system roots do not know the private CA: the handshake must fail, typed.
    config.tls.ca_path = None;
    let e = RedisConnection::connect(&config).await.expect_err("an unknown CA must be refused");
    assert!(matches!(e.kind(), ErrorKind::Unavailable | ErrorKind::Timeout), "{e}");

    // A CA file that is not PEM is an input error naming the setting.
    let bogus = dir.join("bogus.pem");
    std::fs::write(&bogus, "not a certificate").expect("write");
    config.tls.ca_path = Some(bogus);
    let e = RedisConnection::connect(&config).await.expect_err("a bogus CA file");
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert!(e.message().contains("redis.tls.ca_path"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
