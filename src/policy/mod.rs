//! Custody policy: the table-driven state machine that decides whether a custody event may be
//! appended to a bag's chain (docs/design.md §4, [R6], [R8]). Pure: takes the chain's state, the event
//! body and its verified signers; returns the next state or a [`Violation`] naming the rule,
//! the state and what was expected. No I/O, no clock: every time comes from the event.
//!
//! The ledger calls [`Policy::apply`] on every append and persists the returned [`ChainState`]
//! in the chain head; the offline verifier replays the same calls from seq 0. The table (which
//! events may follow which states, who must sign, where) is data: [`Policy::from_toml`] loads a
//! product's table, [`Policy::default_autologous_car_t`] the embedded `default.toml`. The checks
//! on the event details (CoI match, QC before release, time and temperature limits) are code in
//! `rules.rs`; the format is documented in `docs/policy.md`.

pub mod book;
pub mod codes;
mod eligibility;
mod kind;
mod next;
pub mod presence;
mod rules;
mod signatures;
mod table;
mod timefmt;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::pb::{EventBody, SignatureMeaning};

pub use book::PolicyBook;
pub use eligibility::SIGNATURE_MARGIN;
pub use kind::EventKind;
pub use next::{NextEvent, Outlook, Refusal};
pub use presence::{cut, cut_text};
pub use table::{Limits, Requirement, SignerSite, SiteRule, ANY_ROLE, ANY_STATE, START};
use table::{Row, Table};

/// The entry format the writer judges new entries under (`LogEntry.format_version`).
/// Format 0: entries written before presence (an unset measurement then meant 0 or false; no
/// time-order, code or key-expiry rules of format 1). Format 1: presence, time order, codes,
/// key expiry. Format 2: the current rules, format 1 plus lymphodepletion (a `dispensed` whose
/// row requires it needs a completed course; the infusion window opens a hold) and bodies
/// without unknown fields.
pub const CURRENT_FORMAT: u32 = 2;

/// The first entry format with the lymphodepletion rules.
pub const LYMPHODEPLETION_FORMAT: u32 = 2;

/// The first entry format whose bodies carry no field the server's proto does not define
/// (`rules::check_known_fields`).
pub const KNOWN_FIELDS_FORMAT: u32 = 2;

/// What the policy needs to know about the log entry that carries the event: the rules of
/// which format apply, and when the log accepted it (the server's clock, or offline the
/// entry's `accepted_at`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context {
    pub format: u32,
    pub accepted_at_unix_nanos: i64,
}

impl Context {
    /// The current rules, for an entry accepted at `accepted_at`.
    pub fn current(accepted_at_unix_nanos: i64) -> Context {
        Context {
            format: CURRENT_FORMAT,
            accepted_at_unix_nanos,
        }
    }

    /// An entry written before presence and the format-1 rules.
    pub fn legacy(&self) -> bool {
        self.format == 0
    }

    /// Whether the lymphodepletion rules (format 2) apply to this entry.
    pub fn lymphodepletion(&self) -> bool {
        self.format >= LYMPHODEPLETION_FORMAT
    }
}

/// The default policy table (autologous CAR-T), embedded in the binary.
pub const DEFAULT_TABLE_TOML: &str = include_str!("default.toml");

/// One verified signature on the event, with the signer's registry record at `signed_at`.
#[derive(Debug, Clone, PartialEq)]
pub struct Signer {
    pub key_id: String,
    pub role: String,
    pub site: String,
    pub meaning: SignatureMeaning,
    pub signed_at_unix_nanos: i64,
    /// Start of the key's validity (its KeyRegistered `valid_from`).
    pub valid_from_unix_nanos: i64,
}

/// Why an event may not be appended: the rule, the chain's state, what was expected, and the
/// specifics a QA lead needs to act.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("rule {rule}: in state {state} expected {expected}: {detail}")]
pub struct Violation {
    pub rule: String,
    pub state: String,
    pub expected: String,
    pub detail: String,
}

