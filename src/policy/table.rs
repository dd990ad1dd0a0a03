//! The policy table: the TOML schema an operator writes, and its load-time validation into a
//! [`Table`] the engine can look up by (event kind, current state). Pure: text in, table out.
//!
//! Validation catches what would otherwise surface as a puzzling rejection months later: a
//! misspelt state that nothing reaches, two transitions claiming the same (event, state), a
//! transition with no PERFORMED signature (the actor's own signature could never be matched),
//! a transition out of a terminal state. Errors name the line of the offending value.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use toml::Spanned;

use crate::pb::SignatureMeaning;

use super::kind::EventKind;
use super::PolicyError;

/// The pseudo-state of a chain that has no events yet. Never stored in a [`super::ChainState`].
pub const START: &str = "Start";
/// In a `from` list: every reachable state except `Start` and the terminal states.
pub const ANY_STATE: &str = "*";
/// In a signature requirement's `role`: any registered role.
pub const ANY_ROLE: &str = "*";

/// Where the event must happen, relative to the chain's custody.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SiteRule {
    /// `body.site` must be the site that holds custody (not in transit).
    #[default]
    Custodian,
    /// The product must be in transit and `body.site` must be its destination.
    Destination,
    /// Any site (enrolment, holds, QA's deviations and hold releases).
    Any,
    /// The treating site (lymphodepletion): the site of the course already started on this
    /// chain; else the destination of the product in transit; else the custodian once the
    /// product has left the manufacturing site; else any site (the event then fixes it).
    Treating,
}

/// Where a signer's registered site must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignerSite {
    /// Registered at the site where the event happened (`body.site`).
    #[default]
    Event,
    /// Registered anywhere (QA approving remotely, a courier).
    Any,
    /// Registered at the detail's `to_site` (the receiving side of a custody hand-off).
    ToSite,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
enum RawMeaning {
    Performed,
    Verified,
    Reviewed,
    Approved,
    Received,
    Released,
}

