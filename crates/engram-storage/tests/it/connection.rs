//! Connecting to Redis Stack from configuration: ping, module check, typed failures.

use std::time::{Duration, Instant};

use engram_config::test_support::require_server;
use engram_config::{RedisConfig, RedisUrl, Secret};
use engram_storage::redis::{MIN_SEARCH_VERSION, RedisConnection};
use engram_storage::{ErrorKind, Operation};

fn config_for(url: RedisUrl) -> RedisConfig {
    RedisConfig { url, connect_timeout: Duration::from_secs(3), ..RedisConfig::default() }
}

#[tokio::test]
async fn connects_pings_and_finds_search_and_json() {
    let Some(url) = require_server("connects_pings_and_finds_search_and_json") else {
        return;
    };
    let conn =
        RedisConnection::connect(&config_for(url)).await.expect("connects to the test server");
    let rtt = conn.ping().await.expect("PING answers");
    assert!(rtt < Duration::from_secs(2), "ping took {rtt:?}");

    let server = conn.server();
    let search = server.module("search").expect("search module loaded");
    assert!(search.version >= MIN_SEARCH_VERSION, "search {search} is older than 2.10");
    assert!(server.module("ReJSON").is_some(), "ReJSON not loaded: {:?}", server.modules);
    assert!(
        server.version.starts_with('7') || server.version.starts_with('8'),
        "redis {}",
        server.version
    );

    // A fresh read agrees with what connect saw.
    let again = conn.fetch_server_info().await.expect("server info");
    assert_eq!(&again, server);
    conn.disconnect().await;
}

#[tokio::test]
async fn wrong_credentials_are_an_auth_error_without_the_password() {
    let Some(url) = require_server("wrong_credentials_are_an_auth_error_without_the_password")
    else {
        return;
    };
    let mut config = config_for(url);
    config.username = Some("engram-no-such-user".into());
    config.password = Some(Secret::new("wrong-pw-5c1d"));
    let err =
        RedisConnection::connect(&config).await.expect_err("the server refuses unknown users");
    assert_eq!(err.kind(), ErrorKind::Auth, "{err}");
    assert_eq!(err.operation(), Operation::Connect);
    assert!(!err.is_temporary(), "bad credentials are not worth retrying: {err}");
    assert!(!format!("{err} {err:?}").contains("wrong-pw-5c1d"), "password leaked: {err:?}");
}

#[tokio::test]
async fn a_closed_port_fails_fast_as_unavailable() {
    // Run only where the other tests run, so a developer without a server sees one skip line.
    let Some(_) = require_server("a_closed_port_fails_fast_as_unavailable") else {
        return;
    };
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let config = config_for(RedisUrl::new(format!("redis://127.0.0.1:{port}")));
    let started = Instant::now();
    let err = RedisConnection::connect(&config).await.expect_err("nothing listens there");
    assert!(matches!(err.kind(), ErrorKind::Unavailable | ErrorKind::Timeout), "{err}");
    assert!(err.is_temporary(), "{err}");
    assert!(
        started.elapsed() <= config.connect_timeout + Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
}
