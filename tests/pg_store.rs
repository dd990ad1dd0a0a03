//! The PostgreSQL store against a real throw-away cluster: migrations, exact bytes, one
//! transaction per group, durability settings refused, lease and fencing.
mod pg;

use celltrail::crypto::EventHash;
use celltrail::pg::lease::LeaseKeeper;
use celltrail::pg::{PgError, PgOptions, PgStore};
use celltrail::role::Role;
use celltrail::rules::Head;
use celltrail::storage::{Group as CommitBatch, NewEntry};
use std::sync::Arc;
use std::time::Duration;

fn head(seq: u64) -> Head {
    Head {
        seq,
        hash: [seq as u8; 32],
        state_name: "S".into(),
        state: None,
        hold: Vec::new(),
    }
}

fn entry(index: u64, chain: &str, seq: u64) -> NewEntry {
    NewEntry {
        index,
        bytes: format!("entry {index}\0\u{1}").into_bytes(),
        event_hash: EventHash([index as u8 + 1; 32]),
        chain_id: chain.into(),
        seq,
    }
}

fn group(from: u64, n: u64) -> CommitBatch {
    CommitBatch {
        entries: (from..from + n).map(|i| entry(i, "A", i)).collect(),
        heads: vec![("A".into(), head(from + n - 1))],
        nodes: (from..from + n).map(|i| ((0, i), [i as u8; 32])).collect(),
        tree_size: from + n,
        checkpoint: Some(format!("cp {}\n", from + n)),
        ..Default::default()
    }
}

#[test]
fn a_group_is_stored_as_exact_bytes_and_read_back_after_reopen() {
    let c = pg::PgCluster::shared();
    let url = c.create_db();
    {
        let s = PgStore::open(&url, None, &PgOptions::default()).unwrap();
        assert_eq!(s.tree_size().unwrap(), 0);
        assert_eq!(s.checkpoint().unwrap(), None);
        let mut b = group(0, 2);
        b.bags = vec![("A999926123456".into(), "A".into(), 0)];
        b.entries.push(entry(2, "AB", 0));
        b.heads.push(("AB".into(), head(0)));
        b.tree_size = 3;
        s.commit(&b).unwrap();
    }
    let s = PgStore::open(&url, None, &PgOptions::default()).unwrap();
    assert_eq!(s.tree_size().unwrap(), 3);
    assert_eq!(s.entry(1).unwrap().unwrap(), b"entry 1\0\x01");
    assert_eq!(s.entry(9).unwrap(), None);
    assert_eq!(s.head("A").unwrap().unwrap(), head(1));
    assert_eq!(s.head("Z").unwrap(), None);
    assert_eq!(s.chain_indices("A").unwrap(), vec![0, 1]);
    assert_eq!(s.chain_indices("AB").unwrap(), vec![2], "no prefix leak");
    assert_eq!(s.chain_event("A", 1).unwrap(), Some(1));
    assert_eq!(s.index_of_hash(&EventHash([2; 32])).unwrap(), Some(1));
    assert_eq!(s.node(0, 1).unwrap(), Some([1; 32]));
    assert_eq!(s.recorded_leaf(0).unwrap(), Some([0; 32]));
    assert_eq!(s.checkpoint().unwrap().as_deref(), Some("cp 2\n"));
    assert_eq!(
        s.entries_from(1, 10).unwrap(),
        vec![
            (1, b"entry 1\0\x01".to_vec()),
            (2, b"entry 2\0\x01".to_vec())
        ]
    );
    assert_eq!(
        s.chain_ids().unwrap(),
        vec!["A".to_string(), "AB".to_string()]
    );
    assert_eq!(
        s.chains_of_bag("A999926123456").unwrap(),
        vec!["A".to_string()]
    );
    assert!(s.bag_in_chain("A999926123456", "A").unwrap());
    assert!(!s.bag_in_chain("A999926123456", "AB").unwrap());
    assert_eq!(
        c.sql(
            url.rsplit('/').next().unwrap(),
            "SELECT string_agg(version::text, ',' ORDER BY version) FROM celltrail.schema_migrations"
        ),
        "1,2",
        "every migration is applied, in order"
    );
}

