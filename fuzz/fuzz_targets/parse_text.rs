//! Text from outside: signed notes and checkpoints, key strings, trust-anchor files, barcode
//! scans, policy TOML.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = celltrail::note::open_note_bytes(data, &[]);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = celltrail::note::Checkpoint::parse(text);
    let _ = celltrail::note::NoteVerifier::from_key_string(text);
    let _ = celltrail::note::NoteSigner::from_key_string(text);
    let _ = celltrail::keys::parse_trust_anchors(text, std::path::Path::new("fuzz"));
    for line in text.lines() {
        let _ = celltrail::codes::classify(line);
    }
    let _ = celltrail::policy::Policy::from_toml(text);
});
