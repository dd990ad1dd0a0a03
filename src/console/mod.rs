//! `serve --http ADDR`: the read-only QA console (axum, on the server's tokio runtime). Pages
//! (`pages`) are server-rendered HTML without JavaScript under a strict Content-Security-
//! Policy: the worklist of chains by state from the per-chain summaries the writer keeps
//! (`crate::summary`; the worklist never replays a chain), open holds with their age, at-risk
//! clocks, search by DIN / product bag / CoI reference / chain id, the chain page (the batch
//! record of `celltrail report`, built from an in-process export and `verify`), the key
//! registry and the latest checkpoint. Every list is paged.
//!
//! Access (SECURITY.md): over TLS whenever the server has TLS; with a client CA the TLS
//! handshake admits only certified clients (mTLS); otherwise a bearer token from a file, sent
//! as `Authorization: Bearer` or as the cookie the sign-in form sets. The console never
//! writes to the ledger and shows no PHI (patients appear only as CoI references).

pub mod cmd;
pub mod pages;
pub mod tls;

use crate::bundle::record::html::Page;
use crate::note::{NoteSigner, NoteVerifier};
use crate::storage::Storage;
use crate::summary::{at_risk, AtRisk, Bucket, ChainSummary};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Form, Router};
use serde::Deserialize;
use std::sync::Arc;

/// Name of the session cookie the sign-in form sets (its value is the token itself).
pub const COOKIE: &str = "celltrail_console";

/// Who may use the console.
#[derive(Clone, Debug)]
pub enum Access {
    /// The TLS handshake already required a client certificate from the configured CA.
    ClientCertificate,
    /// A bearer token (from `--http-token-file`).
    Token(String),
}

/// What the console reads.
pub struct Console {
    pub store: Arc<dyn Storage>,
    /// The ledger, for the policy table in force now (clocks at risk are measured against
    /// the table that will judge the chain's next event, not the one at start-up).
    pub ledger: Arc<crate::ledger::Ledger>,
    pub log_verifier: NoteVerifier,
    pub admins: Vec<NoteVerifier>,
    /// The log key, so chain pages can carry signed chain heads (chain complete).
    pub log_key: Option<NoteSigner>,
    pub access: Access,
    /// Set the cookie `Secure` (served over TLS).
    pub secure: bool,
}

type Shared = Arc<Console>;

/// The router with every page, the access check and the security headers.
pub fn router(console: Console) -> Router {
    let shared: Shared = Arc::new(console);
    Router::new()
        .route("/", get(worklist))
        .route("/holds", get(holds))
        .route("/near-misses", get(near_misses))
        .route("/at-risk", get(risks))
        .route("/search", get(search))
        .route("/chain/{id}", get(chain))
        .route("/keys", get(keys))
        .route("/checkpoint", get(checkpoint))
        .fallback(not_found)
        .route_layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            require_access,
        ))
        .route("/login", get(login_form).post(login))
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(shared)
}

/// Every summary, sorted by chain id. Chains without a stored summary (written by an older
/// version) appear with their head's state only.
pub fn summaries(store: &dyn Storage) -> anyhow::Result<Vec<ChainSummary>> {
    Ok(store.chain_summaries()?)
}

fn html(status: StatusCode, page: Page) -> Response {
    let mut r = (status, page.html).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(&page.csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    r
}

fn ok(page: Page) -> Response {
    html(StatusCode::OK, page)
}

fn failure(e: impl std::fmt::Display) -> Response {
    tracing::warn!(error = %e, "console page failed");
    html(
        StatusCode::INTERNAL_SERVER_ERROR,
        pages::message("Error", &format!("The page could not be built: {e}")),
    )
}

async fn security_headers(req: Request, next: Next) -> Response {
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    h.entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(
            "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn token_matches(expected: &str, given: &str) -> bool {
    use subtle::ConstantTimeEq;
    let (a, b) = (expected.as_bytes(), given.as_bytes());
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

fn presented_token(h: &HeaderMap) -> Option<String> {
    if let Some(v) = h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        if let Some(t) = v.strip_prefix("Bearer ") {
            return Some(t.trim().to_string());
        }
    }
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            c.trim()
                .strip_prefix(&format!("{COOKIE}="))
                .map(str::to_string)
        })
}