#[test]
fn a_group_that_fails_midway_writes_nothing() {
    let c = pg::PgCluster::shared();
    let url = c.create_db();
    let s = PgStore::open(&url, None, &PgOptions::default()).unwrap();
    s.commit(&group(0, 2)).unwrap();
    // Index 2 is new but its event hash repeats entry 0's: the unique index fails the
    // statement after the tree size was raised, and the whole transaction rolls back.
    let mut b = group(2, 2);
    b.entries[1].event_hash = EventHash([1; 32]);
    assert!(s.commit(&b).is_err());
    assert_eq!(s.tree_size().unwrap(), 2);
    assert_eq!(s.entry(2).unwrap(), None);
    assert_eq!(s.head("A").unwrap().unwrap(), head(1));
    assert_eq!(s.checkpoint().unwrap().as_deref(), Some("cp 2\n"));
}

#[test]
fn a_group_built_on_a_stale_tree_size_is_refused() {
    let c = pg::PgCluster::shared();
    let url = c.create_db();
    let s = PgStore::open(&url, None, &PgOptions::default()).unwrap();
    s.commit(&group(0, 2)).unwrap();
    let err = s.commit(&group(1, 2)).unwrap_err();
    assert!(
        matches!(
            err,
            PgError::Conflict {
                expected: 1,
                found: 2
            }
        ),
        "{err}"
    );
    assert_eq!(s.tree_size().unwrap(), 2);
}

#[test]
fn synchronous_commit_off_is_refused_with_the_reason() {
    let c = pg::PgCluster::shared();
    let url = c.create_db();
    let db = url.rsplit('/').next().unwrap().to_string();
    c.sql(
        "postgres",
        &format!("ALTER DATABASE {db} SET synchronous_commit = off"),
    );
    let err = PgStore::open(&url, None, &PgOptions::default())
        .err()
        .expect("refused");
    let msg = err.to_string();
    assert!(msg.contains("synchronous_commit=off"), "{msg}");
    assert!(msg.contains("crash"), "says why: {msg}");
    c.sql(
        "postgres",
        &format!("ALTER DATABASE {db} SET synchronous_commit = on"),
    );
    PgStore::open(&url, None, &PgOptions::default()).expect("accepted once on");
}

#[test]
fn a_database_of_a_newer_schema_is_refused() {
    let c = pg::PgCluster::shared();
    let url = c.create_db();
    let db = url.rsplit('/').next().unwrap().to_string();
    drop(PgStore::open(&url, None, &PgOptions::default()).unwrap());
    c.sql(
        &db,
        "INSERT INTO celltrail.schema_migrations VALUES (99, 'future', now())",
    );
    let err = PgStore::open(&url, None, &PgOptions::default())
        .err()
        .expect("refused");
    assert!(err.to_string().contains("version 99"), "{err}");
}

/// A database written by the first schema version (before heads kept holds and chains had
/// summaries) is upgraded in place at start: its data reads back, holds empty, and a group
/// then writes the new columns.
#[test]
fn a_database_at_schema_version_1_is_upgraded_at_start() {
    let c = pg::PgCluster::shared();
    let url = c.create_db();
    let db = url.rsplit('/').next().unwrap().to_string();
    let (version, description, sql) = celltrail::pg::schema::MIGRATIONS[0];
    assert_eq!(version, 1);
    c.sql(
        &db,
        &format!(
            "CREATE SCHEMA celltrail; \
             CREATE TABLE celltrail.schema_migrations (version int PRIMARY KEY, \
               description text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now()); \
             {sql}; \
             INSERT INTO celltrail.schema_migrations (version, description) VALUES (1, '{description}'); \
             INSERT INTO celltrail.entries VALUES (0, '\\x00', '\\x{h}', 'A', 0); \
             INSERT INTO celltrail.heads VALUES ('A', 0, '\\x{h}', 'S'); \
             UPDATE celltrail.log SET tree_size = 1;",
            h = "11".repeat(32)
        ),
    );
    let s = PgStore::open(&url, None, &PgOptions::default()).unwrap();
    assert_eq!(
        c.sql(&db, "SELECT max(version) FROM celltrail.schema_migrations"),
        celltrail::pg::schema::latest().to_string()
    );
    let h = s.head("A").unwrap().expect("the old head is kept");
    assert_eq!((h.seq, h.hash, h.hold.len()), (0, [0x11; 32], 0));
    assert_eq!(s.entry(0).unwrap(), Some(vec![0]));
    let mut g = group(1, 1);
    g.heads[0].1.hold = vec!["qc: sterility pending".into()];
    s.commit(&g).unwrap();
    assert_eq!(
        s.head("A").unwrap().unwrap().hold,
        ["qc: sterility pending"]
    );
}