impl Violation {
    /// True when the event itself is malformed (a missing field, a bad code, a bad
    /// `not_measured` declaration) rather than refused by the chain's state: the API answers
    /// INVALID_ARGUMENT instead of FAILED_PRECONDITION.
    pub fn is_malformed(&self) -> bool {
        matches!(
            self.rule.as_str(),
            "missing_fields"
                | "not_measured"
                | "required_field"
                | "code_format"
                | "coi_ref_format"
                | "key_role"
                | "key_site"
        )
    }
}

/// A policy table that could not be loaded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PolicyError {
    /// TOML syntax, a missing or unknown field, a wrong type (the message names line and column).
    #[error("policy table: {0}")]
    Parse(String),
    /// A value that parses but makes no sense.
    #[error("policy table line {line}: {message}")]
    Invalid { line: usize, message: String },
    /// A problem of the table as a whole.
    #[error("policy table: {0}")]
    Table(String),
}

impl PolicyError {
    fn invalid(line: usize, message: String) -> Self {
        PolicyError::Invalid { line, message }
    }
}

/// Who holds the product.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Custody {
    /// A site holds it; only that site acts.
    AtSite { site: String },
    /// Shipped and not yet received; only a `received` at `to_site` may act.
    InTransit {
        from_site: String,
        to_site: String,
        courier: String,
        shipper_id: String,
        since_unix_nanos: i64,
    },
}

/// One QC result as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QcRecord {
    pub passed: bool,
    pub result: String,
    pub method: String,
    pub specification: String,
    pub seq: u64,
}

/// The patient's lymphodepletion course as recorded on the chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lymphodepletion {
    /// The treating site, where the course was given.
    pub site: String,
    pub regimen: String,
    pub started_at_unix_nanos: i64,
    pub started_seq: u64,
    /// Set by `lymphodepletion_completed`.
    pub completed_at_unix_nanos: Option<i64>,
}

/// An open hold: the chain accepts only the table's `[hold] allowed_events` until QA clears it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenHold {
    /// Each reason names its rule, e.g. "temperature_range: logger recorded ...".
    pub reasons: Vec<String>,
    pub opened_seq: u64,
    pub opened_at_unix_nanos: i64,
    /// Actor key of the event that opened it.
    pub opened_by: String,
}

/// Everything the policy remembers about a chain. The ledger stores it (as JSON) in the chain
/// head and hands it back on the next append.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChainState {
    /// Current state name (one of [`Policy::states`]).
    pub state: String,
    pub custody: Custody,
    /// Pseudonymous chain-of-identity reference from `Enrolled`.
    pub coi_ref: String,
    pub therapy: String,
    /// Manufacturing site named at enrolment (may be empty).
    pub manufacturing_site: String,
    /// Apheresis bag DINs collected.
    pub dins: Vec<String>,
    /// Earliest collection end, the start of the fresh-material clock.
    pub collection_end_unix_nanos: Option<i64>,
    /// Shipper from the last `packed`, matched on receipt.
    pub packed_shipper_id: String,
    pub manufacturing_started_unix_nanos: Option<i64>,
    /// Final product bags produced by manufacturing steps.
    pub product_bag_ids: Vec<String>,
    /// QC results by lower-case test name, in order.
    pub qc: BTreeMap<String, Vec<QcRecord>>,
    /// Deviation ids recorded on this chain.
    pub deviations: Vec<String>,
    /// Set when released exceptionally: the deviation id.
    pub exceptional_release_deviation: Option<String>,
    pub hold: Option<OpenHold>,
    pub dispensed_bag_id: Option<String>,
    pub thawed_at_unix_nanos: Option<i64>,
    pub checked_bag_id: Option<String>,
    /// Time of the last receipt (`received` event) at a site.
    #[serde(default)]
    pub received_at_unix_nanos: Option<i64>,
    /// Time of the bedside identity check.
    #[serde(default)]
    pub bedside_checked_at_unix_nanos: Option<i64>,
    /// The latest lymphodepletion course (entry format 2 on).
    #[serde(default)]
    pub lymphodepletion: Option<Lymphodepletion>,
    pub last_seq: u64,
    pub last_occurred_unix_nanos: i64,
}

impl ChainState {
    /// The state name, e.g. "QcTesting".
    pub fn state_name(&self) -> &str {
        &self.state
    }

