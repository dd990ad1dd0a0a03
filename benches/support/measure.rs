//! Process and disk measurements shared by `benches/throughput.rs` and
//! `examples/store_space.rs` (included with `#[path]`; Linux `/proc`).

/// Resident set size of process `pid` (a number, or `"self"`) in KiB; 0 if unreadable.
pub fn rss_kib(pid: impl std::fmt::Display) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Bytes of all files below `path`.
pub fn du(path: &std::path::Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(path).unwrap().flatten() {
        let m = e.metadata().unwrap();
        total += if m.is_dir() { du(&e.path()) } else { m.len() };
    }
    total
}