impl From<RawMeaning> for SignatureMeaning {
    fn from(m: RawMeaning) -> Self {
        match m {
            RawMeaning::Performed => SignatureMeaning::Performed,
            RawMeaning::Verified => SignatureMeaning::Verified,
            RawMeaning::Reviewed => SignatureMeaning::Reviewed,
            RawMeaning::Approved => SignatureMeaning::Approved,
            RawMeaning::Received => SignatureMeaning::Received,
            RawMeaning::Released => SignatureMeaning::Released,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawRoles {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequirement {
    role: RawRoles,
    meaning: RawMeaning,
    #[serde(default)]
    site: SignerSite,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTransition {
    event: Spanned<EventKind>,
    from: Vec<Spanned<String>>,
    #[serde(default)]
    to: Option<Spanned<String>>,
    #[serde(default)]
    site: SiteRule,
    signatures: Vec<RawRequirement>,
    #[serde(default)]
    optional_signatures: Vec<RawRequirement>,
    #[serde(default)]
    exceptional_signatures: Option<Vec<RawRequirement>>,
    #[serde(default)]
    temp_min_c: Option<f64>,
    #[serde(default)]
    temp_max_c: Option<f64>,
    #[serde(default)]
    max_hours_since_collection: Option<u64>,
    #[serde(default)]
    destination_must_be_manufacturing_site: bool,
    #[serde(default)]
    requires_lymphodepletion: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    ambient_exposure_max_minutes: u64,
    manufacturing_window_days: u64,
    thaw_to_infusion_max_minutes: u64,
    clock_skew_tolerance_seconds: u64,
    #[serde(default = "default_signature_max_age_days")]
    signature_max_age_days: u64,
    #[serde(default = "default_ld_min_days")]
    lymphodepletion_to_infusion_min_days: u64,
    #[serde(default = "default_ld_max_days")]
    lymphodepletion_to_infusion_max_days: u64,
}

fn default_signature_max_age_days() -> u64 {
    7
}

fn default_ld_min_days() -> u64 {
    2
}

fn default_ld_max_days() -> u64 {
    14
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQc {
    required_tests: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHold {
    allowed_events: Spanned<Vec<EventKind>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTable {
    name: String,
    #[serde(default)]
    description: String,
    terminal: Vec<Spanned<String>>,
    limits: RawLimits,
    qc: RawQc,
    hold: RawHold,
    transition: Vec<RawTransition>,
}

/// One required (or optional) signature: who, with which meaning, registered where.
#[derive(Debug, Clone, PartialEq)]
pub struct Requirement {
    /// Accepted roles; `["*"]` accepts any role.
    pub roles: Vec<String>,
    pub meaning: SignatureMeaning,
    pub site: SignerSite,
}

impl Requirement {
    /// "VERIFIED by nurse (registered at the event site)".
    pub fn describe(&self) -> String {
        let roles = if self.roles.iter().any(|r| r == ANY_ROLE) {
            "any role".to_string()
        } else {
            self.roles.join("|")
        };
        let site = match self.site {
            SignerSite::Event => "registered at the event site",
            SignerSite::Any => "registered at any site",
            SignerSite::ToSite => "registered at the receiving site",
        };
        format!("{} by {roles} ({site})", self.meaning.as_str_name())
    }

    pub fn accepts_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == ANY_ROLE || r == role)
    }
}

/// Limits that span several events.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub ambient_exposure_max_minutes: u64,
    pub manufacturing_window_days: u64,
    pub thaw_to_infusion_max_minutes: u64,
    pub clock_skew_tolerance_seconds: u64,
    /// Longest time from a signature to the log's acceptance (entry format 1 on).
    pub signature_max_age_days: u64,
    /// Window from the end of lymphodepletion to the start of infusion (entry format 2 on);
    /// an infusion outside it opens a hold.
    pub lymphodepletion_to_infusion_min_days: u64,
    pub lymphodepletion_to_infusion_max_days: u64,
}

/// One transition row after validation.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub event: EventKind,
    /// New state; `None` keeps the current state (holds, deviations, hand-offs).
    pub to: Option<String>,
    pub site: SiteRule,
    pub signatures: Vec<Requirement>,
    pub optional_signatures: Vec<Requirement>,
    /// For `released` with `exceptional = true`: replaces `signatures`.
    pub exceptional_signatures: Option<Vec<Requirement>>,
    pub temp_range_c: Option<(f64, f64)>,
    pub max_hours_since_collection: Option<u64>,
    pub destination_must_be_manufacturing_site: bool,
    /// `dispensed` only (entry format 2 on): refused until a lymphodepletion course is
    /// completed on the chain, at the dispensing site.
    pub requires_lymphodepletion: bool,
    /// 1-based line of the row's `event = ...`, for messages.
    pub line: usize,
}

/// A validated policy table.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub name: String,
    pub description: String,
    pub terminal: BTreeSet<String>,
    pub limits: Limits,
    /// Lower-case test names that must all have passed before a normal release.
    pub required_qc: Vec<String>,
    pub hold_allowed: BTreeSet<EventKind>,
    pub rows: Vec<Row>,
    /// (event, from-state) → index into `rows`.
    pub index: BTreeMap<(EventKind, String), usize>,
    /// Every state reachable from `Start` (excluding `Start`).
    pub states: BTreeSet<String>,
}

impl Table {
    pub fn row(&self, event: EventKind, state: &str) -> Option<&Row> {
        self.index
            .get(&(event, state.to_string()))
            .map(|&i| &self.rows[i])
    }

    /// The event kinds the table allows in `state`, in lifecycle order.
    pub fn events_from(&self, state: &str) -> Vec<EventKind> {
        EventKind::ALL
            .into_iter()
            .filter(|&k| self.index.contains_key(&(k, state.to_string())))
            .collect()
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

fn valid_state_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn convert_requirements(
    raw: Vec<RawRequirement>,
    line: usize,
    field: &str,
) -> Result<Vec<Requirement>, PolicyError> {
    let mut out = Vec::with_capacity(raw.len());
    for r in raw {
        let roles = match r.role {
            RawRoles::One(s) => vec![s],
            RawRoles::Many(v) => v,
        };
        if roles.is_empty() || roles.iter().any(|r| r.trim().is_empty()) {
            return Err(PolicyError::invalid(
                line,
                format!("{field}: every signature needs a non-empty role (or \"*\")"),
            ));
        }
        out.push(Requirement {
            roles,
            meaning: r.meaning.into(),
            site: r.site,
        });
    }
    Ok(out)
}

fn require_performed(reqs: &[Requirement], line: usize, field: &str) -> Result<(), PolicyError> {
    if reqs
        .iter()
        .any(|r| r.meaning == SignatureMeaning::Performed)
    {
        Ok(())
    } else {
        Err(PolicyError::invalid(
            line,
            format!(
                "{field} has no PERFORMED signature; the actor always signs PERFORMED, so no event could ever match"
            ),
        ))
    }
}

/// Parse and validate a policy table.
pub fn parse(text: &str) -> Result<Table, PolicyError> {
    let raw: RawTable = toml::from_str(text).map_err(|e| PolicyError::Parse(e.to_string()))?;

    let limits = Limits {
        ambient_exposure_max_minutes: raw.limits.ambient_exposure_max_minutes,
        manufacturing_window_days: raw.limits.manufacturing_window_days,
        thaw_to_infusion_max_minutes: raw.limits.thaw_to_infusion_max_minutes,
        clock_skew_tolerance_seconds: raw.limits.clock_skew_tolerance_seconds,
        signature_max_age_days: raw.limits.signature_max_age_days,
        lymphodepletion_to_infusion_min_days: raw.limits.lymphodepletion_to_infusion_min_days,
        lymphodepletion_to_infusion_max_days: raw.limits.lymphodepletion_to_infusion_max_days,
    };
    for (name, v) in [
        (
            "ambient_exposure_max_minutes",
            limits.ambient_exposure_max_minutes,
        ),
        (
            "manufacturing_window_days",
            limits.manufacturing_window_days,
        ),
        (
            "thaw_to_infusion_max_minutes",
            limits.thaw_to_infusion_max_minutes,
        ),
        ("signature_max_age_days", limits.signature_max_age_days),
        (
            "lymphodepletion_to_infusion_max_days",
            limits.lymphodepletion_to_infusion_max_days,
        ),
    ] {
        // Bounded so that limit arithmetic in nanoseconds can never overflow an i64.
        if v == 0 || v > 100_000 {
            return Err(PolicyError::Table(format!(
                "[limits] {name} = {v}: expected 1..=100000"
            )));
        }
    }
    if limits.lymphodepletion_to_infusion_min_days > limits.lymphodepletion_to_infusion_max_days {
        return Err(PolicyError::Table(format!(
            "[limits] lymphodepletion_to_infusion_min_days = {} is above lymphodepletion_to_infusion_max_days = {}",
            limits.lymphodepletion_to_infusion_min_days,
            limits.lymphodepletion_to_infusion_max_days
        )));
    }
    if limits.clock_skew_tolerance_seconds > 86_400 {
        return Err(PolicyError::Table(format!(
            "[limits] clock_skew_tolerance_seconds = {}: expected 0..=86400",
            limits.clock_skew_tolerance_seconds
        )));
    }

    let mut required_qc = Vec::new();
    for t in &raw.qc.required_tests {
        let name = t.get_ref().trim().to_ascii_lowercase();
        if name.is_empty() {
            return Err(PolicyError::invalid(
                line_of(text, t.span().start),
                "[qc] required_tests: empty test name".into(),
            ));
        }
        if required_qc.contains(&name) {
            return Err(PolicyError::invalid(
                line_of(text, t.span().start),
                format!("[qc] required_tests: '{name}' is listed twice"),
            ));
        }
        required_qc.push(name);
    }

    let hold_line = line_of(text, raw.hold.allowed_events.span().start);
    let hold_allowed: BTreeSet<EventKind> =
        raw.hold.allowed_events.into_inner().into_iter().collect();
    if !hold_allowed.contains(&EventKind::HoldReleased) {
        return Err(PolicyError::invalid(
            hold_line,
            "[hold] allowed_events must include \"hold_released\", or a held chain could never be released".into(),
        ));
    }

    // Convert rows, keeping the spans of their state names for the reachability checks.
    struct Pending {
        row: Row,
        from_any: bool,
        from: Vec<(String, usize)>,
    }
    let mut pending = Vec::with_capacity(raw.transition.len());
    for t in raw.transition {
        let line = line_of(text, t.event.span().start);
        let event = *t.event.get_ref();
        let what = format!("transition event = \"{event}\"");
        if t.from.is_empty() {
            return Err(PolicyError::invalid(
                line,
                format!("{what}: `from` lists no state"),
            ));
        }
        let from_any = t.from.iter().any(|s| s.get_ref() == ANY_STATE);
        if from_any && t.from.len() > 1 {
            return Err(PolicyError::invalid(
                line,
                format!("{what}: \"*\" must be the only entry of `from`"),
            ));
        }
        let mut from = Vec::new();
        if !from_any {
            for s in &t.from {
                let l = line_of(text, s.span().start);
                if !valid_state_name(s.get_ref()) {
                    return Err(PolicyError::invalid(
                        l,
                        format!(
                            "{what}: state name {:?} must be 1-64 of [A-Za-z0-9_-]",
                            s.get_ref()
                        ),
                    ));
                }
                from.push((s.get_ref().clone(), l));
            }
        }
        let to = match t.to {
            None => None,
            Some(s) => {
                let l = line_of(text, s.span().start);
                let name = s.into_inner();
                if !valid_state_name(&name) || name == START {
                    return Err(PolicyError::invalid(
                        l,
                        format!("{what}: `to` = {name:?} must be 1-64 of [A-Za-z0-9_-] and not \"{START}\""),
                    ));
                }
                Some(name)
            }
        };
        let signatures = convert_requirements(t.signatures, line, &format!("{what} signatures"))?;
        require_performed(&signatures, line, &format!("{what} signatures"))?;
        let optional_signatures = convert_requirements(
            t.optional_signatures,
            line,
            &format!("{what} optional_signatures"),
        )?;
        let exceptional_signatures = match t.exceptional_signatures {
            None => None,
            Some(_) if event != EventKind::Released => {
                return Err(PolicyError::invalid(
                    line,
                    format!("{what}: exceptional_signatures only applies to event \"released\""),
                ))
            }
            Some(v) => {
                let reqs =
                    convert_requirements(v, line, &format!("{what} exceptional_signatures"))?;
                require_performed(&reqs, line, &format!("{what} exceptional_signatures"))?;
                Some(reqs)
            }
        };
        let temp_range_c = match (t.temp_min_c, t.temp_max_c) {
            (None, None) => None,
            (Some(lo), Some(hi)) if lo.is_finite() && hi.is_finite() && lo <= hi => {
                if !matches!(event, EventKind::Received | EventKind::Stored) {
                    return Err(PolicyError::invalid(
                        line,
                        format!("{what}: temp_min_c/temp_max_c only apply to \"received\" and \"stored\""),
                    ));
                }
                Some((lo, hi))
            }
            _ => {
                return Err(PolicyError::invalid(
                    line,
                    format!("{what}: give both temp_min_c and temp_max_c, finite, with min <= max"),
                ))
            }
        };
        if let Some(h) = t.max_hours_since_collection {
            if event != EventKind::Received || h == 0 || h > 100_000 {
                return Err(PolicyError::invalid(
                    line,
                    format!("{what}: max_hours_since_collection applies to \"received\" only and must be 1..=100000"),
                ));
            }
        }
        if t.destination_must_be_manufacturing_site && event != EventKind::Shipped {
            return Err(PolicyError::invalid(
                line,
                format!(
                    "{what}: destination_must_be_manufacturing_site applies to \"shipped\" only"
                ),
            ));
        }
        if t.requires_lymphodepletion && event != EventKind::Dispensed {
            return Err(PolicyError::invalid(
                line,
                format!("{what}: requires_lymphodepletion applies to \"dispensed\" only"),
            ));
        }
        if t.site == SiteRule::Treating
            && !matches!(
                event,
                EventKind::LymphodepletionStarted | EventKind::LymphodepletionCompleted
            )
        {
            return Err(PolicyError::invalid(
                line,
                format!("{what}: site = \"treating\" applies to the lymphodepletion events only"),
            ));
        }
        if t.site == SiteRule::Destination && event != EventKind::Received {
            return Err(PolicyError::invalid(
                line,
                format!("{what}: site = \"destination\" applies to \"received\" only"),
            ));
        }
        let uses_to_site = signatures
            .iter()
            .chain(&optional_signatures)
            .any(|r| r.site == SignerSite::ToSite);
        if uses_to_site && !matches!(event, EventKind::Shipped | EventKind::CustodyHandoff) {
            return Err(PolicyError::invalid(
                line,
                format!("{what}: signature site = \"to_site\" applies to \"shipped\" and \"custody_handoff\" only"),
            ));
        }
        if from.iter().any(|(s, _)| s == START) {
            if event != EventKind::Enrolled {
                return Err(PolicyError::invalid(
                    line,
                    format!("{what}: only \"enrolled\" may start a chain (from \"{START}\"); the chain of identity begins with the CoI reference"),
                ));
            }
            if to.is_none() {
                return Err(PolicyError::invalid(
                    line,
                    format!("{what}: the first event must name its `to` state"),
                ));
            }
            if t.site != SiteRule::Any {
                return Err(PolicyError::invalid(
                    line,
                    format!("{what}: the first event has no custodian yet; use site = \"any\""),
                ));
            }
        }
        pending.push(Pending {
            row: Row {
                event,
                to,
                site: t.site,
                signatures,
                optional_signatures,
                exceptional_signatures,
                temp_range_c,
                max_hours_since_collection: t.max_hours_since_collection,
                destination_must_be_manufacturing_site: t.destination_must_be_manufacturing_site,
                requires_lymphodepletion: t.requires_lymphodepletion,
                line,
            },
            from_any,
            from,
        });
    }

    if !pending
        .iter()
        .any(|p| p.from.iter().any(|(s, _)| s == START))
    {
        return Err(PolicyError::Table(format!(
            "no transition from \"{START}\": add an \"enrolled\" transition with from = [\"{START}\"]"
        )));
    }

    let mut terminal = BTreeSet::new();
    for t in &raw.terminal {
        if !valid_state_name(t.get_ref()) || t.get_ref() == START {
            return Err(PolicyError::invalid(
                line_of(text, t.span().start),
                format!("terminal state {:?} is not a valid state name", t.get_ref()),
            ));
        }
        terminal.insert(t.get_ref().clone());
    }

    // Reachability to a fixed point: "*" rows apply to every non-terminal reached state.
    let mut reached: BTreeSet<String> = BTreeSet::from([START.to_string()]);
    loop {
        let mut added = false;
        for p in &pending {
            let applies = if p.from_any {
                reached.iter().any(|s| s != START && !terminal.contains(s))
            } else {
                p.from.iter().any(|(s, _)| reached.contains(s))
            };
            if applies {
                if let Some(to) = &p.row.to {
                    added |= reached.insert(to.clone());
                }
            }
        }
        if !added {
            break;
        }
    }

    let any_states: Vec<String> = reached
        .iter()
        .filter(|s| s.as_str() != START && !terminal.contains(*s))
        .cloned()
        .collect();
    let mut rows: Vec<Row> = Vec::with_capacity(pending.len());
    let mut index: BTreeMap<(EventKind, String), usize> = BTreeMap::new();
    for p in pending {
        let i = rows.len();
        let froms: Vec<(String, usize)> = if p.from_any {
            any_states.iter().map(|s| (s.clone(), p.row.line)).collect()
        } else {
            p.from
        };
        for (state, line) in froms {
            let what = format!("transition event = \"{}\"", p.row.event);
            if !reached.contains(&state) {
                return Err(PolicyError::invalid(
                    line,
                    format!("{what}: from-state \"{state}\" is never reached by any transition (misspelt?)"),
                ));
            }
            if terminal.contains(&state) {
                return Err(PolicyError::invalid(
                    line,
                    format!("{what}: from-state \"{state}\" is terminal; nothing may follow it"),
                ));
            }
            if let Some(&other) = index.get(&(p.row.event, state.clone())) {
                return Err(PolicyError::invalid(
                    line,
                    format!(
                        "{what} from state \"{state}\" is already defined at line {}; one transition per (event, state)",
                        if other == i { p.row.line } else { rows[other].line }
                    ),
                ));
            }
            index.insert((p.row.event, state), i);
        }
        rows.push(p.row);
    }

    for t in &raw.terminal {
        if !reached.contains(t.get_ref()) {
            return Err(PolicyError::invalid(
                line_of(text, t.span().start),
                format!(
                    "terminal state \"{}\" is never reached by any transition",
                    t.get_ref()
                ),
            ));
        }
    }

    reached.remove(START);
    Ok(Table {
        name: raw.name,
        description: raw.description,
        terminal,
        limits,
        required_qc,
        hold_allowed,
        rows,
        index,
        states: reached,
    })
}
