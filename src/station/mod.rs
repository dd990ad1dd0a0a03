//! `celltrail scan`: the scanning station. Reads scanner lines, recognises each code
//! (`codes::classify`), asks only what it cannot infer, shows a summary, signs with the
//! station user's key (and a second person's where the policy needs two) and submits. When the
//! server is unreachable the signed event goes into a local store-and-forward queue (`queue`)
//! that is replayed in order on the next contact; nothing is rebased silently and nothing is
//! sent twice (the server answers an identical resubmission with `duplicate = true`). At the
//! bedside it shows MATCH / MISMATCH (`bedside`) before anything can be signed.
//!
//! `args` holds the flags and exit codes, `session` one operator's run (scans, questions,
//! summary, signing), `net` reaching the server, `forward` sending to it and replaying the queue.
//!
//! Exit codes: 0 ACCEPTED (or queue drained), 1 REJECTED or error, 2 MISMATCH / bedside check
//! impossible, 3 QUEUED (signed and kept locally, waiting for the server).

mod args;
mod bedside;
mod form;
mod forward;
mod nearmiss;
mod net;
mod outlook;
mod queue;
mod queue_cmd;
mod session;
mod signin;
mod signin_cmd;
mod signing;
mod ui;

pub use args::{ScanArgs, EXIT_ACCEPTED, EXIT_MISMATCH, EXIT_QUEUED, EXIT_REJECTED};
pub use bedside::{check as bedside_check, Verdict};
pub use form::{apply_scans, comment_required, Code};
pub use queue::{DiscardError, Discarded, Link, Queue, Queued, Status};
pub use queue_cmd::{run as run_queue_command, QueueCommand, EXIT_CODES as QUEUE_EXIT_CODES};
pub use signin_cmd::{
    run as run_station_command, StationCommand, EXIT_CODES as STATION_EXIT_CODES,
};

use session::Station;

/// Runs the station; exits the process with the station's exit code when it is not 0.
pub async fn run(a: ScanArgs) -> anyhow::Result<()> {
    let code = Station::open(a).await?.run().await?;
    if code != 0 {
        std::process::exit(code);
    }
    Ok(())
}