    /// Whether a hold is open.
    pub fn on_hold(&self) -> bool {
        self.hold.is_some()
    }

    fn blank() -> ChainState {
        ChainState {
            state: START.to_string(),
            custody: Custody::AtSite {
                site: String::new(),
            },
            coi_ref: String::new(),
            therapy: String::new(),
            manufacturing_site: String::new(),
            dins: Vec::new(),
            collection_end_unix_nanos: None,
            packed_shipper_id: String::new(),
            manufacturing_started_unix_nanos: None,
            product_bag_ids: Vec::new(),
            qc: BTreeMap::new(),
            deviations: Vec::new(),
            exceptional_release_deviation: None,
            hold: None,
            dispensed_bag_id: None,
            thawed_at_unix_nanos: None,
            checked_bag_id: None,
            received_at_unix_nanos: None,
            bedside_checked_at_unix_nanos: None,
            lymphodepletion: None,
            last_seq: 0,
            last_occurred_unix_nanos: 0,
        }
    }
}

/// Builds violations for one `apply` call, all naming the same current state.
pub(crate) struct Fail<'a> {
    state: &'a str,
}

impl Fail<'_> {
    pub(crate) fn v(
        &self,
        rule: &str,
        expected: impl Into<String>,
        detail: impl Into<String>,
    ) -> Violation {
        Violation {
            rule: rule.to_string(),
            state: self.state.to_string(),
            expected: expected.into(),
            detail: detail.into(),
        }
    }
}

/// A loaded policy table.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    table: Table,
    /// SHA-256 of the TOML text the table was loaded from.
    sha256: [u8; 32],
}

impl Policy {
    /// The embedded autologous CAR-T table.
    pub fn default_autologous_car_t() -> Policy {
        Policy::from_toml(DEFAULT_TABLE_TOML).expect("the embedded default.toml is tested to load")
    }

    /// Load a table; the error names the line or field that is wrong.
    pub fn from_toml(text: &str) -> Result<Policy, PolicyError> {
        Ok(Policy {
            table: table::parse(text)?,
            sha256: book::table_sha256(text.as_bytes()),
        })
    }

    /// SHA-256 of the TOML text the table was loaded from (its identity in reports).
    pub fn sha256(&self) -> [u8; 32] {
        self.sha256
    }

    /// The table's `name`.
    pub fn name(&self) -> &str {
        &self.table.name
    }

    /// Every state the table can reach, sorted (excludes the pseudo-state `Start`).
    pub fn states(&self) -> Vec<String> {
        self.table.states.iter().cloned().collect()
    }

    /// Every role a transition of the table names (excluding "*"), sorted: the roles a key
    /// may be registered with.
    pub fn roles(&self) -> Vec<String> {
        let mut roles = std::collections::BTreeSet::new();
        for row in &self.table.rows {
            for req in row
                .signatures
                .iter()
                .chain(&row.optional_signatures)
                .chain(row.exceptional_signatures.iter().flatten())
            {
                roles.extend(req.roles.iter().filter(|r| *r != ANY_ROLE).cloned());
            }
        }
        roles.into_iter().collect()
    }

    /// Checks a key registration against the table (entry format 1 on): its role must be one
    /// the table names, its site a site code or GLN. A typo such as "phramacist" would
    /// otherwise surface only when that person first tries to sign.
    pub fn check_registration(&self, r: &crate::pb::KeyRegistered) -> Result<(), Violation> {
        let fail = Fail {
            state: "KeyRegistry",
        };
        let roles = self.roles();
        if !roles.contains(&r.role) {
            return Err(fail.v(
                "key_role",
                format!(
                    "a role of policy table {:?}: one of [{}]",
                    self.name(),
                    roles.join(", ")
                ),
                format!(
                    "key {} has role {:?}, which no transition of the table names",
                    presence::cut(&r.key_id),
                    presence::cut(&r.role)
                ),
            ));
        }
        if !valid_site(&r.site) {
            return Err(fail.v(
                "key_site",
                "a site code or GLN of 1-64 characters [A-Za-z0-9._:-]",
                format!(
                    "key {} has site {:?}",
                    presence::cut(&r.key_id),
                    presence::cut(&r.site)
                ),
            ));
        }
        Ok(())
    }

