//! Client side of the ledger for humans and scripts: build an `EventBody` from named fields,
//! encode it once, sign it with one or more key files, and append it. Used by the `event`,
//! `key` and `chain` subcommands and by the scanning station.

use crate::crypto::{sign_event, EventHash};
use crate::note::NoteSigner;
use crate::pb::ledger_client::LedgerClient;
use crate::pb::{
    self, event_body::Detail, EventBody, GetHeadRequest, Receipt, SignatureMeaning, SignedEvent,
};
use prost::Message;
use std::collections::BTreeMap;
use tonic::transport::Channel;

pub type Client = LedgerClient<Channel>;

/// Largest response the client decodes (a chain or a page of entries can exceed the server's
/// 256 KiB request limit).
pub const MAX_RESPONSE: usize = 16 * 1024 * 1024;

/// Connects to a server given as `host:port` or `http://host:port` (plain text).
pub async fn connect(server: &str) -> anyhow::Result<Client> {
    connect_with(server, &crate::tls::TlsOptions::default()).await
}

/// Connects with TLS when `tls` names a CA (and, for mutual TLS, a client certificate).
pub async fn connect_with(server: &str, tls: &crate::tls::TlsOptions) -> anyhow::Result<Client> {
    let channel = endpoint(server, tls)?.connect().await.map_err(|e| {
        anyhow::anyhow!(
            "cannot reach the celltrail server at {}: {}",
            url(server, tls),
            error_chain(&e)
        )
    })?;
    Ok(LedgerClient::new(channel).max_decoding_message_size(MAX_RESPONSE))
}

fn url(server: &str, tls: &crate::tls::TlsOptions) -> String {
    let scheme = if tls.enabled() { "https" } else { "http" };
    match server.split_once("://") {
        Some((_, rest)) => format!("{scheme}://{rest}"),
        None => format!("{scheme}://{server}"),
    }
}

/// The endpoint for `server` (`host:port` or a URL) with the TLS options applied; the scheme
/// follows the options (https with a CA, else http).
pub fn endpoint(
    server: &str,
    tls: &crate::tls::TlsOptions,
) -> anyhow::Result<tonic::transport::Endpoint> {
    let url = url(server, tls);
    let mut endpoint = tonic::transport::Endpoint::from_shared(url.clone())
        .map_err(|e| anyhow::anyhow!("server address {server:?} is not a valid URL: {e}"))?;
    if tls.enabled() {
        let host = endpoint.uri().host().unwrap_or("localhost").to_string();
        endpoint = endpoint
            .tls_config(tls.config(&host)?)
            .map_err(|e| anyhow::anyhow!("TLS configuration for {url}: {e}"))?;
    }
    Ok(endpoint)
}

/// An error and its causes on one line, each cause once (tonic repeats "tcp connect error").
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = String::new();
    let mut next = Some(e);
    while let Some(err) = next {
        let s = err.to_string();
        if !out.contains(&s) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&s);
        }
        next = err.source();
    }
    out
}

/// True when a call failed in the transport rather than with an answer from the server:
/// connection refused or reset, a GOAWAY while the server restarts, a deadline or a cancel.
/// The outcome of an append is then unknown, so it must be resent with the same bytes
/// (appends are idempotent) and never be reported as refused.
///
/// tonic builds such statuses locally and keeps the transport error as their `source`; a
/// status the server sent in its trailers has none. A stream cut by the server's graceful
/// shutdown arrives as `INTERNAL: h2 protocol error` with an h2 source, which is why the code
/// alone is not enough.
pub fn is_transport_failure(s: &tonic::Status) -> bool {
    use tonic::Code;
    matches!(
        s.code(),
        Code::Unavailable | Code::Unknown | Code::DeadlineExceeded | Code::Cancelled
    ) || std::error::Error::source(s).is_some()
}

/// Parses a meaning name (`performed`, `verified`, ...).
pub fn parse_meaning(s: &str) -> Result<SignatureMeaning, String> {
    SignatureMeaning::from_str_name(&s.trim().to_ascii_uppercase())
        .filter(|m| *m != SignatureMeaning::Unspecified)
        .ok_or_else(|| {
            format!("unknown signature meaning {s:?}; use performed, verified, reviewed, approved, received or released")
        })
}

/// Where the next event of a chain goes: (seq, prev_hash).
pub async fn next_link(
    client: &mut Client,
    chain_id: &str,
) -> Result<(u64, Vec<u8>), tonic::Status> {
    match client
        .get_head(GetHeadRequest {
            chain_id: chain_id.to_string(),
        })
        .await
    {
        Ok(h) => {
            let h = h.into_inner();
            Ok((h.seq + 1, h.event_hash))
        }
        Err(s) if s.code() == tonic::Code::NotFound => Ok((0, vec![0u8; 32])),
        Err(s) => Err(s),
    }
}

