//! Identifier checks on the server (entry format 1 on), with the same `codes` parsers the
//! scanning station uses: an ISBT 128 DIN where a field holds a collection DIN (facility,
//! year, serial; the canonical 13 characters), an ISBT 128 cellular-therapy product code, and
//! GS1 GRAI / GIAI where a shipper or logger id is given as a GS1 element string. Pure. Fields
//! documented as free text (bag ids, batch ids, locations, site codes) are not checked here.

use std::str::FromStr;

use crate::codes::{Ai, Din, Gs1, ProductCode};
use crate::pb::event_body::Detail;
use crate::pb::EventBody;

use super::presence::cut;
use super::{Fail, Violation};

fn bad(fail: &Fail<'_>, field: &str, expected: &str, why: String) -> Violation {
    fail.v("code_format", format!("{field}: {expected}"), why)
}

/// A DIN as recorded in events: exactly the canonical 13 characters `αppppyynnnnnn`.
pub fn check_din(value: &str) -> Result<(), String> {
    match Din::from_str(value) {
        Ok(d) if d.to_string() == value => Ok(()),
        Ok(d) => Err(format!(
            "{:?} is not in the recorded form; record the 13 characters {d} (no flags, no check character, no spaces)",
            cut(value)
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// An ISBT 128 product code of a cellular therapy product: the 8 characters `Sooootds`.
pub fn check_product_code(value: &str) -> Result<(), String> {
    match ProductCode::from_str(value) {
        Ok(p) if p.to_string() != value => Err(format!(
            "{:?} is not in the recorded form; record the 8 characters {p}",
            cut(value)
        )),
        Ok(p) if !p.is_cellular_therapy() => Err(format!(
            "{value} is not a cellular therapy product code (those start with 'S')"
        )),
        Ok(_) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

/// A GS1 element string given in bracketed form (it starts with '(') must parse and carry
/// `ai`; any other value is a free-text id.
fn check_gs1(value: &str, ai: Ai) -> Result<(), String> {
    if !value.trim_start().starts_with('(') {
        return Ok(());
    }
    let g = Gs1::parse_bracketed(value).map_err(|e| e.to_string())?;
    if g.get(ai).is_none() {
        return Err(format!(
            "{:?} holds no ({}) {}",
            cut(value),
            ai.code(),
            ai.name()
        ));
    }
    Ok(())
}

/// Checks every site field (entry format 2 on): the event's site and the sites a detail names
/// are site codes or GLNs, 1-64 characters of `[A-Za-z0-9._:-]`.
pub(super) fn check_sites(
    body: &EventBody,
    detail: &Detail,
    fail: &Fail<'_>,
) -> Result<(), Violation> {
    const SITE: &str = "a site code or GLN of 1-64 characters [A-Za-z0-9._:-]";
    let mut fields: Vec<(&str, &str)> = vec![("site", body.site.as_str())];
    match detail {
        Detail::Enrolled(e) => fields.push(("manufacturing_site", &e.manufacturing_site)),
        Detail::Shipped(s) => {
            fields.extend([("from_site", s.from_site.as_str()), ("to_site", &s.to_site)])
        }
        Detail::Received(r) => fields.push(("from_site", &r.from_site)),
        Detail::CustodyHandoff(h) => {
            fields.extend([("from_site", h.from_site.as_str()), ("to_site", &h.to_site)])
        }
        _ => {}
    }
    for (field, value) in fields {
        // Optional site fields may be empty; presence decides which are required.
        if (field == "site" || !value.is_empty()) && !super::valid_site(value) {
            return Err(bad(
                fail,
                field,
                SITE,
                format!("{:?} is not one", cut(value)),
            ));
        }
    }
    Ok(())
}

/// Checks every code-bearing field of `detail`.
pub(super) fn check(detail: &Detail, fail: &Fail<'_>) -> Result<(), Violation> {
    const DIN: &str = "an ISBT 128 DIN of 13 characters: facility (5), year (2), serial (6)";
    const PRODUCT: &str = "an ISBT 128 cellular therapy product code (8 characters, 'S' first)";
    const GRAI: &str = "a free-text shipper id or a bracketed GS1 GRAI, (8003)...";
    const GIAI: &str = "a free-text logger id or a bracketed GS1 GIAI, (8004)...";
    let check_field = |field: &str, expected: &str, r: Result<(), String>| {
        r.map_err(|why| bad(fail, field, expected, why))
    };
    match detail {
        Detail::Collected(c) => {
            check_field("din", DIN, check_din(&c.din))?;
            if !c.product_code.is_empty() {
                check_field("product_code", PRODUCT, check_product_code(&c.product_code))?;
            }
        }
        Detail::Packed(p) => {
            check_field("shipper_id", GRAI, check_gs1(&p.shipper_id, Ai::Grai))?;
            check_field("logger_id", GIAI, check_gs1(&p.logger_id, Ai::Giai))?;
        }
        Detail::Shipped(s) => {
            check_field("shipper_id", GRAI, check_gs1(&s.shipper_id, Ai::Grai))?;
            check_field("logger_id", GIAI, check_gs1(&s.logger_id, Ai::Giai))?;
        }
        Detail::Received(r) => {
            check_field("shipper_id", GRAI, check_gs1(&r.shipper_id, Ai::Grai))?;
        }
        _ => {}
    }
    Ok(())
}