    /// The states nothing may follow.
    pub fn terminal_states(&self) -> Vec<String> {
        self.table.terminal.iter().cloned().collect()
    }

    /// The table's cross-event limits (ambient exposure, manufacturing window, thaw window).
    pub fn limits(&self) -> &Limits {
        &self.table.limits
    }

    /// The allowed temperature range (°C) and the most hours since collection that the row
    /// for `event` in state `state` checks, for reports that show readings against limits.
    pub fn row_limits(&self, event: EventKind, state: &str) -> (Option<(f64, f64)>, Option<u64>) {
        self.table.row(event, state).map_or((None, None), |r| {
            (r.temp_range_c, r.max_hours_since_collection)
        })
    }

    /// Decide one event. `state` is `None` for seq 0. Returns the new state or the violation.
    ///
    /// The caller has verified the signatures, the signers' registry records, the chain link
    /// and that `body.actor_key_id` signed PERFORMED.
    pub fn apply(
        &self,
        state: Option<&ChainState>,
        body: &EventBody,
        signers: &[Signer],
        ctx: &Context,
    ) -> Result<ChainState, Violation> {
        let t = &self.table;
        let cur = state.map_or(START, |s| s.state.as_str());
        let fail = Fail { state: cur };

        let Some(detail) = body.detail.as_ref() else {
            return Err(fail.v(
                "event_kind",
                "a custody event detail",
                "the event body carries no detail",
            ));
        };
        let Some(kind) = EventKind::of(detail) else {
            return Err(fail.v(
                "event_kind",
                "a custody event",
                "key registry events belong on the \"keys\" chain and log-link events on the \"log\" chain, not on a bag's chain",
            ));
        };

        let not_measured = if ctx.legacy() {
            Vec::new()
        } else {
            let declared = presence::check(body, detail, kind, &fail)?;
            codes::check(detail, &fail)?;
            if ctx.lymphodepletion() {
                codes::check_sites(body, detail, &fail)?;
            }
            declared
        };

        match state {
            None if body.seq != 0 => {
                return Err(fail.v(
                    "chain_start",
                    "the chain's first event at seq 0",
                    format!("got {kind} at seq {} on a chain with no events", body.seq),
                ))
            }
            Some(s) if t.terminal.contains(&s.state) => {
                return Err(fail.v(
                    "terminal",
                    "no further events",
                    format!(
                        "the chain ended with {} at seq {}; {kind} cannot follow",
                        s.state, s.last_seq
                    ),
                ))
            }
            _ => {}
        }

        if state.is_some() && !t.states.contains(cur) {
            return Err(fail.v(
                "unknown_state",
                format!("a state of policy table {:?}", t.name),
                format!("the chain's state {cur} is not in this table; was it written under another table?"),
            ));
        }
        let Some(row) = t.row(kind, cur) else {
            let allowed: Vec<&str> = t.events_from(cur).iter().map(|k| k.name()).collect();
            return Err(if state.is_none() {
                fail.v(
                    "chain_start",
                    format!("{} as the chain's first event", allowed.join(" or ")),
                    format!("got {kind}; a chain begins with enrolment (its CoI reference)"),
                )
            } else {
                fail.v(
                    "transition",
                    format!("one of [{}]", allowed.join(", ")),
                    format!("{kind} is not allowed in state {cur}"),
                )
            });
        };

        if let Some(hold) = state.and_then(|s| s.hold.as_ref()) {
            if !t.hold_allowed.contains(&kind) {
                let allowed: Vec<&str> = t.hold_allowed.iter().map(|k| k.name()).collect();
                return Err(fail.v(
                    "on_hold",
                    format!("only [{}] while on hold", allowed.join(", ")),
                    format!(
                        "{kind} refused: hold opened at seq {} by {} ({}) is still open; QA must release it",
                        hold.opened_seq,
                        hold.opened_by,
                        hold.reasons.join("; ")
                    ),
                ));
            }
        }

        let mut next = state.cloned().unwrap_or_else(ChainState::blank);
        rules::check_envelope(t, &next, state.is_some(), body, signers, ctx, &fail)?;
        check_site(row, &next, body, kind, &fail)?;
        let requirements = match (&detail, &row.exceptional_signatures) {
            (crate::pb::event_body::Detail::Released(r), Some(ex)) if r.exceptional => ex,
            _ => &row.signatures,
        };
        signatures::check(
            requirements,
            &row.optional_signatures,
            signers,
            body,
            detail,
            &fail,
        )?;
        rules::apply_detail(t, row, &mut next, body, detail, ctx, &fail)?;
        for (field, why) in not_measured {
            rules::raise_hold(
                &mut next,
                body,
                format!("not_measured: {kind} {field} was not measured: {why}"),
            );
        }

        if let Some(to) = &row.to {
            next.state = to.clone();
        }
        next.last_seq = body.seq;
        next.last_occurred_unix_nanos = next
            .last_occurred_unix_nanos
            .max(body.occurred_at_unix_nanos);
        Ok(next)
    }
}

