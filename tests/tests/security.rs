//! Security: the storage conformance suite run by a least-privilege ACL user (only its key
//! prefix, only the commands engram sends, as documented in `docs/operations.md`), and a user
//! without write permission refused with `PermissionDenied`, storing nothing.
//!
//! TLS (`rediss://` with a private CA, and a wrong CA refused) is tested by
//! `crates/engram-storage/tests/it/tls.rs`; secrets in logs, errors, `Debug` output and metric
//! labels are searched during the whole fault suite (`tests/tests/faults.rs`).

mod support;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use async_trait::async_trait;
use engram_config::{RedisConfig, RedisUrl};
use engram_storage::redis::{OnTimeoutPolicy, RedisBackend, RedisBackendOptions};
use engram_storage::testkit::{BackendFactory, random_namespace, random_token, suite_schema};
use engram_storage::{ErrorKind, IndexSchema, ItemOutcome, Record, RecordId, StorageBackend};
use support::{Admin, OwnServer, ServerOptions, figure};

/// Key pattern of the conformance suite's indexes (`suite_schema` names them
/// `engram-test-<token>`, with that as their key prefix).
const SUITE_KEYS: &str = "engram-test-*";

/// What a user who may only read is granted (docs/operations.md's reader).
const READER_COMMANDS: &[&str] = &[
    "-@all",
    "+@connection",
    "+info",
    "+module|list",
    "+select",
    "+script|load",
    "+hmget",
    "+scan",
    "+ft.info",
    "+ft.search",
    "+ft.aggregate",
    "+ft.config|get",
];

/// `ACL SETUSER name` with `pass` (`>password`), `keys` (`~pattern`), the reader's commands
/// and `extra`.
fn set_user(admin: &mut Admin, name: &str, pass: &str, keys: &str, extra: &[&str]) -> Result<()> {
    let mut cmd = vec!["ACL", "SETUSER", name, "reset", "on", pass, keys, "resetchannels"];
    cmd.extend(READER_COMMANDS);
    cmd.extend(extra);
    admin.ok(&cmd).map(drop)
}

/// The commands engram sends, beyond `@connection`: what `docs/operations.md` grants.
const ENGRAM_COMMANDS: &[&str] = &[
    "+info",
    "+module|list",
    "+select",
    "+evalsha",
    "+script|load",
    "+multi",
    "+exec",
    "+hdel",
    "+type",
    "+hget",
    "+hset",
    "+del",
    "+pexpireat",
    "+hincrby",
    "+persist",
    "+hmget",
    "+scan",
    "+ft.create",
    "+ft.info",
    "+ft.search",
    "+ft.aggregate",
    "+ft.dropindex",
    "+ft.config|get",
    "+waitaof",
];

/// One server for the whole binary, with the least-privilege user; a watchdog stops it when
/// the process exits (a static is never dropped).
struct Shared {
    server: OwnServer,
    user_password: String,
    admin_password: String,
}

fn shared() -> Option<&'static Shared> {
    static SHARED: OnceLock<Option<Shared>> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            let admin_password = format!("admin-{}", random_token());
            let options = ServerOptions {
                password: Some(admin_password.clone()),
                ..ServerOptions::default()
            };
            let server = OwnServer::start("acl conformance", options).expect("start a server")?;
            let user_password = format!("engram-{}", random_token());
            let mut admin = server.admin().expect("admin");
            // The user may not change ON_TIMEOUT; the operator sets it once.
            admin.ok(&["FT.CONFIG", "SET", "ON_TIMEOUT", "FAIL"]).expect("FT.CONFIG SET");
            let pass = format!(">{user_password}");
            let keys = format!("~{SUITE_KEYS}");
            let mut acl = vec![
                "ACL",
                "SETUSER",
                "engram",
                "reset",
                "on",
                &pass,
                &keys,
                "resetchannels",
                "-@all",
                "+@connection",
            ];
            acl.extend_from_slice(ENGRAM_COMMANDS);
            admin.ok(&acl).expect("ACL SETUSER");
            Some(Shared { server, user_password, admin_password })
        })
        .as_ref()
}

fn user_config(s: &Shared, user: &str, password: &str) -> RedisConfig {
    RedisConfig {
        url: RedisUrl::new(format!("redis://127.0.0.1:{}", s.server.port())),
        username: Some(user.to_owned()),
        password: Some(password.into()),
        connect_timeout: Duration::from_secs(3),
        ..RedisConfig::default()
    }
}

struct AclFactory;

#[async_trait]
impl BackendFactory for AclFactory {
    fn available(&self, _behaviour: &str) -> bool {
        shared().is_some()
    }

    async fn create(&self, _schema: &IndexSchema) -> Result<Arc<dyn StorageBackend>> {
        let s = shared().context("no server")?;
        let options =
            RedisBackendOptions { on_timeout: OnTimeoutPolicy::RequireFail, ..Default::default() };
        let config = user_config(s, "engram", &s.user_password);
        Ok(Arc::new(RedisBackend::connect(&config, options).await?))
    }