#[test]
fn a_password_in_the_url_is_never_shown() {
    let shown = celltrail::pg::redact_url("postgres://app:s3cret@db.example:5432/celltrail");
    assert_eq!(shown, "postgres://app@db.example:5432/celltrail");
    let shown = celltrail::pg::redact_url("host=db user=app password=s3cret dbname=x");
    assert!(!shown.contains("s3cret"), "{shown}");
}

#[test]
fn only_the_lease_holder_commits_and_a_stale_epoch_commits_nothing() {
    let c = pg::PgCluster::shared();
    let url = c.create_db();
    let (ra, rb) = (Arc::new(Role::standby()), Arc::new(Role::standby()));
    let a = PgStore::open(&url, Some(ra.clone()), &PgOptions::default()).unwrap();
    let b = PgStore::open(&url, Some(rb.clone()), &PgOptions::default()).unwrap();
    let ttl = Duration::from_millis(600);
    // Without the lease nothing is written.
    assert!(matches!(
        a.commit(&group(0, 1)),
        Err(PgError::Fenced { held: None, .. })
    ));
    let ea = a
        .try_acquire_lease("a", "10.0.0.1:50051", ttl)
        .unwrap()
        .expect("free lease");
    ra.become_writer(ea, "10.0.0.1:50051");
    assert_eq!(
        b.try_acquire_lease("b", "10.0.0.2:50051", ttl).unwrap(),
        None,
        "held by a"
    );
    a.commit(&group(0, 1)).unwrap();
    let l = b.lease().unwrap();
    assert_eq!(l.address.as_deref(), Some("10.0.0.1:50051"));
    assert!(!l.expired);
    // a pauses past its lease; b takes over with the next epoch.
    std::thread::sleep(ttl + Duration::from_millis(200));
    let eb = b
        .try_acquire_lease("b", "10.0.0.2:50051", ttl)
        .unwrap()
        .expect("expired lease");
    assert_eq!(eb, ea + 1);
    rb.become_writer(eb, "10.0.0.2:50051");
    // a wakes up still believing it writes: its commit is fenced and it steps down.
    let err = a.commit(&group(1, 1)).unwrap_err();
    assert!(
        matches!(err, PgError::Fenced { held: Some(h), current } if h == ea && current == eb),
        "{err}"
    );
    assert!(!ra.is_writer(), "a fenced writer steps down");
    assert!(
        !a.renew_lease(ea, ttl).unwrap(),
        "the old epoch cannot be renewed"
    );
    assert_eq!(a.tree_size().unwrap(), 1);
    b.commit(&group(1, 1)).unwrap();
    assert_eq!(b.tree_size().unwrap(), 2);
}

#[test]
fn the_keeper_takes_over_an_expired_lease_and_a_stopped_writer_releases_it() {
    let c = pg::PgCluster::shared();
    let url = c.create_db();
    let timing = celltrail::pg::lease::LeaseTiming {
        ttl: Duration::from_millis(800),
        interval: Duration::from_millis(100),
    };
    let open = |role: &Arc<Role>| {
        Arc::new(PgStore::open(&url, Some(role.clone()), &PgOptions::default()).unwrap())
    };
    let (ra, rb) = (Arc::new(Role::standby()), Arc::new(Role::standby()));
    let mut ka = LeaseKeeper::start(
        open(&ra),
        ra.clone(),
        "a".into(),
        "A:1".into(),
        timing.clone(),
    );
    let wait = |what: &str, f: &dyn Fn() -> bool| {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting: {what}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait("a writes", &|| ra.is_writer());
    let mut kb = LeaseKeeper::start(
        open(&rb),
        rb.clone(),
        "b".into(),
        "B:1".into(),
        timing.clone(),
    );
    wait("b knows the writer", &|| {
        rb.writer_address().as_deref() == Some("A:1")
    });
    std::thread::sleep(Duration::from_millis(1200));
    assert!(
        ra.is_writer() && !rb.is_writer(),
        "a renews: b does not take over"
    );
    let started = std::time::Instant::now();
    ka.stop();
    wait("b takes over", &|| rb.is_writer());
    assert!(
        started.elapsed() < timing.ttl,
        "a clean stop releases the lease at once"
    );
    kb.stop();
}

// The storage trait's suite, the same cases the sled backend passes (tests/storage_sled.rs).
celltrail::storage_suite!(
    |dir: &std::path::Path| -> Box<dyn celltrail::storage::Storage> {
        let key = dir.file_name().unwrap().to_string_lossy().to_string();
        let url = pg::PgCluster::shared().db_for(&key);
        Box::new(
            PgStore::open(&url, None, &PgOptions::default()).expect("open the PostgreSQL store"),
        )
    }
);
