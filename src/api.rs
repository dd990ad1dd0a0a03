//! The gRPC face of the ledger (`celltrail.v1.Ledger`). Thin: decodes requests, calls
//! `ledger`/`store`, and maps every `LedgerError` to one gRPC status in one place.

use crate::crypto::EventHash;
use crate::ledger::{Ledger, LedgerError};
use crate::pb::ledger_server::Ledger as LedgerRpc;
use crate::pb::{
    ChainHead, GetChainRequest, GetChainResponse, GetEntriesRequest, GetEntriesResponse,
    GetHeadRequest, LogEntry, Receipt, SignedEvent, StoredEntry,
};
use crate::store::Head;
use prost::Message;
use std::sync::Arc;
use tonic::{Code, Request, Response, Status};

/// Default and largest page of `GetEntries`.
pub const DEFAULT_PAGE: u32 = 100;
pub const MAX_PAGE: u32 = 1000;

impl From<LedgerError> for Status {
    fn from(e: LedgerError) -> Status {
        Status::new(code_of(&e), e.to_string())
    }
}

/// The one gRPC code of each `LedgerError`.
pub fn code_of(e: &LedgerError) -> Code {
    {
        match e {
            LedgerError::Malformed(_) | LedgerError::BadSignature(_) => Code::InvalidArgument,
            LedgerError::Registry(crate::registry::RegistryError::Invalid(_)) => {
                Code::InvalidArgument
            }
            LedgerError::Registry(_) => Code::FailedPrecondition,
            LedgerError::TooLarge { .. } | LedgerError::Overloaded(_) => Code::ResourceExhausted,
            LedgerError::UnknownChain { .. }
            | LedgerError::Gap { .. }
            | LedgerError::StalePrev { .. }
            | LedgerError::Policy(_) => Code::FailedPrecondition,
            LedgerError::Fork { .. } => Code::AlreadyExists,
            LedgerError::Signer(_) | LedgerError::Role(_) => Code::PermissionDenied,
            LedgerError::NotFound(_) => Code::NotFound,
            LedgerError::Storage(_) | LedgerError::ShuttingDown => Code::Unavailable,
        }
    }
}

pub fn chain_head(chain_id: &str, h: &Head) -> ChainHead {
    ChainHead {
        chain_id: chain_id.to_string(),
        seq: h.seq,
        event_hash: h.hash.to_vec(),
        state: h.state_name.clone(),
        length: h.seq + 1,
    }
}

fn stored_entry(index: u64, bytes: Vec<u8>) -> Result<StoredEntry, Status> {
    let entry = LogEntry::decode(bytes.as_slice())
        .map_err(|e| Status::internal(format!("stored entry {index} does not decode: {e}")))?;
    Ok(StoredEntry {
        index,
        event_hash: EventHash::of_body(&entry.body).0.to_vec(),
        entry: bytes,
    })
}

pub struct LedgerService {
    ledger: Arc<Ledger>,
}

impl LedgerService {
    pub fn new(ledger: Arc<Ledger>) -> Self {
        LedgerService { ledger }
    }
}

#[tonic::async_trait]
impl LedgerRpc for LedgerService {
    async fn append(&self, req: Request<SignedEvent>) -> Result<Response<Receipt>, Status> {
        let started = std::time::Instant::now();
        let event = req.into_inner();
        let about = crate::applog::About::of(&event); // ops: chain, seq, kind only (no PHI)
        let result = self.ledger.append(event).await;
        crate::applog::append_answered(&about, &result, started.elapsed()); // ops: log + metrics
        Ok(Response::new(result?))
    }

    async fn get_head(&self, req: Request<GetHeadRequest>) -> Result<Response<ChainHead>, Status> {
        let id = req.into_inner().chain_id;
        let head = self.ledger.head(&id)?;
        Ok(Response::new(chain_head(&id, &head)))
    }

    async fn get_chain(
        &self,
        req: Request<GetChainRequest>,
    ) -> Result<Response<GetChainResponse>, Status> {
        let id = req.into_inner().chain_id;
        let store = self.ledger.store().clone();
        let head = self.ledger.head(&id)?;
        let chain = id.clone();
        let entries = tokio::task::spawn_blocking(move || -> Result<Vec<StoredEntry>, Status> {
            let mut out = Vec::new();
            for index in store.chain_indices(&chain).map_err(LedgerError::from)? {
                let bytes = store
                    .entry(index)
                    .map_err(LedgerError::from)?
                    .ok_or_else(|| Status::internal(format!("entry {index} is missing")))?;
                out.push(stored_entry(index, bytes)?);
            }
            Ok(out)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))??;
        Ok(Response::new(GetChainResponse {
            head: Some(chain_head(&id, &head)),
            entries,
        }))
    }

    async fn get_entries(
        &self,
        req: Request<GetEntriesRequest>,
    ) -> Result<Response<GetEntriesResponse>, Status> {
        let req = req.into_inner();
        let limit = match req.limit {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        let store = self.ledger.store().clone();
        let resp = tokio::task::spawn_blocking(move || -> Result<GetEntriesResponse, Status> {
            let tree_size = store.tree_size().map_err(LedgerError::from)?;
            let start = req.start.min(tree_size);
            let want = limit.min((tree_size - start).min(u32::MAX as u64) as u32) as usize;
            let mut entries = Vec::with_capacity(want);
            for (index, bytes) in store.entries_from(start, want).map_err(LedgerError::from)? {
                entries.push(stored_entry(index, bytes)?);
            }
            let next = start + entries.len() as u64;
            Ok(GetEntriesResponse {
                entries,
                next,
                tree_size,
            })
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))??;
        Ok(Response::new(resp))
    }
}
