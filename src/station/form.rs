//! What the station knows about one event before it is signed: the scanned codes, the chain
//! they name, the fields they fill, the questions still open and whether a comment is required.
//! Pure: values in, values out; the terminal and the network live in `station::mod`.
//!
//! Rules (documented for users in the README, "Scanning station"):
//! - **Chain id**: `--chain` if given; otherwise the first bag DIN scanned (its canonical
//!   13 characters). A bag's chain is named after the DIN of the bag that starts it.
//! - **Product bag** (dispensed, bedside check, infusion, manufacturing output): the last DIN
//!   scanned; with one DIN it is both the chain and the bag.
//! - A wristband CoI fills `coi_ref` (enrolment) or `wristband_coi_ref` (bedside check); a
//!   product code fills `product_code`; a GS1 GRAI is the shipper; a GS1 GIAI is the storage
//!   location for `stored` and the temperature logger otherwise.

use crate::codes::{Ai, Scan};
use std::collections::BTreeMap;

/// One recognised scan, reduced to what the station uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Code {
    Bag(String),
    Product(String),
    Wristband(String),
    Shipper(String),
    Asset(String),
    /// Recognised but of no use to an event here (e.g. a GTIN); shown, not used.
    Other(String),
}

impl Code {
    /// What a recognised scan is, or `Err(message)` for a bad or unknown line.
    pub fn from_scan(scan: Scan) -> Result<Code, String> {
        match scan {
            Scan::Din(din, _) => Ok(Code::Bag(din.to_string())),
            Scan::Product(p) => Ok(Code::Product(p.to_string())),
            Scan::Coi(c) => Ok(Code::Wristband(c.to_string())),
            Scan::Gs1(g) => match g.primary_key() {
                Some(Ai::Grai) => Ok(Code::Shipper(g.get(Ai::Grai).unwrap_or_default().into())),
                Some(Ai::Giai) => Ok(Code::Asset(g.get(Ai::Giai).unwrap_or_default().into())),
                _ => Ok(Code::Other(g.to_bracketed())),
            },
            Scan::Malformed(e) => Err(format!("BAD CODE: {e}")),
            Scan::Unknown(s) => Err(format!("NOT A CODE THIS STATION KNOWS: {s:?}")),
        }
    }

    /// One line for the operator, e.g. `BAG (DIN)  G123417654321`.
    pub fn describe(&self) -> String {
        match self {
            Code::Bag(s) => format!("BAG (DIN)         {s}"),
            Code::Product(s) => format!("PRODUCT CODE      {s}"),
            Code::Wristband(s) => format!("CHAIN OF IDENTITY {s}"),
            Code::Shipper(s) => format!("SHIPPER (GRAI)    {s}"),
            Code::Asset(s) => format!("LOGGER/LOCATION   {s}"),
            Code::Other(s) => format!("OTHER GS1 CODE    {s} (not used by events here)"),
        }
    }
}

/// The kind of code a prompt asks to be scanned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// An ISBT 128 DIN: a bag.
    Din,
    /// A chain-of-identity code: a wristband.
    Coi,
    /// A GS1 GRAI: a shipper.
    Grai,
    /// A GS1 GIAI: a temperature logger or a storage location.
    Giai,
}

impl Expected {
    /// What the operator is asked for, e.g. `a bag (DIN)`.
    pub fn describe(self) -> &'static str {
        match self {
            Expected::Din => "a bag (ISBT 128 DIN)",
            Expected::Coi => "a wristband (chain of identity)",
            Expected::Grai => "a shipper (GS1 GRAI)",
            Expected::Giai => "a logger or location (GS1 GIAI)",
        }
    }
}

/// The code type a field's prompt asks to be scanned (`None`: free text).
pub fn expected_code(field: &str) -> Option<Expected> {
    Some(match field {
        "din" | "product_bag_id" => Expected::Din,
        "coi_ref" | "wristband_coi_ref" => Expected::Coi,
        "shipper_id" => Expected::Grai,
        "logger_id" | "location" => Expected::Giai,
        _ => return None,
    })
}

/// The value of a scan given at a prompt that asked for `want`, or what to tell the operator:
/// a shipper's GRAI is never taken for a logger, `YES` never for a shipper.
pub fn accept_scan(want: Expected, scan: Result<Code, String>) -> Result<String, String> {
    let got = match scan {
        Ok(c) => c,
        Err(e) => return Err(format!("{e}; expected {}", want.describe())),
    };
    match (want, &got) {
        (Expected::Din, Code::Bag(v))
        | (Expected::Coi, Code::Wristband(v))
        | (Expected::Grai, Code::Shipper(v))
        | (Expected::Giai, Code::Asset(v)) => Ok(v.clone()),
        _ => Err(format!(
            "WRONG CODE TYPE: that is {}, expected {}; scan again",
            got.describe()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
            want.describe()
        )),
    }
}

