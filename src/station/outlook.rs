//! The station's questions to the server's custody policy (`celltrail.v1.Station`): which
//! events a chain allows next and what the chain already knows, and whether an event would open
//! a hold. The station decides nothing here itself; offline it says it cannot know.

use crate::pb::station_client::StationClient;
use crate::pb::{AllowedNext, GetAllowedNextRequest, PreviewEventRequest, PreviewEventResponse};
use std::time::Duration;
use tonic::transport::Channel;

async fn connect(server: &str) -> Result<StationClient<Channel>, tonic::Status> {
    let url = if server.contains("://") {
        server.to_string()
    } else {
        format!("http://{server}")
    };
    let ep = tonic::transport::Endpoint::from_shared(url)
        .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(20));
    let ch = ep
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    Ok(StationClient::new(ch))
}

/// What the policy allows next on `chain`, asked from `site`.
pub(super) async fn allowed_next(
    server: &str,
    chain: &str,
    site: &str,
) -> Result<AllowedNext, tonic::Status> {
    let mut c = connect(server).await?;
    Ok(c.get_allowed_next(GetAllowedNextRequest {
        chain_id: chain.to_string(),
        site: site.to_string(),
    })
    .await?
    .into_inner())
}

/// What an unsigned event body would do to its chain.
pub(super) async fn preview(
    server: &str,
    body: Vec<u8>,
) -> Result<PreviewEventResponse, tonic::Status> {
    let mut c = connect(server).await?;
    Ok(c.preview_event(PreviewEventRequest { body })
        .await?
        .into_inner())
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
