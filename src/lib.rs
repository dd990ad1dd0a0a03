//! celltrail: a chain-of-custody ledger for autologous cell therapy.
//!
//! See `ARCHITECTURE.md` for the code map and invariants.

pub mod pb {
    //! Generated protobuf and gRPC types of package `celltrail.v1`.
    #![allow(clippy::all, missing_docs)] // generated code
    tonic::include_proto!("celltrail.v1");

    /// Encoded file descriptor set of our protos, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/celltrail_descriptor.bin"));

    /// The descriptors of our protos, decoded once (for reading messages by reflection).
    pub fn descriptor_pool() -> &'static prost_reflect::DescriptorPool {
        static POOL: std::sync::OnceLock<prost_reflect::DescriptorPool> =
            std::sync::OnceLock::new();
        POOL.get_or_init(|| {
            prost_reflect::DescriptorPool::decode(FILE_DESCRIPTOR_SET)
                .expect("the embedded descriptor set is built by build.rs from our protos")
        })
    }
}

pub mod admin_auth;
pub mod admission;
pub mod api;
pub mod applog;
pub mod backup;
pub mod bundle;
pub mod cli;
pub mod client;
pub mod codes;
pub mod config;
pub mod conn;
pub mod console;
pub mod crypto;
pub mod datadir;
pub mod event_fields;
pub mod failover;
#[cfg(debug_assertions)]
pub mod failpoint;
pub mod keylist;
pub mod keys;
pub mod ledger;
pub mod log;
pub mod loglink;
pub mod manifest;
pub mod merkle;
pub mod metrics;
pub mod migrate;
pub mod monitor;
pub mod note;
pub mod pg;
pub mod policy;
pub mod registry;
pub mod role;
pub mod rotation;
pub mod rules;
pub mod server;
pub mod station;
pub mod station_api;
pub mod storage;
pub mod store;
pub mod summary;
pub mod tiles;
pub mod time;
pub mod tls;
pub mod witness;
pub mod witness_cmd;