/// How an open question is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Text,
    Number,
    YesNo,
    /// Asked in minutes, stored in seconds.
    Minutes,
    /// "Minutes ago" (Enter = now), stored as an RFC 3339 time.
    MinutesAgo,
}

/// A field the station asks for when neither a scan nor `--set` gave it.
#[derive(Debug, Clone, Copy)]
pub struct Question {
    pub field: &'static str,
    pub prompt: &'static str,
    pub answer: Answer,
    /// May be left empty (Enter).
    pub optional: bool,
}

const fn q(field: &'static str, prompt: &'static str, answer: Answer, optional: bool) -> Question {
    Question {
        field,
        prompt,
        answer,
        optional,
    }
}

/// The questions for `kind`, in the order they are asked.
pub fn questions(kind: &str) -> Vec<Question> {
    use Answer::*;
    match kind {
        "enrolled" => vec![
            q("coi_ref", "Scan the patient's wristband (CoI)", Text, false),
            q("manufacturing_site", "Manufacturing site code", Text, false),
            q("therapy", "Therapy (Enter to skip)", Text, true),
        ],
        "collected" => vec![
            q("din", "Scan the bag (DIN)", Text, false),
            q("volume_ml", "Volume in mL", Number, false),
            q(
                "collection_end",
                "Collection ended how many minutes ago? (Enter = now)",
                MinutesAgo,
                true,
            ),
        ],
        "packed" => vec![
            q("shipper_id", "Scan the shipper (GRAI)", Text, false),
            q(
                "logger_id",
                "Scan the temperature logger (GIAI)",
                Text,
                true,
            ),
            q("seal_id", "Seal number (Enter to skip)", Text, true),
        ],
        "shipped" => vec![
            q("to_site", "Destination site code", Text, false),
            q(
                "condition",
                "Condition (e.g. 2-8C, LN2 dry shipper)",
                Text,
                true,
            ),
        ],
        "received" => vec![
            q("from_site", "Sent from site code", Text, false),
            q("seal_intact", "Seal intact? (yes/no)", YesNo, false),
            q("temp_min_c", "Lowest logger temperature, °C", Number, false),
            q(
                "temp_max_c",
                "Highest logger temperature, °C",
                Number,
                false,
            ),
            q(
                "elapsed_seconds",
                "Minutes out of controlled storage",
                Minutes,
                false,
            ),
        ],
        "stored" => vec![
            q("location", "Scan the storage location (GIAI)", Text, false),
            q("temp_c", "Storage temperature, °C", Number, false),
        ],
        "dispensed" => vec![
            q("product_bag_id", "Scan the product bag (DIN)", Text, false),
            q(
                "thawed_at",
                "Thawed how many minutes ago? (Enter = now)",
                MinutesAgo,
                true,
            ),
        ],
        "bedside_check" => vec![
            q(
                "wristband_coi_ref",
                "Scan the patient's wristband (CoI)",
                Text,
                false,
            ),
            q("product_bag_id", "Scan the product bag (DIN)", Text, false),
        ],
        "infused" => vec![
            q("product_bag_id", "Scan the product bag (DIN)", Text, false),
            q(
                "started_at",
                "Infusion started how many minutes ago?",
                MinutesAgo,
                false,
            ),
            q(
                "ended_at",
                "Infusion ended how many minutes ago? (Enter = now)",
                MinutesAgo,
                true,
            ),
        ],
        "manufacturing_step" => vec![q("step", "Step name", Text, false)],
        "qc_result" => vec![
            q("test", "QC test", Text, false),
            q("result", "Result", Text, false),
            q("passed", "Passed? (yes/no)", YesNo, false),
        ],
        "rejected" | "hold" | "hold_released" | "destroyed" => {
            vec![q("reason", "Reason", Text, false)]
        }
        "deviation" => vec![
            q("deviation_id", "Deviation number", Text, false),
            q("description", "What happened", Text, false),
        ],
        "custody_handoff" => vec![q("to_site", "Receiving site code", Text, false)],
        "lymphodepletion_started" => vec![
            q(
                "regimen",
                "Regimen (e.g. fludarabine/cyclophosphamide)",
                Text,
                false,
            ),
            q(
                "started_at",
                "First dose started how many minutes ago? (Enter = now)",
                MinutesAgo,
                true,
            ),
        ],
        "lymphodepletion_completed" => vec![q(
            "completed_at",
            "Last dose ended how many minutes ago? (Enter = now)",
            MinutesAgo,
            true,
        )],
        _ => vec![],
    }
}

/// Kinds where the policy wants a second person, and the meaning that person signs.
pub fn second_signature(kind: &str, fields: &BTreeMap<String, String>) -> Option<&'static str> {
    match kind {
        "bedside_check" => Some("verified"),
        "shipped" | "custody_handoff" => Some("received"),
        "destroyed" => Some("approved"),
        "released" if is_yes(fields.get("exceptional")) => Some("approved"),
        _ => None,
    }
}

