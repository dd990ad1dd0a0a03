//! The station's questions to the server's custody policy (`celltrail.v1.Station`): which
//! events a chain allows next and what the chain already knows, and whether an event would open
//! a hold. The station decides nothing here itself; offline it says it cannot know.

use crate::client::ServerArg;
use crate::pb::station_client::StationClient;
use crate::pb::{AllowedNext, GetAllowedNextRequest, PreviewEventRequest, PreviewEventResponse};
use tonic::transport::Channel;

/// Asks the first server of `--server a,b,c` (the remembered writer first) that answers; a
/// server that is away passes the question to the next. Both questions are reads, so any
/// server of the list (a standby too) may answer.
async fn ask<T, F, Fut>(servers: &ServerArg, call: F) -> Result<T, tonic::Status>
where
    F: Fn(StationClient<Channel>) -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let tls = servers.tls();
    let mut last = tonic::Status::unavailable(format!("no server in {:?}", servers.server));
    for server in crate::failover::ordered(&crate::failover::parse_list(&servers.server)) {
        let r = match super::net::station_client(&server, &tls).await {
            Ok(c) => call(c).await,
            Err(s) => Err(s),
        };
        match r {
            Err(s) if crate::client::is_transport_failure(&s) => last = s,
            other => return other,
        }
    }
    Err(last)
}

/// What the policy allows next on `chain`, asked from `site`.
pub(super) async fn allowed_next(
    servers: &ServerArg,
    chain: &str,
    site: &str,
) -> Result<AllowedNext, tonic::Status> {
    ask(servers, |mut c| async move {
        Ok(c.get_allowed_next(GetAllowedNextRequest {
            chain_id: chain.to_string(),
            site: site.to_string(),
        })
        .await?
        .into_inner())
    })
    .await
}

/// What an unsigned event body would do to its chain.
pub(super) async fn preview(
    servers: &ServerArg,
    body: Vec<u8>,
) -> Result<PreviewEventResponse, tonic::Status> {
    ask(servers, |mut c| {
        let body = body.clone();
        async move {
            Ok(c.preview_event(PreviewEventRequest { body })
                .await?
                .into_inner())
        }
    })
    .await
}

/// The allowed range shown next to a question, if the policy checks one for this field.
pub(super) fn range_hint(next: Option<&AllowedNext>, kind: &str, field: &str) -> String {
    let Some(n) = next else {
        return String::new();
    };
    let ev = n.events.iter().find(|e| e.kind == kind);
    match field {
        "temp_min_c" | "temp_max_c" | "temp_c" => {
            match ev.and_then(|e| e.temp_min_c.zip(e.temp_max_c)) {
                Some((lo, hi)) => format!(" [allowed {lo:.1} to {hi:.1} °C]"),
                None => String::new(),
            }
        }
        "elapsed_seconds" | "elapsed_minutes" => {
            format!(" [limit {} min]", n.ambient_exposure_max_minutes)
        }
        _ => String::new(),
    }
}
