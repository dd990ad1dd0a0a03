//! Identifiers on bags, wristbands, shippers and loggers: ISBT 128 (Donation Identification
//! Number with its mod 37-2 check character, Product Code, Chain of Identity identifier) and
//! GS1 element strings (SSCC, GTIN, batch, expiry, serial, GRAI, GIAI, GSRN, protocol ID).
//! Pure parsing and formatting over strings: no I/O, no product description tables (ICCBBA
//! licenses those; we implement the structures and algorithms). Every error names the input,
//! the 1-based character position and what was expected. [`classify`] tells a scanning
//! station what a scanned or keyed line is.
//!
//! # How [`classify`] recognises a line
//!
//! The line is trimmed of surrounding ASCII whitespace (a keyboard-wedge scanner ends it with
//! CR and/or LF); an empty line is [`Scan::Unknown`]. Positions in errors count characters of
//! the line as given, symbology identifier included. Then, in order:
//!
//! 1. **AIM symbology identifier** (`]` + 2 characters). `]C1`, `]d2`, `]Q3` or `]e0` announce
//!    GS1 data: the line is parsed as a raw GS1 element string. Any other identifier (`]C0`
//!    Code 128, `]d1` Data Matrix, …) is skipped and the rules below apply to the rest.
//! 2. **`(`** starts a bracketed GS1 element string; **GS** (FNC1) starts a raw one.
//! 3. **ISBT 128 data identifiers**: `=<` → Product Code (003); `&/` → CoI identifier (040);
//!    `=` followed by `A-N`, `P-Z` or `1-9` → DIN bar code `=αppppyynnnnnnff` (001). Any other
//!    `=`/`&` data identifier is an ISBT 128 structure this station does not use: `Unknown`.
//! 4. **Keyed DIN**: the first 13 non-space characters have the DIN shape (`α`, 4 FIN
//!    characters, 8 digits), and the line is 13-14 characters without spaces or is spaced
//!    eye-readable text (`G1234 17 654321 A`, optional flags, check optionally as `[A]`).
//!    A keyed DIN **must** carry its check character (ST-001 §7.5: K exists to verify manual
//!    entry); without it, or with a wrong one, the line is [`Scan::Malformed`]. A 15-character
//!    DIN-shaped line is a bar code that lost its `=`: `Malformed` saying so.
//! 5. **Keyed CoI**: starts with `CH`, 15-16 characters without spaces or spaced text;
//!    the check character is required as for the DIN. A spaced line starting with `CH` may
//!    fit both shapes: whichever parses (check character included) wins; both → `Malformed`
//!    (ambiguous); neither → the CoI error.
//! 6. **Raw GS1 without symbology identifier**: starts with a supported AI (00, 01, 10, 17,
//!    21, 7003, 7240, 8003, 8004, 8018). Parsed as raw GS1. Because rule 4 comes first, a
//!    keyed DIN wins over an unprefixed GS1 string of the same shape: configure GS1 scanners
//!    to transmit symbology identifiers.
//! 7. Anything else is [`Scan::Unknown`].
//!
//! A line that a rule claimed but that fails to parse is [`Scan::Malformed`] with the parse
//! error, so the station can say *why* ("check character is 'B', expected 'A' (position
//! 14)") instead of "unknown code". What a GS1 line identifies is [`Gs1::primary_key`]: a
//! shipper's GRAI (8003), a data logger's or storage position's GIAI (8004; which of the two
//! is the site's asset register's call, not the syntax's), a recipient's GSRN (8018), a
//! logistic unit's SSCC (00) or a trade item's GTIN (01). Bare 8-character product codes and
//! concatenated ISBT 128 bar codes are not recognised.

mod gs1;
mod isbt128;

pub use gs1::{
    check_digit as gs1_check_digit, has_valid_check_digit as gs1_has_valid_check_digit, Ai, Grai,
    Gs1, Gs1Date, Gs1DateTime, GS, SYMBOLOGY_IDENTIFIERS,
};
pub use isbt128::{
    mod37_2_check_character, mod37_2_value, CoiId, Din, FlagKind, Flags, ProductCategory,
    ProductCode,
};

