//! Witnessing (c2sp.org/tlog-witness, c2sp.org/tlog-cosignature): independent parties cosign
//! the log's checkpoints after checking each is consistent with every checkpoint they cosigned
//! before, so a log cannot show two histories without one of them lacking cosignatures.
//! `cosig` owns the cosignature and request formats (pure); `server` is `celltrail witness`;
//! `collect` is the log submitting its checkpoints (`serve --witness`); `http` the client both
//! the log and the monitor use (`celltrail witness` itself is `crate::witness_cmd`).

pub mod collect;
pub mod cosig;
pub mod http;
pub mod quorum;
pub mod server;
