//! Loading policy tables: the default, and errors that name the line or field.

use crate::policy::{Policy, PolicyError, DEFAULT_TABLE_TOML};

fn line_containing(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("{needle:?} not in table"))
}

fn load_err(text: &str) -> PolicyError {
    match Policy::from_toml(text) {
        Ok(_) => panic!("table loaded but should not have"),
        Err(e) => e,
    }
}

#[test]
fn default_table_loads_with_every_lifecycle_state() {
    let p = Policy::default_autologous_car_t();
    assert_eq!(p.name(), "autologous-car-t");
    assert_eq!(
        p.states(),
        [
            "AtManufacturing",
            "AtSite",
            "BedsideChecked",
            "Collected",
            "Destroyed",
            "Dispensed",
            "Enrolled",
            "InTransitToManufacturing",
            "InTransitToSite",
            "Infused",
            "Manufacturing",
            "Packed",
            "PackedForSite",
            "QcTesting",
            "Rejected",
            "Released",
            "Stored",
        ]
    );
    assert_eq!(p.terminal_states(), ["Destroyed", "Infused"]);
}

#[test]
fn rejects_toml_syntax_error_with_line() {
    let e = load_err("name = \"x\"\nterminal = [\n");
    assert!(matches!(e, PolicyError::Parse(_)));
    assert!(e.to_string().contains("line 2"), "{e}");
}

#[test]
fn rejects_unknown_field_naming_it() {
    let text =
        DEFAULT_TABLE_TOML.replace("to = \"Packed\"\n", "to = \"Packed\"\ncolour = \"red\"\n");
    let e = load_err(&text).to_string();
    assert!(e.contains("colour"), "{e}");
    assert!(
        e.contains(&format!("line {}", line_containing(&text, "colour"))),
        "{e}"
    );
}

#[test]
fn rejects_unknown_event_and_meaning_names() {
    let text = DEFAULT_TABLE_TOML.replace("event = \"packed\"", "event = \"boxed\"");
    let e = load_err(&text).to_string();
    assert!(e.contains("unknown variant `boxed`"), "{e}");
    let text = DEFAULT_TABLE_TOML.replacen("meaning = \"PERFORMED\"", "meaning = \"DID_IT\"", 1);
    let e = load_err(&text).to_string();
    assert!(e.contains("DID_IT"), "{e}");
}

#[test]
fn rejects_misspelt_state_naming_its_line() {
    let text = DEFAULT_TABLE_TOML.replace("from = [\"Collected\"]", "from = [\"Colected\"]");
    let e = load_err(&text);
    let line = line_containing(&text, "Colected");
    assert_eq!(
        e,
        PolicyError::Invalid {
            line,
            message: "transition event = \"packed\": from-state \"Colected\" is never reached by any transition (misspelt?)".into()
        }
    );
    assert!(e
        .to_string()
        .starts_with(&format!("policy table line {line}: ")));
}

#[test]
fn rejects_two_transitions_for_the_same_event_and_state() {
    let text = format!(
        "{DEFAULT_TABLE_TOML}\n[[transition]]\nevent = \"stored\"\nfrom = [\"Stored\"]\nto = \"Stored\"\nsignatures = [{{ role = \"nurse\", meaning = \"PERFORMED\" }}]\n"
    );
    let e = load_err(&text).to_string();
    let first = line_containing(&text, "event = \"stored\"");
    assert!(
        e.contains(&format!("already defined at line {first}")),
        "{e}"
    );
}

#[test]
fn rejects_transition_without_performed_signature() {
    let text = DEFAULT_TABLE_TOML.replace(
        "signatures = [{ role = \"pharmacist\", meaning = \"PERFORMED\" }]\n\n[[transition]]\nevent = \"bedside_check\"",
        "signatures = [{ role = \"pharmacist\", meaning = \"VERIFIED\" }]\n\n[[transition]]\nevent = \"bedside_check\"",
    );
    assert_ne!(text, DEFAULT_TABLE_TOML);
    let e = load_err(&text).to_string();
    assert!(
        e.contains("event = \"dispensed\" signatures has no PERFORMED signature"),
        "{e}"
    );
}

#[test]
fn rejects_hold_section_without_hold_released() {
    let text = DEFAULT_TABLE_TOML.replace(
        "allowed_events = [\"hold_released\", \"deviation\", \"destroyed\", \"rejected\", \"lymphodepletion_started\", \"lymphodepletion_completed\", \"identity_check_failed\"]",
        "allowed_events = [\"deviation\"]",
    );
    let e = load_err(&text).to_string();
    assert!(e.contains("must include \"hold_released\""), "{e}");
}

#[test]
fn rejects_transition_out_of_a_terminal_state() {
    let text = DEFAULT_TABLE_TOML.replace(
        "from = [\"BedsideChecked\"]",
        "from = [\"BedsideChecked\", \"Infused\"]",
    );
    let e = load_err(&text).to_string();
    assert!(e.contains("from-state \"Infused\" is terminal"), "{e}");
}

#[test]
fn rejects_chain_starting_with_something_other_than_enrolment() {
    let text = DEFAULT_TABLE_TOML.replace(
        "from = [\"Enrolled\", \"Collected\"]",
        "from = [\"Start\", \"Collected\"]",
    );
    let e = load_err(&text).to_string();
    assert!(e.contains("only \"enrolled\" may start a chain"), "{e}");
}

#[test]
fn rejects_zero_limit() {
    let text = DEFAULT_TABLE_TOML.replace(
        "thaw_to_infusion_max_minutes = 120",
        "thaw_to_infusion_max_minutes = 0",
    );
    let e = load_err(&text).to_string();
    assert_eq!(
        e,
        "policy table: [limits] thaw_to_infusion_max_minutes = 0: expected 1..=100000"
    );
}

#[test]
fn rejects_temperature_limits_on_an_event_without_temperatures() {
    let text = DEFAULT_TABLE_TOML.replace(
        "to = \"Dispensed\"\n",
        "to = \"Dispensed\"\ntemp_min_c = 1.0\ntemp_max_c = 2.0\n",
    );
    let e = load_err(&text).to_string();
    assert!(
        e.contains("temp_min_c/temp_max_c only apply to \"received\" and \"stored\""),
        "{e}"
    );
}

#[test]
fn minimal_other_product_table_loads() {
    let text = r#"
name = "fresh-product"
terminal = ["Administered"]
[limits]
ambient_exposure_max_minutes = 30
manufacturing_window_days = 14
thaw_to_infusion_max_minutes = 60
clock_skew_tolerance_seconds = 0
[qc]
required_tests = []
[hold]
allowed_events = ["hold_released"]
[[transition]]
event = "enrolled"
from = ["Start"]
to = "Enrolled"
site = "any"
signatures = [{ role = "nurse", meaning = "PERFORMED" }]
[[transition]]
event = "infused"
from = ["Enrolled"]
to = "Administered"
signatures = [{ role = "nurse", meaning = "PERFORMED" }]
[[transition]]
event = "hold_released"
from = ["*"]
site = "any"
signatures = [{ role = "qa", meaning = "PERFORMED", site = "any" }]
"#;
    let p = Policy::from_toml(text).expect("loads");
    assert_eq!(p.states(), ["Administered", "Enrolled"]);
}