/// Why a code was rejected. Each message names the kind of code, the input as given (control
/// characters shown as Unicode control pictures, e.g. GS as `␝`), what was expected and the
/// 1-based character position in the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodeError {
    /// Nothing but whitespace.
    #[error("{kind}: empty input, expected {expected}")]
    Empty {
        kind: &'static str,
        expected: &'static str,
    },
    /// Wrong number of characters; `position` is the first missing or first extra one.
    #[error("{kind} {input}: {found} characters, expected {expected} (position {position})")]
    Length {
        kind: &'static str,
        input: String,
        found: usize,
        expected: &'static str,
        position: usize,
    },
    /// A character not allowed where it stands.
    #[error("{kind} {input}: {found:?} in the {field}, expected {expected} (position {position})")]
    Character {
        kind: &'static str,
        input: String,
        field: &'static str,
        found: char,
        expected: &'static str,
        position: usize,
    },
    /// The data identifier that starts the bar code data is missing or wrong.
    #[error(
        "{kind} {input}: missing the '{identifier}' data identifier, expected {expected} (position {position})"
    )]
    MissingDataIdentifier {
        kind: &'static str,
        input: String,
        identifier: &'static str,
        expected: &'static str,
        position: usize,
    },
    /// The keyed ISO/IEC 7064 mod 37-2 check character does not match the data.
    #[error(
        "{kind} {input}: check character is {found:?}, expected {expected:?} (position {position})"
    )]
    CheckCharacter {
        kind: &'static str,
        input: String,
        found: char,
        expected: char,
        position: usize,
    },
    /// Keyed entry without the check character where one is required (scanning stations).
    #[error(
        "{kind} {input}: keyed entry without its check character, expected the check character printed after it (position {position})"
    )]
    MissingCheckCharacter {
        kind: &'static str,
        input: String,
        position: usize,
    },
    /// Type 3 flag characters (60-96) that do not carry the DIN's check value.
    #[error(
        "{kind} {input}: flag characters {found} disagree with check character {check:?}, expected {expected} (position {position})"
    )]
    FlagCheck {
        kind: &'static str,
        input: String,
        found: String,
        expected: String,
        check: char,
        position: usize,
    },
    /// A numeric part given to a constructor is out of range.
    #[error("{kind} {input}: {field} out of range, expected {expected}")]
    OutOfRange {
        kind: &'static str,
        input: String,
        field: &'static str,
        expected: &'static str,
    },
    /// A GS1 mod-10 check digit does not match.
    #[error(
        "{kind} {input}: check digit of the {field} is {found:?}, expected {expected:?} (position {position})"
    )]
    CheckDigit {
        kind: &'static str,
        input: String,
        field: &'static str,
        found: char,
        expected: char,
        position: usize,
    },
    /// An application identifier that is not supported (or not an AI at all).
    #[error(
        "{kind} {input}: unknown application identifier {found:?}, expected one of {expected} (position {position})"
    )]
    UnknownAi {
        kind: &'static str,
        input: String,
        found: String,
        expected: &'static str,
        position: usize,
    },
    /// A GS1 value of the wrong length or an impossible date.
    #[error("{kind} {input}: AI ({ai}) {problem}, expected {expected} (position {position})")]
    Value {
        kind: &'static str,
        input: String,
        ai: &'static str,
        problem: String,
        expected: String,
        position: usize,
    },
    /// The same AI twice in one element string.
    #[error("{kind} {input}: AI ({ai}) appears twice, expected each AI at most once (position {position})")]
    DuplicateAi {
        kind: &'static str,
        input: String,
        ai: &'static str,
        position: usize,
    },
    /// An AIM symbology identifier that does not announce GS1 data.
    #[error(
        "{kind} {input}: symbology identifier {found:?} is not a GS1 one, expected ]C1, ]d2, ]Q3 or ]e0 (position {position})"
    )]
    Symbology {
        kind: &'static str,
        input: String,
        found: String,
        position: usize,
    },
    /// Something required is absent at `position`.
    #[error("{kind} {input}: expected {expected} (position {position})")]
    Missing {
        kind: &'static str,
        input: String,
        expected: &'static str,
        position: usize,
    },
}