fn is_yes(v: Option<&String>) -> bool {
    matches!(
        v.map(|s| s.trim().to_ascii_lowercase()).as_deref(),
        Some("yes" | "y" | "true" | "1")
    )
}

fn is_no(v: Option<&String>) -> bool {
    matches!(
        v.map(|s| s.trim().to_ascii_lowercase()).as_deref(),
        Some("no" | "n" | "false" | "0")
    )
}

/// Why a comment is required for this event, if it is: a "No" answer or a deviation.
pub fn comment_required(kind: &str, fields: &BTreeMap<String, String>) -> Option<String> {
    for f in ["seal_intact", "passed"] {
        if is_no(fields.get(f)) {
            return Some(format!("{f} is No"));
        }
    }
    if is_yes(fields.get("exceptional")) {
        return Some("exceptional release".into());
    }
    match kind {
        "deviation" | "hold" | "destroyed" | "rejected" => Some(format!("{kind} is a deviation")),
        _ => None,
    }
}

/// The chain id (`--chain`, else the first DIN) and the fields the scans fill for `kind`.
/// Returns warnings for scans the event does not use.
pub fn apply_scans(
    kind: &str,
    explicit_chain: Option<&str>,
    codes: &[Code],
    fields: &mut BTreeMap<String, String>,
) -> (Option<String>, Vec<String>) {
    let bags: Vec<&String> = codes
        .iter()
        .filter_map(|c| match c {
            Code::Bag(b) => Some(b),
            _ => None,
        })
        .collect();
    let chain = explicit_chain
        .map(String::from)
        .or_else(|| bags.first().map(|b| b.to_string()));
    let mut warnings = Vec::new();
    let put = |fields: &mut BTreeMap<String, String>, k: &str, v: &str| {
        fields.entry(k.to_string()).or_insert_with(|| v.to_string());
    };
    if let Some(last) = bags.last() {
        match kind {
            "collected" => put(fields, "din", last),
            "dispensed" | "bedside_check" | "infused" => put(fields, "product_bag_id", last),
            "manufacturing_step" => {
                let outputs: Vec<&str> = bags
                    .iter()
                    .filter(|b| Some(b.as_str()) != chain.as_deref())
                    .map(|b| b.as_str())
                    .collect();
                if !outputs.is_empty() {
                    put(fields, "product_bag_ids", &outputs.join(","));
                }
            }
            _ => {}
        }
    }
    for c in codes {
        let used = match (c, kind) {
            (Code::Bag(_), _) => true,
            (Code::Product(p), "collected") => {
                put(fields, "product_code", p);
                true
            }
            (Code::Wristband(w), "enrolled") => {
                put(fields, "coi_ref", w);
                true
            }
            (Code::Wristband(w), "bedside_check") => {
                put(fields, "wristband_coi_ref", w);
                true
            }
            (Code::Shipper(s), "packed" | "shipped" | "received") => {
                put(fields, "shipper_id", s);
                true
            }
            (Code::Asset(a), "stored") => {
                put(fields, "location", a);
                true
            }
            (Code::Asset(a), "packed" | "shipped") => {
                put(fields, "logger_id", a);
                true
            }
            _ => false,
        };
        if !used {
            warnings.push(format!("not used for {kind}: {}", c.describe()));
        }
    }
    (chain, warnings)
}