/// An event ready to be encoded and signed.
pub struct Draft {
    pub chain_id: String,
    pub seq: u64,
    pub prev_hash: Vec<u8>,
    pub occurred_at: i64,
    pub site: String,
    pub comment: String,
    pub detail: Detail,
}

/// Encodes the draft once (the performer is the first signer) and signs it.
pub fn sign_draft(
    draft: Draft,
    signers: &[(&NoteSigner, SignatureMeaning)],
    signed_at: i64,
) -> SignedEvent {
    sign_draft_with(draft, Vec::new(), signers, signed_at)
}

/// [`sign_draft`] with readings declared not measured (`EventBody.not_measured`).
pub fn sign_draft_with(
    draft: Draft,
    not_measured: Vec<pb::NotMeasured>,
    signers: &[(&NoteSigner, SignatureMeaning)],
    signed_at: i64,
) -> SignedEvent {
    let actor = signers
        .first()
        .map(|(s, _)| s.name.clone())
        .unwrap_or_default();
    let body = EventBody {
        chain_id: draft.chain_id,
        seq: draft.seq,
        prev_hash: draft.prev_hash,
        occurred_at_unix_nanos: draft.occurred_at,
        site: draft.site,
        actor_key_id: actor,
        comment: draft.comment,
        not_measured,
        detail: Some(draft.detail),
    }
    .encode_to_vec();
    let hash = EventHash::of_body(&body);
    let signatures = signers
        .iter()
        .map(|(s, meaning)| sign_event(&s.key, &s.name, &hash, *meaning, signed_at))
        .collect();
    SignedEvent { body, signatures }
}

/// Named fields from the command line (`--set name=value`), consumed kind by kind.
pub struct Fields {
    map: BTreeMap<String, String>,
}

impl Fields {
    pub fn parse(pairs: &[String]) -> Result<Fields, String> {
        let mut map = BTreeMap::new();
        for p in pairs {
            let (k, v) = p
                .split_once('=')
                .ok_or_else(|| format!("--set {p:?}: expected name=value"))?;
            if map.insert(k.trim().to_string(), v.to_string()).is_some() {
                return Err(format!("--set {k} given twice"));
            }
        }
        Ok(Fields { map })
    }

    pub fn from_map(map: BTreeMap<String, String>) -> Fields {
        Fields { map }
    }

    /// Takes the `not_measured.FIELD=REASON` entries: readings that were genuinely not
    /// possible, each with its reason. A `--set` name (`collection_end`) is recorded under its proto name
    /// (`collection_end_unix_nanos`), which the policy names.
    pub fn take_not_measured(&mut self, kind: &str) -> Vec<pb::NotMeasured> {
        let keys: Vec<String> = self
            .map
            .keys()
            .filter(|k| k.starts_with("not_measured."))
            .cloned()
            .collect();
        keys.into_iter()
            .map(|k| pb::NotMeasured {
                reason: self.map.remove(&k).unwrap_or_default(),
                field: crate::event_fields::proto_name(kind, &k["not_measured.".len()..]),
            })
            .collect()
    }
}

/// Builds an event detail of `kind` from named fields (the table in `event_fields`); unknown
/// or missing fields are errors that list the kind's fields.
pub fn detail_from_fields(kind: &str, f: Fields) -> Result<Detail, String> {
    crate::event_fields::build(kind, f.map)
}

/// Appends with the chain's current head filled in; returns the receipt.
pub async fn append_draft(
    client: &mut Client,
    draft: Draft,
    signers: &[(&NoteSigner, SignatureMeaning)],
) -> anyhow::Result<Receipt> {
    append_draft_with(client, draft, Vec::new(), signers).await
}

/// [`append_draft`] with readings declared not measured.
pub async fn append_draft_with(
    client: &mut Client,
    mut draft: Draft,
    not_measured: Vec<pb::NotMeasured>,
    signers: &[(&NoteSigner, SignatureMeaning)],
) -> anyhow::Result<Receipt> {
    let (seq, prev) = next_link(client, &draft.chain_id)
        .await
        .map_err(status_error)?;
    draft.seq = seq;
    draft.prev_hash = prev;
    let ev = sign_draft_with(draft, not_measured, signers, crate::time::now_nanos());
    Ok(client.append(ev).await.map_err(status_error)?.into_inner())
}

