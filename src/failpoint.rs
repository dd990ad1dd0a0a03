//! Test-only failpoints, compiled into debug builds only (`cfg(debug_assertions)`; a release
//! build has neither this module nor its call sites). Each is off unless its environment
//! variable is set, so a debug server behaves normally too.
//!
//! - `CELLTRAIL_FAILPOINT_STALL_COMMIT=SECS`: the writer sleeps SECS seconds inside the write of
//!   its first group (what a disk that stops answering looks like), so tests can see the
//!   watchdog turn health NOT_SERVING and end the process.

use std::sync::atomic::{AtomicBool, Ordering};

static STALLED: AtomicBool = AtomicBool::new(false);

/// Called by the writer inside a group's write, while it is marked busy.
pub fn stall_commit() {
    let Some(secs) = std::env::var("CELLTRAIL_FAILPOINT_STALL_COMMIT")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return;
    };
    if !STALLED.swap(true, Ordering::SeqCst) {
        eprintln!("celltrail: failpoint: stalling the writer for {secs} s");
        std::thread::sleep(std::time::Duration::from_secs(secs));
    }
}
