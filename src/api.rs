//! The gRPC face of the ledger (`celltrail.v1.Ledger`). Thin: decodes requests, calls
//! `ledger`/`store`, and maps every `LedgerError` to one gRPC status in one place.

use crate::admission::Peer;
use crate::crypto::EventHash;
use crate::ledger::{Ledger, LedgerError};
use crate::pb::ledger_server::Ledger as LedgerRpc;
use crate::pb::{
    AppendResult, ChainHead, FindChainsByBagRequest, FindChainsByBagResponse, GetChainRequest,
    GetChainResponse, GetEntriesRequest, GetEntriesResponse, GetHeadRequest, LogEntry, Receipt,
    SignedEvent, StoredEntry,
};
use crate::rules::{Head, RuleError, MAX_BAG_ID};
use futures_util::{Stream, StreamExt};
use prost::Message;
use std::pin::Pin;
use std::sync::Arc;
use tonic::{Code, Request, Response, Status};

/// Default and largest page of `GetEntries`.
pub const DEFAULT_PAGE: u32 = 100;
pub const MAX_PAGE: u32 = 1000;
/// Largest `GetEntries` / `GetChain` page in bytes (a page holds at least one entry).
pub const MAX_PAGE_BYTES: usize = 1024 * 1024;
/// Default `GetChain` page.
pub const DEFAULT_CHAIN_PAGE: u32 = 256;
/// Events of one `AppendStream` in flight at once (they share group commits).
pub const STREAM_WINDOW: usize = 512;

/// tonic and tonic-prost answer two client mistakes with their own codes and library text: a
/// message over the size limit (OUT_OF_RANGE, "Error, decoded message length too large: ...")
/// and bytes that are not protobuf (INTERNAL, "failed to decode Protobuf message: ..."). The
/// contract (ledger.proto, SECURITY.md) says RESOURCE_EXHAUSTED and INVALID_ARGUMENT. This is
/// the one mapping: `server` applies it to every response (`contract_response`), and
/// `AppendStream` to each result.
pub fn contract_status(s: &Status) -> Option<Status> {
    let msg = s.message();
    match s.code() {
        Code::OutOfRange if msg.starts_with("Error, decoded message length too large") => {
            let found = msg
                .split("found ")
                .nth(1)
                .and_then(|r| r.split(' ').next())
                .unwrap_or("?");
            Some(Status::resource_exhausted(format!(
                "the message is {found} bytes; this server decodes at most {} bytes (256 KiB), and a log entry holds at most {} bytes (64 KiB): send a smaller event",
                crate::rules::MAX_GRPC_MESSAGE,
                crate::rules::MAX_ENTRY_BYTES
            )))
        }
        Code::Internal if msg.starts_with("failed to decode Protobuf message") => {
            Some(Status::invalid_argument(format!(
                "the request is not a valid protobuf message of the method's type ({}); encode it with the celltrail.v1 .proto files",
                crate::policy::cut_text(msg, 200)
            )))
        }
        _ => None,
    }
}

/// [`contract_status`] on an HTTP response whose status travels in its headers (a unary call
/// refused before the handler ran).
pub fn contract_response<B>(
    mut resp: tonic::codegen::http::Response<B>,
) -> tonic::codegen::http::Response<B> {
    if let Some(fixed) = Status::from_header_map(resp.headers()).and_then(|s| contract_status(&s)) {
        let headers = resp.headers_mut();
        headers.remove("grpc-message");
        headers.remove("grpc-status-details-bin");
        let _ = fixed.add_header(headers);
    }
    resp
}

impl From<crate::log::LogError> for Status {
    fn from(e: crate::log::LogError) -> Status {
        use crate::log::LogError;
        match e {
            LogError::InvalidArgument(m) => Status::invalid_argument(m),
            LogError::NotFound(m) => Status::not_found(m),
            LogError::Store(e) => LedgerError::from(e).into(),
        }
    }
}

impl From<LedgerError> for Status {
    fn from(e: LedgerError) -> Status {
        let mut status = Status::new(code_of(&e), e.to_string());
        if let LedgerError::NotWriter(Some(writer)) = &e {
            // Clients that fail over read the writer's address here (crate::failover).
            if let Ok(v) = writer.parse() {
                status
                    .metadata_mut()
                    .insert(crate::failover::WRITER_HEADER, v);
            }
        }
        status
    }
}

