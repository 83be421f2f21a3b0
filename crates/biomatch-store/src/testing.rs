//! Helpers for tests that run against every backend: a fresh PostgreSQL database per test from
//! `BIOMATCH_TEST_DATABASE_URL`. Without it the PostgreSQL half skips, except under `CI=true`,
//! where a missing database is a failure.

use sqlx::Connection;

/// A new, empty database on the test server, or `None` when none is configured (outside CI).
///
/// # Panics
/// Under `CI=true` when `BIOMATCH_TEST_DATABASE_URL` is unset or the server refuses.
pub async fn fresh_postgres_url() -> Option<String> {
    let Ok(base) = std::env::var("BIOMATCH_TEST_DATABASE_URL") else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but BIOMATCH_TEST_DATABASE_URL is not set: PostgreSQL tests must run in CI"
        );
        eprintln!("BIOMATCH_TEST_DATABASE_URL not set: skipping the PostgreSQL half of this test");
        return None;
    };
    sqlx::any::install_default_drivers();
    let name = format!("biomatch_test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::AnyConnection::connect(&base)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to BIOMATCH_TEST_DATABASE_URL: {e}"));
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap_or_else(|e| panic!("cannot create test database: {e}"));
    let _ = admin.close().await;
    let (prefix, _) = base.rsplit_once('/').expect("database URL has a path");
    Some(format!("{prefix}/{name}"))
}

/// The database URLs a backend-generic test should run against: a SQLite file in `dir`, and a
/// fresh PostgreSQL database when one is configured.
pub async fn backend_urls(dir: &std::path::Path) -> Vec<String> {
    let mut urls = vec![format!("sqlite://{}", dir.join("store.db").display())];
    urls.extend(fresh_postgres_url().await);
    urls
}
