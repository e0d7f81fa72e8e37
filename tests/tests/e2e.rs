//! End to end through public APIs only: a configuration file and the environment, loaded by
//! `engram-config`, drive a real connection to Redis Stack through `engram-storage`.

use std::time::Duration;

use engram_config::Config;
use engram_config::test_support::require_server;
use engram_storage::redis::RedisConnection;

#[tokio::test]
async fn a_config_file_connects_to_redis_stack() -> anyhow::Result<()> {
    let Some(url) = require_server("a_config_file_connects_to_redis_stack") else {
        return Ok(());
    };
    let dir = std::env::temp_dir().join(format!("engram-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("engram.toml");
    std::fs::write(
        &file,
        format!(
            "[redis]\nurl = \"{}\"\ncommand_timeout = \"1500ms\"\n\n[index]\ndimension = 8\n",
            url.expose()
        ),
    )?;
    let loaded = Config::load(Some(&file));
    std::fs::remove_dir_all(&dir)?;
    let config = loaded?;
    assert_eq!(config.redis.command_timeout, Duration::from_millis(1500));
    assert_eq!(config.index.dimension, 8);

    let conn = RedisConnection::connect(&config.redis).await?;
    conn.ping().await?;
    assert!(conn.server().module("search").is_some());
    conn.disconnect().await;
    Ok(())
}