/// The one gRPC code of each `LedgerError`.
pub fn code_of(e: &LedgerError) -> Code {
    {
        match e {
            LedgerError::Rule(r) => match r {
                RuleError::Malformed(_) => Code::InvalidArgument,
                RuleError::TooLarge { .. } => Code::ResourceExhausted,
                RuleError::UnknownChain { .. }
                | RuleError::Gap { .. }
                | RuleError::StalePrev { .. } => Code::FailedPrecondition,
                RuleError::Fork { .. } => Code::AlreadyExists,
            },
            LedgerError::BadSignature(_) | LedgerError::Invalid(_) => Code::InvalidArgument,
            LedgerError::BagTaken { .. } => Code::AlreadyExists,
            LedgerError::Registry(crate::registry::RegistryError::Invalid(_)) => {
                Code::InvalidArgument
            }
            LedgerError::Registry(_) => Code::FailedPrecondition,
            LedgerError::Overloaded(_) | LedgerError::CutOff => Code::ResourceExhausted,
            LedgerError::Policy(_) | LedgerError::Link(_) => Code::FailedPrecondition,
            LedgerError::Signer(_) | LedgerError::Role(_) => Code::PermissionDenied,
            LedgerError::NotFound(_) => Code::NotFound,
            LedgerError::Corrupt(_) => Code::DataLoss,
            LedgerError::Storage(_)
            | LedgerError::Uncertain(_)
            | LedgerError::ShuttingDown
            | LedgerError::NotWriter(_)
            | LedgerError::KeyRotation(_) => Code::Unavailable,
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
        open_hold: h.hold.clone(),
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
    cosigned: Option<Arc<crate::witness::collect::Cosigned>>,
}

impl LedgerService {
    pub fn new(ledger: Arc<Ledger>) -> Self {
        LedgerService {
            ledger,
            cosigned: None,
        }
    }

    /// Serves the witness-cosigned checkpoint beside the signed one in `GetCheckpoint`.
    pub fn with_cosigned(mut self, c: Option<Arc<crate::witness::collect::Cosigned>>) -> Self {
        self.cosigned = c;
        self
    }
}

#[tonic::async_trait]
impl LedgerRpc for LedgerService {
    type AppendStreamStream = Pin<Box<dyn Stream<Item = Result<AppendResult, Status>> + Send>>;

    async fn append_stream(
        &self,
        req: Request<tonic::Streaming<SignedEvent>>,
    ) -> Result<Response<Self::AppendStreamStream>, Status> {
        let ledger = self.ledger.clone();
        let peer = peer_of(&req).unwrap_or_else(Peer::local);
        // `then` submits one event at a time, in stream order; `buffered` then awaits up to
        // STREAM_WINDOW receipts concurrently and yields them in the same order.
        let results = req
            .into_inner()
            .enumerate()
            .then(move |(position, item)| {
                let ledger = ledger.clone();
                let peer = peer.clone();
                async move {
                    let pending = match item {
                        Ok(_) if peer.is_cut_off() => Err(LedgerError::CutOff.into()),
                        Ok(ev) => {
                            throttle(&peer).await;
                            Ok(ledger.submit_from(&peer, ev).await)
                        }
                        Err(status) => Err(status),
                    };
                    async move {
                        let result = match pending {
                            Ok(receipt) => receipt.await.map_err(Status::from),
                            Err(status) => Err(contract_status(&status).unwrap_or(status)),
                        };
                        let position = position as u64;
                        Ok(match result {
                            Ok(receipt) => AppendResult {
                                position,
                                receipt: Some(receipt),
                                code: 0,
                                message: String::new(),
                            },
                            Err(s) => AppendResult {
                                position,
                                receipt: None,
                                code: s.code() as i32,
                                message: s.message().to_string(),
                            },
                        })
                    }
                }
            })
            .buffered(STREAM_WINDOW);
        Ok(Response::new(Box::pin(results)))
    }

    async fn append(&self, req: Request<SignedEvent>) -> Result<Response<Receipt>, Status> {
        let started = std::time::Instant::now();
        let peer = peer_of(&req);
        let event = req.into_inner();
        let about = crate::applog::About::of(&event); // ops: chain, seq, kind only (no PHI)
        let result = match peer {
            Some(peer) if peer.is_cut_off() => Err(LedgerError::CutOff),
            Some(peer) => {
                throttle(&peer).await;
                self.ledger.append_from(&peer, event).await
            }
            None => self.ledger.append(event).await,
        };
        let code = result.as_ref().err().map_or(Code::Ok, code_of);
        crate::applog::append_answered(&about, &result, code, started.elapsed()); // ops: log + metrics
        Ok(Response::new(result?))
    }

    async fn get_head(&self, req: Request<GetHeadRequest>) -> Result<Response<ChainHead>, Status> {
        let id = req.into_inner().chain_id;
        let head = self.ledger.head(&id)?;
        Ok(Response::new(chain_head(&id, &head)))
    }

    async fn find_chains_by_bag(
        &self,
        req: Request<FindChainsByBagRequest>,
    ) -> Result<Response<FindChainsByBagResponse>, Status> {
        let din = req.into_inner().din;
        if din.is_empty() || din.len() > MAX_BAG_ID || din.contains('\0') {
            return Err(Status::invalid_argument(format!(
                "bag DIN must be 1-{MAX_BAG_ID} characters without NUL (got {}); scan the bag's ISBT 128 DIN",
                din.len()
            )));
        }
        let ids = self
            .ledger
            .store()
            .chains_of_bag(&din)
            .map_err(LedgerError::from)?;
        if ids.is_empty() {
            return Err(Status::not_found(format!(
                "no chain names bag {din}: it was never collected or produced in this ledger"
            )));
        }
        let mut chains = Vec::with_capacity(ids.len());
        for id in ids {
            let head = self.ledger.head(&id)?;
            chains.push(chain_head(&id, &head));
        }
        Ok(Response::new(FindChainsByBagResponse { chains }))
    }

    async fn get_chain(
        &self,
        req: Request<GetChainRequest>,
    ) -> Result<Response<GetChainResponse>, Status> {
        let req = req.into_inner();
        let id = req.chain_id;
        let start: u64 = match req.page_token.as_str() {
            "" => 0,
            t => t.parse().map_err(|_| {
                Status::invalid_argument(format!(
                    "page_token {:?} is not one this server issued; pass next_page_token of the previous page, or nothing for the first",
                    t.chars().take(40).collect::<String>()
                ))
            })?,
        };
        let limit = match req.page_size {
            0 => DEFAULT_CHAIN_PAGE,
            n => n.min(MAX_PAGE),
        } as u64;
        let store = self.ledger.store().clone();
        let head = self.ledger.head(&id)?;
        let length = head.seq + 1;
        if start > length {
            return Err(Status::invalid_argument(format!(
                "page_token {start} is past the end of chain {id} ({length} events)"
            )));
        }
        let chain = id.clone();
        let entries = tokio::task::spawn_blocking(move || -> Result<Vec<StoredEntry>, Status> {
            let mut out = Vec::new();
            let mut bytes_in_page = 0;
            for seq in start..length.min(start + limit) {
                let index = store
                    .chain_event(&chain, seq)
                    .map_err(LedgerError::from)?
                    .ok_or_else(|| {
                        Status::internal(format!("chain {chain} seq {seq} is missing"))
                    })?;
                let bytes = store
                    .entry(index)
                    .map_err(LedgerError::from)?
                    .ok_or_else(|| Status::internal(format!("entry {index} is missing")))?;
                bytes_in_page += bytes.len() + 48;
                if bytes_in_page > MAX_PAGE_BYTES && !out.is_empty() {
                    break;
                }
                out.push(stored_entry(index, bytes)?);
            }
            Ok(out)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))??;
        let next = start + entries.len() as u64;
        Ok(Response::new(GetChainResponse {
            head: Some(chain_head(&id, &head)),
            entries,
            next_page_token: if next < length {
                next.to_string()
            } else {
                String::new()
            },
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
            let mut bytes_in_page = 0;
            for (index, bytes) in store.entries_from(start, want).map_err(LedgerError::from)? {
                // Keep a page well under a client's 4 MiB message limit; `next` says where to go on.
                bytes_in_page += bytes.len() + 48;
                if bytes_in_page > MAX_PAGE_BYTES && !entries.is_empty() {
                    break;
                }
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

    async fn get_checkpoint(
        &self,
        _req: Request<crate::pb::GetCheckpointRequest>,
    ) -> Result<Response<crate::pb::GetCheckpointResponse>, Status> {
        let store = self.ledger.store().clone();
        let cp = blocking(move || crate::log::checkpoint(store.as_ref())).await?;
        let cp =
            cp.ok_or_else(|| Status::not_found("the log is empty: there is no checkpoint yet"))?;
        let (cosigned_tree_size, cosigned_checkpoint) = self
            .cosigned
            .as_ref()
            .and_then(|c| c.best())
            .unwrap_or_default();
        Ok(Response::new(crate::pb::GetCheckpointResponse {
            tree_size: cp.checkpoint.size,
            root_hash: cp.checkpoint.root.to_vec(),
            checkpoint: cp.note,
            cosigned_checkpoint,
            cosigned_tree_size,
            witnesses: self.cosigned.as_ref().map_or(0, |c| c.witnesses() as u32),
        }))
    }

    async fn get_inclusion_proof(
        &self,
        req: Request<crate::pb::GetInclusionProofRequest>,
    ) -> Result<Response<crate::pb::InclusionProof>, Status> {
        use crate::pb::get_inclusion_proof_request::Leaf;
        let req = req.into_inner();
        let store = self.ledger.store().clone();
        let resp = blocking(move || {
            let index = match &req.leaf {
                Some(Leaf::Index(i)) => *i,
                Some(Leaf::EventHash(h)) => crate::log::index_of_event(store.as_ref(), h)?,
                None => {
                    return Err(crate::log::LogError::InvalidArgument(
                        "name the entry by index or by event_hash".into(),
                    ))
                }
            };
            let p = crate::log::inclusion_proof(store.as_ref(), index, req.tree_size)?;
            let entry = store.entry(index)?.ok_or_else(|| {
                crate::log::LogError::NotFound(format!("entry {index} is missing"))
            })?;
            let cp = crate::log::checkpoint(store.as_ref())?;
            let checkpoint = cp
                .filter(|c| c.checkpoint.size == p.tree_size)
                .map(|c| c.note)
                .unwrap_or_default();
            Ok(crate::pb::InclusionProof {
                index: p.index,
                tree_size: p.tree_size,
                leaf_hash: p.leaf_hash.to_vec(),
                hashes: p.hashes.iter().map(|h| h.to_vec()).collect(),
                root_hash: p.root.to_vec(),
                entry,
                checkpoint,
            })
        })
        .await?;
        Ok(Response::new(resp))
    }

    async fn get_consistency_proof(
        &self,
        req: Request<crate::pb::GetConsistencyProofRequest>,
    ) -> Result<Response<crate::pb::ConsistencyProof>, Status> {
        let req = req.into_inner();
        let store = self.ledger.store().clone();
        let resp = blocking(move || {
            let p = crate::log::consistency_proof(store.as_ref(), req.old_size, req.new_size)?;
            let checkpoint = crate::log::checkpoint(store.as_ref())?
                .filter(|c| c.checkpoint.size == p.new_size)
                .map(|c| c.note)
                .unwrap_or_default();
            Ok(crate::pb::ConsistencyProof {
                old_size: p.old_size,
                new_size: p.new_size,
                hashes: p.hashes.iter().map(|h| h.to_vec()).collect(),
                old_root: p.old_root.to_vec(),
                new_root: p.new_root.to_vec(),
                checkpoint,
            })
        })
        .await?;
        Ok(Response::new(resp))
    }

    async fn get_signed_chain_head(
        &self,
        req: Request<crate::pb::GetSignedChainHeadRequest>,
    ) -> Result<Response<crate::pb::SignedChainHead>, Status> {
        let req = req.into_inner();
        let ledger = self.ledger.clone();
        let resp = blocking(move || {
            let (st, note) = ledger.signed_chain_head(&req.chain_id, req.tree_size)?;
            Ok(crate::pb::SignedChainHead {
                note,
                tree_size: st.tree_size,
                length: st.length,
                head_event_hash: st.head_hash.to_vec(),
            })
        })
        .await?;
        Ok(Response::new(resp))
    }
}

/// The client connection a request came on (`None` for transports other than `conn`'s).
fn peer_of<T>(req: &Request<T>) -> Option<Arc<Peer>> {
    req.remote_addr().and_then(crate::conn::peer_of)
}

/// Delays a peer whose events keep failing signature verification (`admission`).
async fn throttle(peer: &Peer) {
    if let Some(d) = peer.delay() {
        tokio::time::sleep(d).await;
    }
}

/// Runs a log read off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, crate::log::LogError> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(Status::from)
}
