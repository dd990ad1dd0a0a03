//! `celltrail.v1.Station`: questions a scanning station asks before a form, answered by the
//! server's custody policy on the chain's committed state (`ledger::Ledger::chain_state`), so
//! the station never keeps a copy of the rules: what may happen next and who must sign it
//! (`policy::Outlook`), and what an unsigned event would do (`Policy::preview`). Read-only.

use crate::ledger::Ledger;
use crate::pb::station_server::Station;
use crate::pb::{
    AllowedNext, EventBody, GetAllowedNextRequest, NextEvent, PreviewEventRequest,
    PreviewEventResponse, SignerSlot,
};
use crate::policy::{Requirement, SignerSite};
use prost::Message;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// Longest chain id or site accepted (as the ledger's own limit on ids).
const MAX_ID: usize = 256;

pub struct StationService {
    ledger: Arc<Ledger>,
}

impl StationService {
    pub fn new(ledger: Arc<Ledger>) -> Self {
        StationService { ledger }
    }
}

fn check_id(what: &str, s: &str, required: bool) -> Result<(), Status> {
    if (required && s.is_empty()) || s.len() > MAX_ID || s.contains('\0') {
        return Err(Status::invalid_argument(format!(
            "{what} must be 1-{MAX_ID} characters without NUL (got {}); scan the bag or give the chain id",
            s.len()
        )));
    }
    Ok(())
}

fn slot(r: &Requirement, optional: bool) -> SignerSlot {
    SignerSlot {
        meaning: r.meaning as i32,
        roles: r.roles.clone(),
        registered_at: match r.site {
            SignerSite::Event => "event site",
            SignerSite::Any => "any site",
            SignerSite::ToSite => "receiving site",
        }
        .into(),
        optional,
        describe: r.describe(),
    }
}

#[tonic::async_trait]
impl Station for StationService {
    async fn get_allowed_next(
        &self,
        req: Request<GetAllowedNextRequest>,
    ) -> Result<Response<AllowedNext>, Status> {
        let r = req.into_inner();
        check_id("chain_id", &r.chain_id, true)?;
        check_id("site", &r.site, false)?;
        let ledger = self.ledger.clone();
        let chain = r.chain_id.clone();
        let state = tokio::task::spawn_blocking(move || ledger.chain_state(&chain))
            .await
            .map_err(|e| Status::internal(format!("chain state task: {e}")))??;
        let o = self
            .ledger
            .policy()
            .outlook(state.as_ref(), &r.site, crate::time::now_nanos());
        let (word, why) = match &o.bedside_refusal {
            Some(f) => (f.word.clone(), f.reason.clone()),
            None => (String::new(), String::new()),
        };
        Ok(Response::new(AllowedNext {
            chain_id: r.chain_id,
            state: o.state,
            terminal: o.terminal,
            hold_reasons: o.hold_reasons,
            events: o
                .events
                .iter()
                .map(|e| NextEvent {
                    kind: e.kind.name().to_string(),
                    signers: e
                        .signers
                        .iter()
                        .map(|r| slot(r, false))
                        .chain(e.optional_signers.iter().map(|r| slot(r, true)))
                        .collect(),
                    temp_min_c: e.temp_range_c.map(|r| r.0),
                    temp_max_c: e.temp_range_c.map(|r| r.1),
                    not_here: e.not_here.clone().unwrap_or_default(),
                })
                .collect(),
            known: o.known.into_iter().collect(),
            bedside_refusal_word: word,
            bedside_refusal: why,
            ambient_exposure_max_minutes: o.ambient_exposure_max_minutes,
            thaw_to_infusion_max_minutes: o.thaw_to_infusion_max_minutes,
            bag_ids: o.bag_ids,
        }))
    }

    async fn preview_event(
        &self,
        req: Request<PreviewEventRequest>,
    ) -> Result<Response<PreviewEventResponse>, Status> {
        let r = req.into_inner();
        let body = EventBody::decode(r.body.as_slice()).map_err(|e| {
            Status::invalid_argument(format!("body is not an encoded EventBody: {e}"))
        })?;
        check_id("body.chain_id", &body.chain_id, true)?;
        let ledger = self.ledger.clone();
        let chain = body.chain_id.clone();
        let state = tokio::task::spawn_blocking(move || ledger.chain_state(&chain))
            .await
            .map_err(|e| Status::internal(format!("chain state task: {e}")))??;
        let out = match self.ledger.policy().preview(
            state.as_ref(),
            &body,
            &crate::policy::Context::current(crate::time::now_nanos()),
        ) {
            Ok(opens_hold) => PreviewEventResponse {
                opens_hold,
                refused: String::new(),
            },
            Err(v) => PreviewEventResponse {
                opens_hold: vec![],
                refused: v.to_string(),
            },
        };
        Ok(Response::new(out))
    }
}