/// The whole chain: `GetChain` page after page (the server answers at most ~1 MiB at a time),
/// entries in seq order; the head is the one of the last page.
pub async fn get_whole_chain(
    client: &mut Client,
    chain_id: &str,
) -> Result<crate::pb::GetChainResponse, tonic::Status> {
    let mut all = crate::pb::GetChainResponse::default();
    let mut token = String::new();
    loop {
        let page = client
            .get_chain(crate::pb::GetChainRequest {
                chain_id: chain_id.to_string(),
                page_token: token,
                page_size: 0,
            })
            .await?
            .into_inner();
        all.entries.extend(page.entries);
        all.head = page.head;
        if page.next_page_token.is_empty() {
            return Ok(all);
        }
        token = page.next_page_token;
    }
}

/// A gRPC status as an error a person can read. A status made here because the connection
/// ended before any answer (tonic keeps the transport error as its source) says what to check:
/// a plain-text client talking to a TLS server sees only "Cancelled: operation was canceled".
pub fn status_error(s: tonic::Status) -> anyhow::Error {
    if std::error::Error::source(&s).is_some() {
        return anyhow::anyhow!(
            "{:?}: {}: the connection ended before the server answered. Check that a celltrail \
             server listens at the --server address; if it serves TLS, give --tls-ca CA.pem \
             (and --tls-cert/--tls-key if it asks for a client certificate)",
            s.code(),
            s.message()
        );
    }
    anyhow::anyhow!("{:?}: {}", s.code(), s.message())
}

/// What the key registry says about each registered key (printed name, role, site), for
/// showing signatures (`manifest`). Empty if the registry cannot be read.
pub async fn signer_infos(
    c: &mut Client,
) -> std::collections::HashMap<String, crate::manifest::SignerInfo> {
    let mut out = std::collections::HashMap::new();
    let Ok(resp) = get_whole_chain(c, crate::registry::KEYS_CHAIN).await else {
        return out;
    };
    for e in resp.entries {
        let body = crate::pb::LogEntry::decode(e.entry.as_slice())
            .ok()
            .and_then(|le| crate::pb::EventBody::decode(le.body.as_slice()).ok());
        if let Some(Detail::KeyRegistered(r)) = body.and_then(|b| b.detail) {
            out.insert(r.key_id.clone(), crate::manifest::SignerInfo::from(&r));
        }
    }
    out
}

#[cfg(test)]
mod transport_failure_tests {
    use super::is_transport_failure;
    use tonic::{Code, Status};

    #[test]
    fn a_stream_cut_by_the_transport_is_a_transport_failure() {
        // What a client sees when the server's GOAWAY or RST_STREAM(NO_ERROR) ends a call.
        let cut = Status::from_error(Box::new(h2::Error::from(h2::Reason::NO_ERROR)));
        assert_eq!(cut.code(), Code::Internal);
        assert!(is_transport_failure(&cut), "{cut:?}");
        let refused = Status::from_error(Box::new(h2::Error::from(h2::Reason::REFUSED_STREAM)));
        assert!(is_transport_failure(&refused), "{refused:?}");
        assert!(is_transport_failure(&Status::unavailable(
            "connection refused"
        )));
        assert!(is_transport_failure(&Status::deadline_exceeded("timeout")));
    }

    #[test]
    fn an_answer_from_the_server_is_not_a_transport_failure() {
        for s in [
            Status::internal("the store could not write the group: No space left on device"),
            Status::failed_precondition("stale prev_hash: the chain head is seq 4"),
            Status::already_exists("seq 3 is taken by another event"),
            Status::invalid_argument("signature 1 does not verify"),
            Status::resource_exhausted("the append queue is full"),
        ] {
            assert!(!is_transport_failure(&s), "{s:?}");
        }
    }
}

/// The `--server` and client TLS flags every client subcommand takes.
#[derive(clap::Args, Debug)]
pub struct ServerArg {
    /// Server address, or several as a,b,c (servers sharing one PostgreSQL database): calls
    /// go to the first that answers, appends to the writer (remembered once found).
    #[arg(long, env = "CELLTRAIL_SERVER", default_value = "127.0.0.1:50051")]
    pub server: String,
    /// Connect with TLS, trusting this CA certificate (PEM) for the server.
    #[arg(long, env = "CELLTRAIL_TLS_CA")]
    pub tls_ca: Option<std::path::PathBuf>,
    /// Client certificate (PEM) for servers that require mutual TLS; needs --tls-key.
    #[arg(long, env = "CELLTRAIL_CLIENT_CERT", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, env = "CELLTRAIL_CLIENT_KEY", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
}

impl ServerArg {
    /// The TLS flags as options (plain text when none).
    pub fn tls(&self) -> crate::tls::TlsOptions {
        crate::tls::TlsOptions {
            ca: self.tls_ca.clone(),
            cert: self.tls_cert.clone(),
            key: self.tls_key.clone(),
            domain: None,
        }
    }
}