impl CodeError {
    /// The 1-based character position the error points at, if it has one.
    pub fn position(&self) -> Option<usize> {
        match self {
            CodeError::Empty { .. } | CodeError::OutOfRange { .. } => None,
            CodeError::Length { position, .. }
            | CodeError::Character { position, .. }
            | CodeError::MissingDataIdentifier { position, .. }
            | CodeError::CheckCharacter { position, .. }
            | CodeError::MissingCheckCharacter { position, .. }
            | CodeError::FlagCheck { position, .. }
            | CodeError::CheckDigit { position, .. }
            | CodeError::UnknownAi { position, .. }
            | CodeError::Value { position, .. }
            | CodeError::DuplicateAi { position, .. }
            | CodeError::Symbology { position, .. }
            | CodeError::Missing { position, .. } => Some(*position),
        }
    }
}

/// Input being parsed, as characters so positions are 1-based character positions.
struct Text {
    chars: Vec<char>,
}

/// Longest input echoed back in an error message.
const SHOWN_MAX: usize = 80;

impl Text {
    fn new(s: &str) -> Text {
        Text {
            chars: s.chars().collect(),
        }
    }

    /// `[start, end)` without surrounding ASCII whitespace (CR, LF, space, tab).
    fn trimmed(&self) -> (usize, usize) {
        let end = self
            .chars
            .iter()
            .rposition(|c| !c.is_ascii_whitespace())
            .map_or(0, |i| i + 1);
        let start = self.chars[..end]
            .iter()
            .position(|c| !c.is_ascii_whitespace())
            .unwrap_or(end);
        (start, end)
    }

    /// The characters of `[start, end)` with their indices.
    fn indexed(&self, start: usize, end: usize) -> Vec<(usize, char)> {
        (start..end).map(|i| (i, self.chars[i])).collect()
    }

    /// The input for an error message: trailing whitespace dropped, control characters as
    /// control pictures (one character each, so positions still line up), long input cut.
    fn shown(&self) -> String {
        let (_, end) = self.trimmed();
        let mut out: String = self.chars[..end]
            .iter()
            .take(SHOWN_MAX)
            .map(|&c| match c {
                '\u{0}'..='\u{1f}' => char::from_u32(0x2400 + c as u32).unwrap_or('?'),
                '\u{7f}' => '\u{2421}',
                c => c,
            })
            .collect();
        if end > SHOWN_MAX {
            out.push('…');
        }
        out
    }

    fn character(
        &self,
        kind: &'static str,
        idx: usize,
        field: &'static str,
        expected: &'static str,
    ) -> CodeError {
        CodeError::Character {
            kind,
            input: self.shown(),
            field,
            found: self.chars[idx],
            expected,
            position: idx + 1,
        }
    }
}

/// What a scanned or keyed line is. See the module documentation for the rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scan {
    /// A bag's DIN with its flags ([`Flags::NONE`] when keyed without flags).
    Din(Din, Flags),
    /// An ISBT 128 Product Code.
    Product(ProductCode),
    /// A Chain of Identity identifier (wristband, bag).
    Coi(CoiId),
    /// A GS1 element string (shipper GRAI, logger GIAI, …; see [`Gs1::primary_key`]).
    Gs1(Gs1),
    /// The line has the shape of a known code but is not a valid one.
    Malformed(CodeError),
    /// Not a code this station understands; the trimmed line.
    Unknown(String),
}

/// The characters of `[start, end)` that are not ASCII whitespace.
fn compact(text: &Text, start: usize, end: usize) -> Vec<char> {
    text.chars[start..end]
        .iter()
        .copied()
        .filter(|c| !c.is_ascii_whitespace())
        .collect()
}

/// Rule 4: the first 13 non-space characters look like a DIN and the length fits (15 without
/// spaces is a bar code that lost its `=`, reported as such).
fn looks_like_keyed_din(text: &Text, start: usize, end: usize) -> bool {
    let chars = compact(text, start, end);
    let spaced = chars.len() != end - start;
    let fits = if spaced {
        (13..=18).contains(&chars.len())
    } else {
        (13..=15).contains(&chars.len())
    };
    fits && matches!(chars[0], 'A'..='N' | 'P'..='Z' | '1'..='9')
        && chars[5..13].iter().all(char::is_ascii_digit)
}

/// Rule 5: starts with the CoI literal and the length fits.
fn looks_like_keyed_coi(text: &Text, start: usize, end: usize) -> bool {
    let chars = compact(text, start, end);
    let spaced = chars.len() != end - start;
    let fits = if spaced {
        (15..=18).contains(&chars.len())
    } else {
        (15..=16).contains(&chars.len())
    };
    fits && chars.starts_with(&['C', 'H'])
}

