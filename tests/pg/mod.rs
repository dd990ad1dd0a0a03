//! Throw-away PostgreSQL clusters for tests: `initdb` into a temporary directory, `postgres`
//! on a free loopback port, stopped and deleted on drop. Uses the binaries of Debian's
//! `postgresql` package (`/usr/lib/postgresql/*/bin`, newest first; `CELLTRAIL_PG_BIN`
//! overrides); `.ci/run` installs the package when it is missing. Never a mock.
//!
//! PostgreSQL refuses to run as root, so as root the binaries run as the `postgres` user (which
//! the package creates) through `runuser`, and the cluster directory belongs to that user.
//! The cluster keeps `fsync=on` and `synchronous_commit=on`: what a test sees acknowledged is
//! durable, as in production.
//!
//! Standalone on purpose (std only): any test binary may `mod pg;` it.
#![allow(dead_code)] // each test file uses a different part of the harness

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// One running throw-away cluster.
pub struct PgCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
    stopped: bool,
    next_db: std::sync::atomic::AtomicU32,
}

/// The newest PostgreSQL bin directory, or a panic that says how to get one.
pub fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("CELLTRAIL_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin: install Debian's \
             `postgresql` package (`apt-get install postgresql`, as .ci/run does) or set \
             CELLTRAIL_PG_BIN to a directory holding initdb, pg_ctl and postgres"
        ),
    }
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind a free port")
        .local_addr()
        .expect("local addr")
        .port()
}

impl PgCluster {
    /// `initdb` and start a cluster; panics (with the server log) if it cannot.
    pub fn start() -> PgCluster {
        Self::start_with(&[])
    }

    /// Like [`PgCluster::start`], with extra `postgres -c name=value` settings.
    pub fn start_with(settings: &[(&str, &str)]) -> PgCluster {
        let mut c = PgCluster::empty();
        let out = c.pg(
            "initdb",
            &[
                "-D",
                c.data().to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync", // only the throw-away cluster's creation; the server runs fsync=on
                "-E",
                "UTF8",
                "--locale=C",
            ],
        );
        assert!(out.status.success(), "initdb failed: {}", text(&out));
        c.start_on_a_free_port(settings);
        c
    }