/// Turns an answer typed at a prompt into a field value, or says what is wrong with it.
pub fn parse_answer(answer: Answer, typed: &str, now_nanos: i64) -> Result<String, String> {
    let t = typed.trim();
    match answer {
        Answer::Text => Ok(t.to_string()),
        Answer::Number => t
            .replace(',', ".")
            .parse::<f64>()
            .map(|_| t.replace(',', "."))
            .map_err(|_| format!("{t:?} is not a number")),
        Answer::YesNo => match t.to_ascii_lowercase().as_str() {
            "y" | "yes" => Ok("yes".into()),
            "n" | "no" => Ok("no".into()),
            _ => Err("answer yes or no".into()),
        },
        Answer::Minutes => t
            .parse::<u64>()
            .map(|m| (m * 60).to_string())
            .map_err(|_| format!("{t:?} is not a whole number of minutes")),
        Answer::MinutesAgo => {
            let m = if t.is_empty() {
                0
            } else {
                t.parse::<i64>()
                    .map_err(|_| format!("{t:?} is not a whole number of minutes"))?
            };
            let at = now_nanos - m * 60 * 1_000_000_000;
            Ok(crate::time::rfc3339(at - at % 1_000_000_000))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codes::classify;

    fn codes(lines: &[&str]) -> Vec<Code> {
        lines
            .iter()
            .map(|l| Code::from_scan(classify(l)).unwrap())
            .collect()
    }

    #[test]
    fn every_question_fills_a_field_of_the_event_field_table() {
        for k in crate::event_fields::KINDS {
            let names: Vec<String> = crate::event_fields::fields(k)
                .into_iter()
                .map(|f| f.name)
                .collect();
            for q in questions(k.name) {
                assert!(
                    names.iter().any(|n| n == q.field),
                    "the station asks {} for `{}`, which is not a --set field of it ({names:?})",
                    k.name,
                    q.field
                );
            }
        }
    }

    const DIN1: &str = "=G12341765432100"; // G123417654321
    const DIN2: &str = "=G12341765432200"; // G123417654322

    #[test]
    fn first_din_names_the_chain_and_last_din_is_the_product_bag() {
        let mut f = BTreeMap::new();
        let (chain, w) = apply_scans("dispensed", None, &codes(&[DIN1, DIN2]), &mut f);
        assert_eq!(chain.as_deref(), Some("G123417654321"));
        assert_eq!(f["product_bag_id"], "G123417654322");
        assert!(w.is_empty(), "{w:?}");
    }

    #[test]
    fn explicit_chain_wins_over_the_scanned_din() {
        let mut f = BTreeMap::new();
        let (chain, _) = apply_scans("collected", Some("CHAIN-9"), &codes(&[DIN1]), &mut f);
        assert_eq!(chain.as_deref(), Some("CHAIN-9"));
        assert_eq!(f["din"], "G123417654321");
    }

    #[test]
    fn set_fields_are_not_overwritten_by_scans_and_unused_scans_warn() {
        let mut f = BTreeMap::from([("din".to_string(), "X".to_string())]);
        let wrist = CoiFixture::barcode();
        let (_, w) = apply_scans("collected", None, &codes(&[DIN1, &wrist]), &mut f);
        assert_eq!(f["din"], "X");
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("CHAIN OF IDENTITY"), "{w:?}");
    }

    struct CoiFixture;
    impl CoiFixture {
        fn barcode() -> String {
            crate::codes::CoiId::new("G1234", 23, "AB12CD")
                .unwrap()
                .to_barcode()
        }
    }

    #[test]
    fn no_answers_and_deviations_require_a_comment() {
        let no = BTreeMap::from([("seal_intact".to_string(), "no".to_string())]);
        assert!(comment_required("received", &no).is_some());
        let yes = BTreeMap::from([("seal_intact".to_string(), "yes".to_string())]);
        assert!(comment_required("received", &yes).is_none());
        assert!(comment_required("deviation", &BTreeMap::new()).is_some());
        assert!(comment_required("stored", &BTreeMap::new()).is_none());
    }

    #[test]
    fn each_prompted_scan_must_be_the_code_type_asked_for() {
        let scan = |l: &str| Code::from_scan(classify(l));
        let grai = "(8003)09506000134352SHIP1";
        let giai = "(8004)0950600013435LOGGER7";
        assert_eq!(
            accept_scan(Expected::Grai, scan(grai)).unwrap(),
            "09506000134352SHIP1"
        );
        assert_eq!(
            accept_scan(Expected::Giai, scan(giai)).unwrap(),
            "0950600013435LOGGER7"
        );
        assert_eq!(
            accept_scan(Expected::Din, scan(DIN1)).unwrap(),
            "G123417654321"
        );
        let wrist = CoiFixture::barcode();
        assert!(accept_scan(Expected::Coi, scan(&wrist)).is_ok());
        for (want, line) in [
            (Expected::Grai, "YES"),
            (Expected::Giai, "hello world"),
            (Expected::Giai, grai),
            (Expected::Grai, giai),
            (Expected::Din, wrist.as_str()),
            (Expected::Coi, DIN1),
        ] {
            let e = accept_scan(want, scan(line)).unwrap_err();
            assert!(e.contains(want.describe()), "{line}: {e}");
        }
        assert_eq!(expected_code("shipper_id"), Some(Expected::Grai));
        assert_eq!(expected_code("logger_id"), Some(Expected::Giai));
        assert_eq!(expected_code("product_bag_id"), Some(Expected::Din));
        assert_eq!(expected_code("wristband_coi_ref"), Some(Expected::Coi));
        assert_eq!(expected_code("seal_id"), None);
    }

    #[test]
    fn answers_are_checked() {
        assert_eq!(parse_answer(Answer::Minutes, "12", 0).unwrap(), "720");
        assert!(parse_answer(Answer::Number, "warm", 0).is_err());
        assert_eq!(parse_answer(Answer::Number, "-3,5", 0).unwrap(), "-3.5");
        assert!(parse_answer(Answer::YesNo, "maybe", 0).is_err());
        assert_eq!(parse_answer(Answer::YesNo, "N", 0).unwrap(), "no");
    }
}