/// Rules 4 and 5. A spaced line starting with `CH` can have both shapes; whichever parses
/// (check character included) wins. If both parse, the line is ambiguous and rejected; if
/// neither does, the CoI error is reported for lines starting with `CH`, the DIN error else.
fn classify_keyed(text: &Text, start: usize, end: usize) -> Option<Scan> {
    let din =
        looks_like_keyed_din(text, start, end).then(|| isbt128::parse_din(text, start, end, true));
    let coi =
        looks_like_keyed_coi(text, start, end).then(|| isbt128::parse_coi(text, start, end, true));
    match (din, coi) {
        (None, None) => None,
        (Some(Ok((d, f))), None | Some(Err(_))) => Some(Scan::Din(d, f)),
        (None | Some(Err(_)), Some(Ok(c))) => Some(Scan::Coi(c)),
        (Some(Err(e)), None) | (_, Some(Err(e))) => Some(Scan::Malformed(e)),
        (Some(Ok(_)), Some(Ok(_))) => Some(Scan::Malformed(CodeError::Missing {
            kind: "DIN or CoI",
            input: text.shown(),
            expected: "a line that is only a DIN or only a CoI identifier (it parses as both)",
            position: start + 1,
        })),
    }
}

/// Recognises one scanner line (see the module documentation for the rules, in order).
pub fn classify(line: &str) -> Scan {
    let text = Text::new(line);
    let (start, end) = text.trimmed();
    let trimmed = || text.chars[start..end].iter().collect::<String>();
    if start == end {
        return Scan::Unknown(String::new());
    }
    let gs1 = |result: Result<Gs1, CodeError>| match result {
        Ok(gs1) => Scan::Gs1(gs1),
        Err(e) => Scan::Malformed(e),
    };

    let mut s = start;
    if text.chars[s] == ']' {
        if end - s < 3 {
            return Scan::Unknown(trimmed());
        }
        let id: String = text.chars[s..s + 3].iter().collect();
        if SYMBOLOGY_IDENTIFIERS.contains(&id.as_str()) {
            return gs1(gs1::parse_raw(&text, s, end));
        }
        s += 3;
        if s == end {
            return Scan::Unknown(trimmed());
        }
    }

    match (text.chars[s], text.chars.get(s + 1).filter(|_| s + 1 < end)) {
        ('(', _) => gs1(gs1::parse_bracketed(&text, s, end)),
        (GS, _) => gs1(gs1::parse_raw(&text, s, end)),
        ('=', Some('<')) => match isbt128::parse_product(&text, s, end, true) {
            Ok(p) => Scan::Product(p),
            Err(e) => Scan::Malformed(e),
        },
        ('&', Some('/')) => match isbt128::parse_coi(&text, s, end, true) {
            Ok(c) => Scan::Coi(c),
            Err(e) => Scan::Malformed(e),
        },
        ('=', Some('A'..='N' | 'P'..='Z' | '1'..='9')) => {
            match isbt128::parse_din(&text, s, end, true) {
                Ok((din, flags)) => Scan::Din(din, flags),
                Err(e) => Scan::Malformed(e),
            }
        }
        ('=' | '&', _) => Scan::Unknown(trimmed()),
        _ => match classify_keyed(&text, s, end) {
            Some(scan) => scan,
            None if gs1::starts_with_known_ai(&text, s, end) => gs1(gs1::parse_raw(&text, s, end)),
            None => Scan::Unknown(trimmed()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn din(s: &str) -> Din {
        s.parse().expect("valid DIN")
    }

    #[test]
    fn classifies_din_barcode_with_trailing_crlf_and_code128_prefix() {
        let want = Scan::Din(din("G123417654321"), Flags::NONE);
        assert_eq!(classify("=G12341765432100\r\n"), want);
        assert_eq!(classify("]C0=G12341765432100\r"), want);
    }

    #[test]
    fn classifies_keyed_din_only_with_its_check_character() {
        let want = Scan::Din(din("G123417654321"), Flags::NONE);
        assert_eq!(classify("G123417654321A"), want);
        assert_eq!(classify("G1234 17 654321 [A]\n"), want);
        assert!(matches!(
            classify("G123417654321"),
            Scan::Malformed(CodeError::MissingCheckCharacter { .. })
        ));
        assert!(matches!(
            classify("G123417654321B"),
            Scan::Malformed(CodeError::CheckCharacter { position: 14, .. })
        ));
    }

    #[test]
    fn reports_din_barcode_that_lost_its_data_identifier() {
        assert!(matches!(
            classify("G12341765432100"),
            Scan::Malformed(CodeError::MissingDataIdentifier { position: 1, .. })
        ));
    }

    #[test]
    fn malformed_din_barcode_names_the_position_in_the_scanned_line() {
        // Positions count the symbology identifier too: 'X' is the 11th character here.
        let Scan::Malformed(err) = classify("]C0=G12341X65432100") else {
            panic!("not malformed");
        };
        assert_eq!(err.position(), Some(11));
        assert!(
            err.to_string()
                .starts_with("DIN ]C0=G12341X65432100: 'X' in the year"),
            "{err}"
        );
    }

    #[test]
    fn classifies_shipper_grai_and_logger_giai() {
        let Scan::Gs1(shipper) = classify("]C18003095060001343520042\r\n") else {
            panic!("GRAI not recognised");
        };
        assert_eq!(shipper.primary_key(), Some(Ai::Grai));
        let Scan::Gs1(logger) = classify("]d28004LOGGER-0042") else {
            panic!("GIAI not recognised");
        };
        assert_eq!(logger.primary_key(), Some(Ai::Giai));
        assert_eq!(logger.giai(), Some("LOGGER-0042"));
        let Scan::Gs1(location) = classify("(8004)FRZ-03/RACK-B/12") else {
            panic!("bracketed GIAI not recognised");
        };
        assert_eq!(location.giai(), Some("FRZ-03/RACK-B/12"));
    }

    #[test]
    fn classifies_unprefixed_gs1_by_its_leading_ai() {
        let Scan::Gs1(sscc) = classify("00106141412345678908") else {
            panic!("SSCC not recognised");
        };
        assert_eq!(sscc.sscc(), Some("106141412345678908"));
        assert!(matches!(
            classify("0109506000134353"),
            Scan::Malformed(CodeError::CheckDigit { position: 16, .. })
        ));
    }

    #[test]
    fn gs1_symbology_identifier_forces_gs1_parsing() {
        assert!(matches!(
            classify("]d2=G12341765432100"),
            Scan::Malformed(CodeError::UnknownAi { position: 4, .. })
        ));
    }

    #[test]
    fn other_isbt128_structures_and_text_are_unknown() {
        assert_eq!(classify("=%5100\r\n"), Scan::Unknown("=%5100".into()));
        assert_eq!(
            classify("&>0242352359"),
            Scan::Unknown("&>0242352359".into())
        );
        assert_eq!(classify("hello world"), Scan::Unknown("hello world".into()));
        assert_eq!(classify("  \r\n"), Scan::Unknown(String::new()));
        assert_eq!(classify("]C0"), Scan::Unknown("]C0".into()));
    }

    #[test]
    fn classifies_product_code_and_reports_a_broken_one() {
        let p: ProductCode = "S12954A0".parse().unwrap();
        assert_eq!(classify("=<S12954A0\r\n"), Scan::Product(p));
        assert!(matches!(
            classify("=<S12954A"),
            Scan::Malformed(CodeError::Length { .. })
        ));
    }

    #[test]
    fn error_input_shows_control_characters_as_pictures() {
        let err = Gs1::parse_raw("10\u{1d}").unwrap_err();
        assert_eq!(
            err.to_string(),
            "GS1 10␝: AI (10) value is empty, expected 1 to 20 characters (position 3)"
        );
    }

    proptest! {
        #[test]
        fn classify_never_panics_and_errors_point_inside_the_line(
            s in prop_oneof![
                any::<String>(),
                "(\\][A-Za-z][0-9])?[=<&/(\u{1d})CH0-9A-Z \\[\\]]{0,30}(\r\n)?",
            ]
        ) {
            if let Scan::Malformed(e) = classify(&s) {
                let n = s.chars().count();
                prop_assert!(e.position().is_none_or(|p| p >= 1 && p <= n + 1), "{} for {:?}", e, s);
            }
        }
    }
}