    async fn cleanup(&self, _backend: Arc<dyn StorageBackend>, schema: &IndexSchema) -> Result<()> {
        let s = shared().context("no server")?;
        let mut admin = s.server.admin()?;
        let _ = admin.cmd(&["FT.DROPINDEX", &schema.name, "DD"])?;
        for key in admin.keys(&format!("{}*", schema.key_prefix))? {
            admin.ok(&["DEL", &key])?;
        }
        Ok(())
    }
}

engram_storage::conformance_tests!(AclFactory);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_least_privilege_user_cannot_touch_other_keys_or_settings() -> Result<()> {
    let Some(s) = shared() else {
        return Ok(());
    };
    let mut admin = Admin::connect(s.server.port())?;
    admin.ok(&["AUTH", "engram", &s.user_password])?;
    let outside = admin.cmd(&["HSET", "other-app:1", "f", "v"])?;
    let settings = admin.cmd(&["CONFIG", "SET", "maxmemory", "1"])?;
    let flush = admin.cmd(&["FLUSHALL"])?;
    let keys = admin.cmd(&["KEYS", "*"])?;
    for (what, reply) in [
        ("a key outside the prefix", &outside),
        ("CONFIG SET", &settings),
        ("FLUSHALL", &flush),
        ("KEYS", &keys),
    ] {
        ensure!(
            matches!(reply, support::Reply::Error(e) if e.starts_with("NOPERM")),
            "{what} was not refused: {reply:?}"
        );
    }
    figure(
        "acl_least_privilege",
        "commands_granted_beyond_connection",
        ENGRAM_COMMANDS.len(),
        "commands",
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_without_write_permission_gets_permission_denied_and_stores_nothing() -> Result<()> {
    let Some(s) = shared() else {
        return Ok(());
    };
    let mut admin = s.server.admin()?;
    let reader_password = format!("reader-{}", random_token());
    let pass = format!(">{reader_password}");
    let keys = format!("~{SUITE_KEYS}");
    set_user(&mut admin, "reader", &pass, &keys, &[])?;
    // The index exists (the operator, or a writer, created it).
    let schema = suite_schema();
    let options =
        RedisBackendOptions { on_timeout: OnTimeoutPolicy::RequireFail, ..Default::default() };
    let writer =
        RedisBackend::connect(&user_config(s, "engram", &s.user_password), options.clone()).await?;
    writer.ensure_index(&schema).await?;
    let reader =
        RedisBackend::connect(&user_config(s, "reader", &reader_password), options).await?;
    reader.ensure_index(&schema).await?;
    let ns = random_namespace();
    let record = Record::new(ns.clone(), RecordId::new("r1")?, b"payload".to_vec())
        .with_vector(vec![1.0, 0.5, 0.25, 0.125]);
    let report = reader.put_batch(vec![record.clone()]).await;
    let kind = match &report.items[..] {
        [ItemOutcome::Failed(e)] => e.kind(),
        other => anyhow::bail!("expected one failure, found {} outcomes", other.len()),
    };
    ensure!(kind == ErrorKind::PermissionDenied, "expected permission denied, found {kind}");
    let e =
        reader.compare_and_set(record.clone(), None).await.expect_err("a write without permission");
    ensure!(e.kind() == ErrorKind::PermissionDenied, "expected permission denied, found {e}");
    let deleted = reader.delete_batch(&ns, &[RecordId::new("r1")?]).await;
    ensure!(
        matches!(&deleted.items[..], [ItemOutcome::Failed(e)] if e.kind() == ErrorKind::PermissionDenied),
        "a delete without permission was not refused"
    );
    // Other behaviours run on this server at the same time: look at this namespace's keys.
    let stored = admin.keys(&format!("{}{ns}:*", schema.key_prefix))?;
    ensure!(stored.is_empty(), "a refused write stored {stored:?}");
    // Reads still work.
    ensure!(reader.get_batch(&ns, &[RecordId::new("r1")?]).await.items.len() == 1, "reads failed");
    // A user who may write hashes but not run transactions: its MULTI would be refused and
    // the commands after it would run one by one, so batch writes are refused unsent.
    let half_password = format!("half-{}", random_token());
    let half_pass = format!(">{half_password}");
    set_user(&mut admin, "half", &half_pass, &keys, &["+hset", "+hdel", "+persist", "+pexpireat"])?;
    let half = RedisBackend::connect(
        &user_config(s, "half", &half_password),
        RedisBackendOptions { on_timeout: OnTimeoutPolicy::RequireFail, ..Default::default() },
    )
    .await?;
    half.ensure_index(&schema).await?;
    let report = half.put_batch(vec![record.clone()]).await;
    ensure!(
        matches!(&report.items[..], [ItemOutcome::Failed(e)]
            if e.kind() == ErrorKind::PermissionDenied && e.message().contains("MULTI")),
        "a write without MULTI was not refused: {:?}",
        report.items
    );
    let stored = admin.keys(&format!("{}{ns}:*", schema.key_prefix))?;
    ensure!(stored.is_empty(), "a write without MULTI stored {stored:?}");
    let _ = admin.cmd(&["FT.DROPINDEX", &schema.name, "DD"])?;
    let _ = &s.admin_password;
    figure("acl_no_write", "refused_writes", 4, "operations");
    Ok(())
}
