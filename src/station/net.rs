//! Reaching the server: connecting with short timeouts (a station must fall back to its queue
//! quickly) and telling "away" from "refused" and "moved on" in an answer.

use crate::client::Client;
use crate::pb::ledger_client::LedgerClient;
use std::time::Duration;
use tonic::Code as GrpcCode;

/// Connects to the first of `servers` (one address or `a,b,c`, the remembered writer first)
/// that answers, with short timeouts: a station must fall back to its queue quickly.
pub(super) async fn try_connect(servers: &crate::client::ServerArg) -> Option<Client> {
    let tls = servers.tls();
    for server in crate::failover::ordered(&crate::failover::parse_list(&servers.server)) {
        if let Some(c) = try_connect_one(&server, &tls).await {
            return Some(c);
        }
    }
    None
}

/// One server, with the TLS flags.
pub(super) async fn try_connect_one(server: &str, tls: &crate::tls::TlsOptions) -> Option<Client> {
    let ep = crate::client::endpoint(server, tls)
        .ok()?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(20));
    let ch = ep.connect().await.ok()?;
    Some(LedgerClient::new(ch).max_decoding_message_size(crate::rules::MAX_GRPC_MESSAGE))
}

/// The `Station` service (policy questions) of one server, with the TLS flags.
pub(super) async fn station_client(
    server: &str,
    tls: &crate::tls::TlsOptions,
) -> Result<crate::pb::station_client::StationClient<tonic::transport::Channel>, tonic::Status> {
    let ep = crate::client::endpoint(server, tls)
        .map_err(|e| tonic::Status::invalid_argument(format!("{e:#}")))?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(20));
    let ch = ep
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(format!("{server}: {e}")))?;
    Ok(crate::pb::station_client::StationClient::new(ch))
}

/// The server could not be reached or the answer was lost (as opposed to: it answered no).
pub(super) fn is_offline(s: &tonic::Status) -> bool {
    crate::client::is_transport_failure(s)
}

/// The chain moved on the server since the event was signed (needs a rebase and re-signature).
pub(super) fn is_conflict(s: &tonic::Status) -> bool {
    s.code() == GrpcCode::AlreadyExists
        || (s.code() == GrpcCode::FailedPrecondition
            && (s.message().starts_with("stale prev_hash")
                || s.message().contains("would leave a gap")
                || s.message().contains("does not exist; its first event")))
}
