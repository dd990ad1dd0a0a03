//! The throw-away PostgreSQL harness itself: a cluster starts with durable settings, holds
//! separate databases, and survives an immediate stop and restart.
mod pg;

#[test]
fn a_cluster_starts_durable_and_gives_separate_databases() {
    let mut c = pg::PgCluster::start();
    assert_eq!(c.sql("postgres", "SHOW fsync"), "on");
    assert_eq!(c.sql("postgres", "SHOW synchronous_commit"), "on");
    let a = c.create_db();
    let b = c.create_db();
    assert_ne!(a, b);
    let db = a.rsplit('/').next().unwrap().to_string();
    c.sql(&db, "CREATE TABLE t (x int); INSERT INTO t VALUES (7)");
    c.kill();
    c.restart();
    assert_eq!(
        c.sql(&db, "SELECT x FROM t"),
        "7",
        "a committed row survives a crash"
    );
}