    /// A streaming standby of `primary`: `pg_basebackup -R` into a new temporary directory,
    /// started on its own free port, connecting to the primary as `application_name` `name`
    /// (the name `synchronous_standby_names` on the primary refers to).
    pub fn start_standby(primary: &PgCluster, name: &str) -> PgCluster {
        let mut c = PgCluster::empty();
        let port = primary.port.to_string();
        let out = c.pg(
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-D",
                c.data().to_str().unwrap(),
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
                "--no-sync",
            ],
        );
        assert!(out.status.success(), "pg_basebackup failed: {}", text(&out));
        // Appended last, so it wins over the primary_conninfo that -R wrote.
        let conninfo = format!(
            "\nprimary_conninfo = 'host=127.0.0.1 port={port} user=postgres application_name={name}'\n"
        );
        let auto = c.data().join("postgresql.auto.conf");
        let mut conf = std::fs::read_to_string(&auto).expect("postgresql.auto.conf");
        conf.push_str(&conninfo);
        std::fs::write(&auto, conf).expect("write postgresql.auto.conf");
        c.start_on_a_free_port(&[]);
        c
    }

    /// Promotes a standby to a primary and waits until it accepts writes.
    pub fn promote(&self) {
        let out = self.pg(
            "pg_ctl",
            &["-D", self.data().to_str().unwrap(), "-w", "promote"],
        );
        assert!(out.status.success(), "pg_ctl promote: {}", text(&out));
    }

    /// A cluster directory (owned by `postgres` when we are root) with nothing in it yet.
    fn empty() -> PgCluster {
        let bin = bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("celltrail-pg.")
            .tempdir()
            .expect("temp dir for the cluster");
        if running_as_root() {
            let pw = Command::new("id")
                .args(["-u", "postgres"])
                .output()
                .expect("run id");
            let uid: u32 = String::from_utf8_lossy(&pw.stdout)
                .trim()
                .parse()
                .unwrap_or_else(|_| {
                    panic!("running as root needs the `postgres` user (Debian's postgresql package creates it)")
                });
            std::os::unix::fs::chown(dir.path(), Some(uid), None).expect("chown cluster dir");
        }
        PgCluster {
            dir,
            bin,
            port: 0,
            stopped: true,
            next_db: std::sync::atomic::AtomicU32::new(0),
        }
    }

    fn start_on_a_free_port(&mut self, settings: &[(&str, &str)]) {
        for _attempt in 0..5 {
            self.port = free_port();
            if self.try_start(settings) {
                self.stopped = false;
                return;
            }
        }
        panic!(
            "PostgreSQL did not start; its log:\n{}",
            std::fs::read_to_string(self.log()).unwrap_or_default()
        );
    }

    /// One cluster for the whole test binary, started on first use. A static is never
    /// dropped, so a watcher process stops the cluster and deletes it once this process is gone.
    pub fn shared() -> &'static PgCluster {
        static SHARED: std::sync::OnceLock<PgCluster> = std::sync::OnceLock::new();
        SHARED.get_or_init(|| {
            let c = PgCluster::start();
            let stop = format!(
                "{}{} -D {} -m immediate -w stop",
                if running_as_root() { "runuser -u postgres -- " } else { "" },
                c.bin.join("pg_ctl").display(),
                c.data().display()
            );
            let script = format!(
                "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; {stop} >/dev/null 2>&1; rm -rf {dir}",
                pid = std::process::id(),
                dir = c.dir.path().display()
            );
            // It outlives this process by design; kept here only so it is not a zombie meanwhile.
            static WATCHER: std::sync::Mutex<Option<std::process::Child>> =
                std::sync::Mutex::new(None);
            let child = Command::new("sh")
                .args(["-c", &script])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn the cluster's watcher");
            *WATCHER.lock().unwrap() = Some(child);
            c
        })
    }

    /// A database named after `key` (created on first use): the same key gives the same
    /// database, so a test can "reopen" a store by name.
    pub fn db_for(&self, key: &str) -> String {
        let name: String = format!("d_{key}")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .take(60)
            .collect();
        let exists = self.sql(
            "postgres",
            &format!("SELECT count(*) FROM pg_database WHERE datname = '{name}'"),
        );
        if exists == "0" {
            self.sql("postgres", &format!("CREATE DATABASE {name}"));
        }
        self.url(&name)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("log")
    }

    /// The server's log so far (for assertion messages).
    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }

    /// Runs one of the cluster's binaries, as `postgres` when we are root.
    fn pg(&self, tool: &str, args: &[&str]) -> Output {
        let exe = self.bin.join(tool);
        let mut cmd = if running_as_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        };
        cmd.args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {tool}: {e}"))
    }

    fn try_start(&self, settings: &[(&str, &str)]) -> bool {
        let mut opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=on -c synchronous_commit=on \
             -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        for (k, v) in settings {
            opts.push_str(&format!(" -c {k}={v}"));
        }
        let out = self.pg(
            "pg_ctl",
            &[
                "-D",
                self.data().to_str().unwrap(),
                "-o",
                &opts,
                "-l",
                self.log().to_str().unwrap(),
                "-w",
                "-t",
                "30",
                "start",
            ],
        );
        out.status.success()
    }

    /// Connection URL of database `db` (libpq form, which tokio-postgres also parses).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// URL of the `postgres` database every cluster has.
    pub fn default_url(&self) -> String {
        self.url("postgres")
    }

    /// Creates a new empty database and returns its URL (tests sharing a cluster stay apart).
    pub fn create_db(&self) -> String {
        let n = self
            .next_db
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let name = format!("t{n}");
        self.sql("postgres", &format!("CREATE DATABASE {name}"));
        self.url(&name)
    }

    /// Runs SQL through `psql` (for set-up and inspection; the code under test uses its own
    /// client) and returns the unaligned output.
    pub fn sql(&self, db: &str, sql: &str) -> String {
        let port = self.port.to_string();
        let out = self.pg(
            "psql",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-d",
                db,
                "-v",
                "ON_ERROR_STOP=1",
                "-XAtq",
                "-c",
                sql,
            ],
        );
        assert!(out.status.success(), "psql {sql:?} failed: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Stops the cluster at once (like a crash: `-m immediate`); `restart` brings it back.
    pub fn kill(&mut self) {
        self.stop_mode("immediate");
    }

    /// Starts a stopped cluster again on the same port.
    pub fn restart(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.try_start(&[]) {
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not restart: {}",
                self.server_log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        self.stopped = false;
    }

    fn stop_mode(&mut self, mode: &str) {
        if self.stopped {
            return;
        }
        let _ = self.pg(
            "pg_ctl",
            &[
                "-D",
                self.data().to_str().unwrap(),
                "-m",
                mode,
                "-w",
                "stop",
            ],
        );
        self.stopped = true;
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop_mode("immediate");
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
