//! ISO/IEC 7064 mod 37-2: the keyboard entry check character of ISBT 128 identifiers.

/// ISO/IEC 7064 value-to-character table (Table 35 of ST-001).
pub(super) const ISO7064_ALPHABET: &[u8; 37] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ*";

pub(super) fn iso7064_value(c: u8) -> Option<u32> {
    match c {
        b'0'..=b'9' => Some(u32::from(c - b'0')),
        b'A'..=b'Z' => Some(u32::from(c - b'A') + 10),
        b'*' => Some(36),
        _ => None,
    }
}

/// ISO/IEC 7064 mod 37-2 ("pure system, recursive method") check value 0..=36 of `data`, or
/// `None` if `data` holds a character outside `0-9 A-Z *`.
pub fn mod37_2_value(data: &str) -> Option<u8> {
    let mut sum = 0u32;
    for b in data.bytes() {
        sum = ((sum + iso7064_value(b)?) * 2) % 37;
    }
    u8::try_from((38 - sum) % 37).ok()
}

/// The ISO/IEC 7064 mod 37-2 check character of `data` (e.g. the ISBT 128 keyboard entry
/// check character K of a 13-character DIN), or `None` for characters outside `0-9 A-Z *`.
pub fn mod37_2_check_character(data: &str) -> Option<char> {
    mod37_2_value(data).map(|v| char::from(ISO7064_ALPHABET[usize::from(v)]))
}

/// Check value of bytes that were validated as ISO 7064 characters on construction.
pub(super) fn check_of(parts: &[&[u8]]) -> u8 {
    let mut sum = 0u32;
    for b in parts.iter().flat_map(|p| p.iter()) {
        debug_assert!(iso7064_value(*b).is_some(), "validated on construction");
        sum = ((sum + iso7064_value(*b).unwrap_or(0)) * 2) % 37;
    }
    // (38 - sum) % 37 is at most 36.
    ((38 - sum) % 37) as u8
}

pub(super) fn check_char_of(value: u8) -> char {
    char::from(ISO7064_ALPHABET[usize::from(value % 37)])
}
