//! Signature requirements: matching an event's verified signers to the table's required roles,
//! meanings and sites, one distinct key per requirement ([R6]). Every signer must fill a
//! required or optional slot; a signer the table does not ask for is refused.

use crate::pb::event_body::Detail;
use crate::pb::EventBody;

use super::table::{Requirement, SignerSite};
use super::{Fail, Signer, Violation};

fn to_site(detail: &Detail) -> &str {
    match detail {
        Detail::Shipped(s) => &s.to_site,
        Detail::CustodyHandoff(h) => &h.to_site,
        _ => "",
    }
}

fn site_required<'a>(
    req: &Requirement,
    body: &'a EventBody,
    detail: &'a Detail,
) -> Option<&'a str> {
    match req.site {
        SignerSite::Event => Some(&body.site),
        SignerSite::ToSite => Some(to_site(detail)),
        SignerSite::Any => None,
    }
}

fn role_and_meaning(req: &Requirement, s: &Signer) -> bool {
    req.meaning == s.meaning && req.accepts_role(&s.role)
}

fn fits(req: &Requirement, s: &Signer, body: &EventBody, detail: &Detail) -> bool {
    role_and_meaning(req, s) && site_required(req, body, detail).is_none_or(|site| site == s.site)
}

fn show(s: &Signer) -> String {
    format!(
        "{} ({} @ {}) {}",
        s.key_id,
        s.role,
        s.site,
        s.meaning.as_str_name()
    )
}

fn describe_all(reqs: &[Requirement]) -> String {
    let list: Vec<String> = reqs.iter().map(Requirement::describe).collect();
    if reqs.len() > 1 {
        format!("{}, each from a different key", list.join(" and "))
    } else {
        list.join("")
    }
}

/// Assign signers[i..] to unused slots; true when every required slot (the first `n_required`)
/// is filled.
fn assign(
    i: usize,
    signers: &[Signer],
    slots: &[&Requirement],
    n_required: usize,
    used: &mut [bool],
    body: &EventBody,
    detail: &Detail,
) -> bool {
    if i == signers.len() {
        return used[..n_required].iter().all(|&u| u);
    }
    for j in 0..slots.len() {
        if !used[j] && fits(slots[j], &signers[i], body, detail) {
            used[j] = true;
            if assign(i + 1, signers, slots, n_required, used, body, detail) {
                return true;
            }
            used[j] = false;
        }
    }
    false
}

fn wrong_site(
    req: &Requirement,
    s: &Signer,
    body: &EventBody,
    detail: &Detail,
    fail: &Fail<'_>,
) -> Violation {
    let want = site_required(req, body, detail).unwrap_or_default();
    fail.v(
        "signer_site",
        req.describe(),
        format!(
            "key {} (role {}) is registered at site {:?}, but this signature must come from site {want:?}",
            s.key_id, s.role, s.site
        ),
    )
}

/// Check that `signers` fill `required` (and at most `optional`) with distinct keys.
pub(super) fn check(
    required: &[Requirement],
    optional: &[Requirement],
    signers: &[Signer],
    body: &EventBody,
    detail: &Detail,
    fail: &Fail<'_>,
) -> Result<(), Violation> {
    let expected = describe_all(required);
    for (i, s) in signers.iter().enumerate() {
        let same: Vec<&Signer> = signers.iter().filter(|o| o.key_id == s.key_id).collect();
        if same.len() > 1 && signers[..i].iter().all(|o| o.key_id != s.key_id) {
            let meanings: Vec<&str> = same.iter().map(|o| o.meaning.as_str_name()).collect();
            return Err(fail.v(
                "distinct_signers",
                expected,
                format!(
                    "key {} signed {} times ({}); where two people must sign, one key cannot stand for both",
                    s.key_id,
                    same.len(),
                    meanings.join(", ")
                ),
            ));
        }
    }

    let slots: Vec<&Requirement> = required.iter().chain(optional).collect();
    if signers.len() <= slots.len() {
        let mut used = vec![false; slots.len()];
        if assign(0, signers, &slots, required.len(), &mut used, body, detail) {
            return Ok(());
        }
    }

    let got = if signers.is_empty() {
        "no signatures".to_string()
    } else {
        let list: Vec<String> = signers.iter().map(show).collect();
        format!("got {}", list.join(", "))
    };
    for req in required {
        if !signers.iter().any(|s| fits(req, s, body, detail)) {
            if let Some(s) = signers.iter().find(|s| role_and_meaning(req, s)) {
                return Err(wrong_site(req, s, body, detail, fail));
            }
            return Err(fail.v(
                "signatures",
                expected,
                format!("missing {}; {got}", req.describe()),
            ));
        }
    }
    for s in signers {
        if !slots.iter().any(|r| fits(r, s, body, detail)) {
            if let Some(req) = slots.iter().find(|r| role_and_meaning(r, s)) {
                return Err(wrong_site(req, s, body, detail, fail));
            }
            return Err(fail.v(
                "unexpected_signer",
                expected,
                format!(
                    "key {} (role {} @ {}) signed {}, which this event does not take",
                    s.key_id,
                    s.role,
                    s.site,
                    s.meaning.as_str_name()
                ),
            ));
        }
    }
    Err(fail.v(
        "signatures",
        expected,
        format!("the signatures cannot fill every requirement with a different key; {got}"),
    ))
}
