//! Bytes as an audit bundle file, through exactly what `celltrail verify BUNDLE` does with it:
//! `Bundle::from_json_bytes`, then `verify_bundle` with the default options (the bundle's own
//! anchors, the built-in autologous CAR-T policy, no previous checkpoint).
#![no_main]

use celltrail::bundle::verify::{verify_bundle, Options};
use celltrail::bundle::Bundle;
use celltrail::policy::Policy;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fuzz_target!(|data: &[u8]| {
    let Ok(bundle) = Bundle::from_json_bytes(data) else {
        return;
    };
    let report = verify_bundle(&bundle, options());
    // The report is what the auditor sees: rendering it must not panic either.
    let _ = celltrail::bundle::report::json(&report);
    let _ = celltrail::bundle::report::text(&report, "fuzz");
});

/// The CLI's defaults, built once (parsing the policy table per input would dominate).
fn options() -> &'static Options {
    static O: OnceLock<Options> = OnceLock::new();
    O.get_or_init(|| Options {
        log_key: None,
        admins: None,
        policy: Policy::default_autologous_car_t(),
        previous: None,
    })
}