/// A site code or GLN: 1-64 characters of `[A-Za-z0-9._:-]`.
pub fn valid_site(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
}

/// The treating site as far as the chain knows it: where the lymphodepletion course was
/// started; else the destination of a product in transit; else the custodian once the product
/// has been received after manufacturing (at the site it was shipped to); else `None` (any site; the first
/// lymphodepletion event fixes it).
pub(crate) fn treating_site(st: &ChainState) -> Option<&str> {
    if let Some(ld) = &st.lymphodepletion {
        return Some(&ld.site);
    }
    match &st.custody {
        Custody::InTransit { to_site, .. } => Some(to_site),
        // Received after manufacturing started: at the site it was shipped to for infusion.
        Custody::AtSite { site }
            if matches!(
                (st.received_at_unix_nanos, st.manufacturing_started_unix_nanos),
                (Some(r), Some(m)) if r >= m
            ) =>
        {
            Some(site)
        }
        Custody::AtSite { .. } => None,
    }
}

fn check_site(
    row: &Row,
    st: &ChainState,
    body: &EventBody,
    kind: EventKind,
    fail: &Fail<'_>,
) -> Result<(), Violation> {
    match (row.site, &st.custody) {
        (SiteRule::Any, _) => Ok(()),
        (SiteRule::Treating, _) => match treating_site(st) {
            Some(site) if site != body.site => Err(fail.v(
                "treating_site",
                format!("{kind} at the treating site {site}"),
                format!(
                    "event at site {:?}; lymphodepletion is recorded where the patient is treated and the product is infused ({site})",
                    cut(&body.site)
                ),
            )),
            _ => Ok(()),
        },
        (SiteRule::Custodian, Custody::AtSite { site }) if *site == body.site => Ok(()),
        (SiteRule::Custodian, Custody::AtSite { site }) => Err(fail.v(
            "custodian_site",
            format!("{kind} by the custodian site {site}"),
            format!(
                "event at site {:?}; only the site holding custody ({site}) acts or hands off",
                cut(&body.site)
            ),
        )),
        (SiteRule::Custodian, Custody::InTransit { from_site, to_site, courier, .. }) => {
            Err(fail.v(
                "custodian_site",
                format!("a received event at {to_site}"),
                format!(
                    "{kind} at site {:?} refused: the product is in transit from {from_site} to {to_site} (courier {courier:?})",
                    cut(&body.site)
                ),
            ))
        }
        (SiteRule::Destination, Custody::InTransit { to_site, .. }) if *to_site == body.site => {
            Ok(())
        }
        (SiteRule::Destination, Custody::InTransit { from_site, to_site, .. }) => Err(fail.v(
            "receive_at_destination",
            format!("receipt at the shipment's destination {to_site}"),
            format!(
                "received at site {:?}, but the shipment from {from_site} is addressed to {to_site}",
                cut(&body.site)
            ),
        )),
        (SiteRule::Destination, Custody::AtSite { site }) => Err(fail.v(
            "receive_at_destination",
            "a product in transit",
            format!("nothing is in transit; custody is at {site}"),
        )),
    }
}