async fn require_access(State(c): State<Shared>, req: Request, next: Next) -> Response {
    match &c.access {
        Access::ClientCertificate => next.run(req).await,
        Access::Token(t) => match presented_token(req.headers()) {
            Some(given) if token_matches(t, &given) => next.run(req).await,
            Some(_) => html(StatusCode::UNAUTHORIZED, pages::login(true)),
            None if req.method() == axum::http::Method::GET => {
                Redirect::to("/login").into_response()
            }
            None => StatusCode::UNAUTHORIZED.into_response(),
        },
    }
}

async fn login_form() -> Response {
    ok(pages::login(false))
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(State(c): State<Shared>, Form(f): Form<LoginForm>) -> Response {
    let Access::Token(t) = &c.access else {
        return Redirect::to("/").into_response();
    };
    if !token_matches(t, f.token.trim()) {
        return html(StatusCode::UNAUTHORIZED, pages::login(true));
    }
    let secure = if c.secure { "; Secure" } else { "" };
    let cookie = format!(
        "{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/{secure}",
        f.token.trim()
    );
    let mut r = Redirect::to("/").into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

#[derive(Deserialize, Default)]
struct ListQuery {
    state: Option<String>,
    page: Option<usize>,
    q: Option<String>,
}

/// Runs blocking store reads and rendering off the async threads.
async fn blocking(f: impl FnOnce() -> Response + Send + 'static) -> Response {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| failure(format!("page task failed: {e}")))
}

fn risks_of(c: &Console, all: &[ChainSummary], now: i64) -> Vec<AtRisk> {
    let policy = c.ledger.policy();
    let mut r: Vec<AtRisk> = all
        .iter()
        .filter_map(|s| at_risk(s, policy.limits(), now))
        .collect();
    r.sort_by_key(|a| a.nanos);
    r
}

async fn worklist(State(c): State<Shared>, Query(q): Query<ListQuery>) -> Response {
    blocking(move || {
        let bucket = match q.state.as_deref() {
            None | Some("") => None,
            Some(s) => match Bucket::from_slug(s) {
                Some(b) => Some(b),
                None => {
                    return html(
                        StatusCode::BAD_REQUEST,
                        pages::message(
                            "Unknown state group",
                            "Pick a state group from the worklist.",
                        ),
                    )
                }
            },
        };
        let all = match summaries(c.store.as_ref()) {
            Ok(a) => a,
            Err(e) => return failure(e),
        };
        let now = crate::time::now_nanos();
        let risks = risks_of(&c, &all, now).len();
        ok(pages::worklist(
            &all,
            bucket,
            q.page.unwrap_or(1),
            risks,
            now,
        ))
    })
    .await
}

async fn holds(State(c): State<Shared>, Query(q): Query<ListQuery>) -> Response {
    blocking(move || match summaries(c.store.as_ref()) {
        Ok(all) => ok(pages::holds(
            &all,
            q.page.unwrap_or(1),
            crate::time::now_nanos(),
        )),
        Err(e) => failure(e),
    })
    .await
}

async fn near_misses(State(c): State<Shared>, Query(q): Query<ListQuery>) -> Response {
    blocking(move || match summaries(c.store.as_ref()) {
        Ok(all) => ok(pages::near_misses(&all, q.page.unwrap_or(1))),
        Err(e) => failure(e),
    })
    .await
}

async fn risks(State(c): State<Shared>, Query(q): Query<ListQuery>) -> Response {
    blocking(move || match summaries(c.store.as_ref()) {
        Ok(all) => {
            let r = risks_of(&c, &all, crate::time::now_nanos());
            ok(pages::at_risk(&r, q.page.unwrap_or(1)))
        }
        Err(e) => failure(e),
    })
    .await
}

async fn search(State(c): State<Shared>, Query(q): Query<ListQuery>) -> Response {
    blocking(move || {
        let term = q.q.unwrap_or_default().trim().to_string();
        if term.is_empty() || term.len() > 200 {
            return html(
                StatusCode::BAD_REQUEST,
                pages::message("Search", "Enter a DIN, product bag id, CoI reference or chain id (up to 200 characters)."),
            );
        }
        let all = match summaries(c.store.as_ref()) {
            Ok(a) => a,
            Err(e) => return failure(e),
        };
        let by_bag = c.store.chains_of_bag(&term).unwrap_or_default();
        let found: Vec<&ChainSummary> = all
            .iter()
            .filter(|s| {
                s.chain_id == term
                    || s.coi_ref == term
                    || by_bag.contains(&s.chain_id)
                    || s.dins.contains(&term)
                    || s.product_bag_ids.contains(&term)
            })
            .collect();
        ok(pages::search(&term, &found, q.page.unwrap_or(1), crate::time::now_nanos()))
    })
    .await
}

async fn chain(State(c): State<Shared>, Path(id): Path<String>) -> Response {
    blocking(move || {
        if !crate::rules::valid_chain_id(&id) || crate::loglink::admin_signed(&id) {
            return html(
                StatusCode::NOT_FOUND,
                pages::message("No such chain", "That is not a custody chain id."),
            );
        }
        match c.store.head(&id) {
            Ok(Some(_)) => {}
            Ok(None) => {
                return html(
                    StatusCode::NOT_FOUND,
                    pages::message("No such chain", "No chain has that id; try the search."),
                )
            }
            Err(e) => return failure(e),
        }
        use crate::bundle::export::{anchors, from_store, Selection};
        let bundle = match from_store(
            c.store.as_ref(),
            anchors(&c.log_verifier, &c.admins),
            c.log_key.as_ref(),
            &Selection::Chains(vec![id.clone()]),
            &[],
        ) {
            Ok(b) => b,
            Err(e) => return failure(e),
        };
        let opts = crate::bundle::verify::Options {
            log_key: Some(c.log_verifier.clone()),
            admins: Some(c.admins.clone()),
            // No override: each entry is replayed under the table the log recorded for it.
            policy: crate::policy::Policy::default_autologous_car_t(),
            previous: None,
        };
        let report = crate::bundle::verify::verify_bundle(&bundle, &opts);
        let rec = crate::bundle::record::build(
            &report,
            &format!("this server's log, chain {id}"),
            crate::time::now_nanos(),
        );
        ok(pages::chain(&rec))
    })
    .await
}

async fn keys(State(c): State<Shared>, Query(q): Query<ListQuery>) -> Response {
    blocking(
        move || match crate::ledger::replay_registry(c.store.as_ref(), &c.admins) {
            Ok(reg) => {
                let mut keys: Vec<_> = reg.keys().cloned().collect();
                keys.sort_by(|a, b| a.key_id.cmp(&b.key_id));
                ok(pages::keys(&keys, q.page.unwrap_or(1)))
            }
            Err(e) => failure(e),
        },
    )
    .await
}

async fn checkpoint(State(c): State<Shared>) -> Response {
    blocking(move || match crate::log::checkpoint(c.store.as_ref()) {
        Ok(cp) => {
            let (note, origin, size) = match &cp {
                Some(cp) => (
                    Some(cp.note.as_str()),
                    cp.checkpoint.origin.clone(),
                    cp.checkpoint.size,
                ),
                None => (None, c.log_verifier.name.clone(), 0),
            };
            ok(pages::checkpoint(
                note,
                &origin,
                size,
                &c.log_verifier.to_key_string(),
            ))
        }
        Err(e) => failure(e),
    })
    .await
}

async fn not_found() -> Response {
    html(
        StatusCode::NOT_FOUND,
        pages::message("Not found", "There is no such page."),
    )
}

/// Serves the console on `listener` (TLS when `tls` is given) until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    match tls {
        None => axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(|e| anyhow::anyhow!("console server failed: {e}")),
        Some(acceptor) => axum::serve(tls::TlsListener::new(listener, acceptor), router)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(|e| anyhow::anyhow!("console server failed: {e}")),
    }
}
