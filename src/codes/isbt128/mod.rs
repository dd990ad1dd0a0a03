//! ISBT 128 identifiers (ICCBBA ST-001): the Donation Identification Number (DIN, data
//! structure 001) with its flag characters and its ISO/IEC 7064 mod 37-2 keyboard entry check
//! character, the Product Code (data structure 003) and the Chain of Identity identifier
//! (data structure 040). Structure only: product descriptions live in ICCBBA's licensed tables.

use std::fmt;
use std::str::FromStr;

use super::{CodeError, Text};

mod check;
mod coi;
mod din;
mod keyed;
mod product;

pub use check::*;
pub use coi::*;
pub use din::*;
use keyed::*;
pub use product::*;

const DIN: &str = "DIN";
const PRODUCT: &str = "product code";
const COI: &str = "CoI";

// Character classes of ST-001 §2.4.1 / §2.4.40.
fn is_fin_first(c: char) -> bool {
    matches!(c, 'A'..='N' | 'P'..='Z' | '1'..='9')
}
fn is_fin_middle(c: char) -> bool {
    matches!(c, 'A'..='N' | 'P'..='Z' | '0'..='9')
}
fn is_digit(c: char) -> bool {
    c.is_ascii_digit()
}
fn is_flag(c: char) -> bool {
    matches!(c, '0'..='9' | 'A'..='H' | 'J'..='N' | 'P' | 'R'..='Y')
}
fn is_upper_alnum(c: char) -> bool {
    matches!(c, 'A'..='Z' | '0'..='9')
}

/// One checked position of a fixed layout: which characters it allows and how to say so.
type Slot = (fn(char) -> bool, &'static str, &'static str);

const FIN_FIRST: Slot = (
    is_fin_first,
    "facility identification number",
    "A-N, P-Z or 1-9",
);
const FIN_MIDDLE: Slot = (
    is_fin_middle,
    "facility identification number",
    "A-N, P-Z or 0-9",
);
const FIN_DIGIT: Slot = (is_digit, "facility identification number", "a digit 0-9");
const YEAR: Slot = (is_digit, "year", "a digit 0-9");
const SEQUENCE: Slot = (is_digit, "sequence number", "a digit 0-9");

/// αppppyynnnnnn: the 13 characters of a DIN.
const DIN_LAYOUT: [Slot; 13] = [
    FIN_FIRST, FIN_MIDDLE, FIN_MIDDLE, FIN_DIGIT, FIN_DIGIT, YEAR, YEAR, SEQUENCE, SEQUENCE,
    SEQUENCE, SEQUENCE, SEQUENCE, SEQUENCE,
];

const COI_SEQUENCE: Slot = (is_upper_alnum, "sequence number", "A-Z or 0-9");
const COI_LITERAL_C: Slot = (|c| c == 'C', "literal", "'C' (the literal \"CH\")");
const COI_LITERAL_H: Slot = (|c| c == 'H', "literal", "'H' (the literal \"CH\")");

/// CHαppppyynnnnnn: the 15-character data content of a CoI identifier.
const COI_LAYOUT: [Slot; 15] = [
    COI_LITERAL_C,
    COI_LITERAL_H,
    FIN_FIRST,
    FIN_MIDDLE,
    FIN_MIDDLE,
    FIN_DIGIT,
    FIN_DIGIT,
    YEAR,
    YEAR,
    COI_SEQUENCE,
    COI_SEQUENCE,
    COI_SEQUENCE,
    COI_SEQUENCE,
    COI_SEQUENCE,
    COI_SEQUENCE,
];

const FLAG_SLOT: Slot = (is_flag, "flag characters", "0-9, A-H, J-N, P or R-Y");

/// Checks `chars` (index into `text`, character) against `layout`, left to right.
fn check_layout(
    text: &Text,
    kind: &'static str,
    chars: &[(usize, char)],
    layout: &[Slot],
) -> Result<(), CodeError> {
    for (&(idx, c), &(ok, field, expected)) in chars.iter().zip(layout) {
        if !ok(c) {
            return Err(text.character(kind, idx, field, expected));
        }
    }
    Ok(())
}

fn ascii<const N: usize>(chars: &[(usize, char)]) -> [u8; N] {
    let mut out = [b'0'; N];
    for (slot, &(_, c)) in out.iter_mut().zip(chars) {
        // Callers validated every character against an ASCII layout first.
        *slot = u8::try_from(c).unwrap_or(b'?');
    }
    out
}

fn digits_value(chars: &[(usize, char)]) -> u32 {
    chars
        .iter()
        .fold(0, |n, &(_, c)| n * 10 + c.to_digit(10).unwrap_or(0))
}

fn ascii_str(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).expect("identifier bytes are validated ASCII")
}

#[cfg(test)]
mod tests {
    use super::super::{classify, Scan};
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct Vectors {
        check_character: CheckCharacterVectors,
        din_barcodes: Vec<BarcodeCase>,
        eye_readable: Vec<EyeReadableCase>,
    }

    #[derive(Deserialize)]
    struct CheckCharacterVectors {
        alphabet: String,
        cases: Vec<CheckCase>,
    }

    #[derive(Deserialize)]
    struct CheckCase {
        din: String,
        check: String,
    }

    #[derive(Deserialize)]
    struct BarcodeCase {
        data: String,
        valid: bool,
        facility: Option<String>,
        year: Option<String>,
        sequence: Option<String>,
        flags: Option<String>,
        check: Option<String>,
        why: Option<String>,
    }

    #[derive(Deserialize)]
    struct EyeReadableCase {
        din: String,
        check: String,
        valid: bool,
    }

    fn vectors() -> Vectors {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/isbt128.json");
        let json = std::fs::read_to_string(path).expect("read tests/vectors/isbt128.json");
        serde_json::from_str(&json).expect("parse isbt128.json")
    }

    fn one_char(s: &str) -> char {
        let mut chars = s.chars();
        let c = chars.next().expect("one character");
        assert_eq!(chars.next(), None, "{s:?} is one character");
        c
    }

    #[test]
    fn iso7064_alphabet_matches_vector_file() {
        assert_eq!(
            vectors().check_character.alphabet.as_bytes(),
            ISO7064_ALPHABET
        );
    }

    #[test]
    fn check_character_matches_every_vector_case() {
        let v = vectors();
        assert!(!v.check_character.cases.is_empty());
        for case in &v.check_character.cases {
            let din: Din = case.din.parse().expect(&case.din);
            let want = one_char(&case.check);
            assert_eq!(din.check_character(), want, "DIN {}", case.din);
            assert_eq!(mod37_2_check_character(&case.din), Some(want));
            assert_eq!(din.to_string(), case.din, "canonical form");
        }
    }

    #[test]
    fn din_barcode_vectors_give_expected_parts_or_errors() {
        let v = vectors();
        assert!(v.din_barcodes.iter().any(|c| c.valid));
        assert!(v.din_barcodes.iter().any(|c| !c.valid));
        for case in &v.din_barcodes {
            let got = Din::parse_barcode(&case.data);
            if case.valid {
                let (din, flags) = got.expect(&case.data);
                assert_eq!(Some(din.facility()), case.facility.as_deref());
                assert_eq!(Some(format!("{:02}", din.year())), case.year);
                assert_eq!(Some(format!("{:06}", din.sequence())), case.sequence);
                assert_eq!(Some(flags.as_str()), case.flags.as_deref());
                assert_eq!(
                    Some(din.check_character().to_string()),
                    case.check,
                    "{}",
                    case.data
                );
                assert_eq!(din.to_barcode(flags), case.data, "round trip");
                assert_eq!(classify(&case.data), Scan::Din(din, flags));
                continue;
            }
            let err = got.expect_err(&case.data);
            let why = case.why.as_deref().unwrap_or_default();
            let chars: Vec<char> = case.data.chars().collect();
            match &err {
                CodeError::MissingDataIdentifier { position, .. } => {
                    assert!(why.contains("'='"), "{}: {err}", case.data);
                    assert_eq!(*position, 1);
                    assert_ne!(chars[0], '=');
                }
                CodeError::Length {
                    found, position, ..
                } => {
                    assert_eq!(*found, chars.len());
                    if why.contains("too short") {
                        assert!(*found < 16 && *position == found + 1, "{err}");
                    } else {
                        assert!(why.contains("too long"), "{}: {err}", case.data);
                        assert!(*found > 16 && *position == 17, "{err}");
                    }
                }
                CodeError::Character {
                    field,
                    found,
                    position,
                    ..
                } => {
                    let named = if why.contains("year") {
                        "year"
                    } else {
                        assert!(why.contains("sequence"), "{}: {err}", case.data);
                        "sequence number"
                    };
                    assert_eq!(*field, named, "{err}");
                    assert_eq!(chars[position - 1], *found, "position points at it");
                    assert!(!found.is_ascii_digit());
                }
                other => panic!("{}: unexpected error {other}", case.data),
            }
            // No other parser entry point accepts it either.
            assert!(Din::parse_with_flags(&case.data).is_err(), "{}", case.data);
            assert!(matches!(classify(&case.data), Scan::Malformed(_)));
        }
    }

    #[test]
    fn eye_readable_vectors_accept_right_and_reject_wrong_check_character() {
        for case in vectors().eye_readable {
            let d = &case.din;
            let forms = [
                format!("{d}{}", case.check),
                format!("{} {} {} {}", &d[..5], &d[5..7], &d[7..], case.check),
                format!("{} {} {} [{}]", &d[..5], &d[5..7], &d[7..], case.check),
            ];
            for form in &forms {
                let parsed = form.parse::<Din>();
                let scanned = classify(form);
                if case.valid {
                    let din = parsed.expect(form);
                    assert_eq!(din.to_string(), *d);
                    assert_eq!(scanned, Scan::Din(din, Flags::NONE));
                    continue;
                }
                let err = parsed.expect_err(form);
                let truth = Din::from_str(d).expect("the bare DIN is valid");
                let position = form.rfind(&case.check).expect("check in form") + 1;
                assert_eq!(
                    err,
                    CodeError::CheckCharacter {
                        kind: "DIN",
                        input: form.clone(),
                        found: one_char(&case.check),
                        expected: truth.check_character(),
                        position,
                    }
                );
                assert_eq!(scanned, Scan::Malformed(err));
            }
            if !case.valid {
                // The compact form: the check character is the 14th character.
                let err = format!("{d}{}", case.check).parse::<Din>().unwrap_err();
                assert_eq!(err.position(), Some(14));
            }
        }
    }

    #[test]
    fn check_character_error_reads_like_ripgrep() {
        let err = "G123417654321B".parse::<Din>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "DIN G123417654321B: check character is 'B', expected 'A' (position 14)"
        );
    }

    #[test]
    fn matches_st001_worked_example_and_printed_label() {
        // ST-001 Appendix A.1: G1234 17 654321 has checksum 10, K = 'A'; A.2: type 3 flags 70.
        let din: Din = "G123417654321".parse().unwrap();
        assert_eq!(din.check_value(), 10);
        assert_eq!(Flags::check_value_of(&din).as_str(), "70");
        // ST-001 §7.4.1 prints "W0000 09 123456 02 G": flags 02, check character G.
        let (din, flags) = Din::parse_with_flags("W0000 09 123456 02 G").unwrap();
        assert_eq!(din.to_string(), "W000009123456");
        assert_eq!(flags.as_str(), "02");
        assert_eq!(flags.kind(), FlagKind::Iccbba(2));
    }

    #[test]
    fn accepts_type3_flags_carrying_the_check_value() {
        let (din, flags) = Din::parse_barcode("=G12341765432170").unwrap();
        assert_eq!(flags.kind(), FlagKind::CheckValue(10));
        assert_eq!(din.check_value(), 10);
    }

    #[test]
    fn rejects_type3_flags_disagreeing_with_check_value() {
        let err = Din::parse_barcode("=G12341765432171").unwrap_err();
        assert!(
            matches!(err, CodeError::FlagCheck { ref found, ref expected, check: 'A', position: 15, .. }
            if found == "71" && expected == "70"),
            "{err}"
        );
    }

    #[test]
    fn flag_kinds_follow_st001_table_3() {
        let kind = |s: &str| Flags::new(s).unwrap().kind();
        assert_eq!(kind("00"), FlagKind::NotUsed);
        assert_eq!(kind("01"), FlagKind::Iccbba(1));
        assert_eq!(kind("14"), FlagKind::Reserved);
        assert_eq!(kind("19"), FlagKind::Iccbba(19));
        assert_eq!(kind("20"), FlagKind::Local(20));
        assert_eq!(kind("59"), FlagKind::Local(59));
        assert_eq!(kind("60"), FlagKind::CheckValue(0));
        assert_eq!(kind("96"), FlagKind::CheckValue(36));
        assert_eq!(kind("97"), FlagKind::Reserved);
        assert_eq!(kind("A1"), FlagKind::Reserved);
    }

    #[test]
    fn rejects_flag_characters_outside_the_st001_set() {
        for (data, position) in [("=G123417654321I0", 15), ("=G1234176543210Z", 16)] {
            let err = Din::parse_barcode(data).unwrap_err();
            assert!(
                matches!(
                    err,
                    CodeError::Character {
                        field: "flag characters",
                        ..
                    }
                ),
                "{err}"
            );
            assert_eq!(err.position(), Some(position));
        }
    }

    #[test]
    fn rejects_letter_o_and_lowercase_in_facility() {
        let err = Din::parse_barcode("=O12341765432100").unwrap_err();
        assert_eq!(err.position(), Some(2));
        let err = Din::parse_barcode("=g12341765432100").unwrap_err();
        assert_eq!(err.position(), Some(2));
        // Third and fourth FIN characters (positions 5 and 6 here) must be digits.
        let err = Din::parse_barcode("=G12A41765432100").unwrap_err();
        assert_eq!(err.position(), Some(5));
    }

    #[test]
    fn accepts_national_groupings_of_the_din() {
        // ST-001 §7.4.1 display examples group the 13 characters differently.
        let din: Din = "A123414012346".parse().unwrap();
        let k = din.check_character();
        assert_eq!(format!("A123 4140 12346 {k}").parse::<Din>(), Ok(din));
        assert_eq!(format!("A1234 14 012346 [{k}]").parse::<Din>(), Ok(din));
    }

    #[test]
    fn rejects_eye_readable_group_running_past_the_din() {
        let err = "G1234 17 6543210 A".parse::<Din>().unwrap_err();
        assert!(
            matches!(
                err,
                CodeError::Character {
                    found: '0',
                    position: 16,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn rejects_anything_after_the_check_character() {
        let err = "G1234 17 654321 00 A X".parse::<Din>().unwrap_err();
        assert_eq!(err.position(), Some(22));
    }

    #[test]
    fn bare_din_parses_but_classify_requires_its_check_character() {
        assert!("G123417654321".parse::<Din>().is_ok());
        assert!(matches!(
            classify("G123417654321"),
            Scan::Malformed(CodeError::MissingCheckCharacter { position: 14, .. })
        ));
    }

    #[test]
    fn din_new_rejects_out_of_range_parts() {
        assert!(matches!(
            Din::new("G1234", 100, 1),
            Err(CodeError::OutOfRange { field: "year", .. })
        ));
        assert!(matches!(
            Din::new("G1234", 17, 1_000_000),
            Err(CodeError::OutOfRange {
                field: "sequence number",
                ..
            })
        ));
        assert!(Din::new("G123", 17, 1).is_err());
        assert_eq!(
            Din::new("G1234", 17, 654321).map(|d| d.eye_readable()),
            Ok("G1234 17 654321 A".to_owned())
        );
    }

    #[test]
    fn parses_cellular_therapy_product_code_structure() {
        // ST-001 Figure 3: S1295 4 A0 (PDC, collection type, division).
        let p = ProductCode::parse_barcode("=<S12954A0").unwrap();
        assert_eq!(p.description_code(), "S1295");
        assert!(p.is_cellular_therapy());
        assert_eq!(p.collection_type(), Some('4'));
        assert_eq!(p.division(), "A0");
        assert_eq!(p.to_barcode(), "=<S12954A0");
        assert_eq!("S12954A0".parse::<ProductCode>(), Ok(p));
        assert_eq!(classify("]C0=<S12954A0\r\n"), Scan::Product(p));
    }

    #[test]
    fn tissue_product_code_has_three_digit_division() {
        // ST-001 Figure 4: T0326 003.
        let p: ProductCode = "T0326003".parse().unwrap();
        assert_eq!(p.category(), ProductCategory::Tissue);
        assert_eq!(p.collection_type(), None);
        assert_eq!(p.division(), "003");
        let err = "=<T03260A3".parse::<ProductCode>().unwrap_err();
        assert!(
            matches!(
                err,
                CodeError::Character {
                    found: 'A',
                    position: 9,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn rejects_uppercase_second_division_character() {
        let err = ProductCode::parse_barcode("=<S12954AA").unwrap_err();
        assert!(
            matches!(
                err,
                CodeError::Character {
                    field: "division code (s)",
                    position: 10,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn x1_to_x9_products_must_have_tds_000() {
        assert!("X1234000".parse::<ProductCode>().is_ok());
        let err = "=<X1234001".parse::<ProductCode>().unwrap_err();
        assert_eq!(err.position(), Some(10));
        // X0 (plasma derivatives) carries a collection type.
        assert_eq!(
            "X0123V00".parse::<ProductCode>().unwrap().collection_type(),
            Some('V')
        );
    }

    #[test]
    fn product_barcode_requires_its_data_identifier_and_length() {
        let err = ProductCode::parse_barcode("S12954A0").unwrap_err();
        assert!(
            matches!(err, CodeError::MissingDataIdentifier { position: 1, .. }),
            "{err}"
        );
        let err = ProductCode::parse_barcode("=<S12954A").unwrap_err();
        assert!(
            matches!(
                err,
                CodeError::Length {
                    found: 9,
                    position: 10,
                    ..
                }
            ),
            "{err}"
        );
        let err = ProductCode::parse_barcode("=%S12954A0").unwrap_err();
        assert!(
            matches!(err, CodeError::MissingDataIdentifier { position: 2, .. }),
            "{err}"
        );
    }

    #[test]
    fn parses_chain_of_identity_identifier() {
        let coi = CoiId::parse_barcode("&/CHA999923AB12CD").unwrap();
        assert_eq!(coi.facility(), "A9999");
        assert_eq!(coi.year(), 23);
        assert_eq!(coi.sequence(), "AB12CD");
        assert_eq!(coi.to_string(), "CHA999923AB12CD");
        // Independently computed (Python ISO 7064 mod 37-2) over the 15-character content.
        assert_eq!(coi.check_character(), 'R');
        assert_eq!(coi.eye_readable(), "CH A9999 23 AB12CD R");
        assert_eq!("CHA999923AB12CDR".parse::<CoiId>(), Ok(coi));
        assert_eq!("CH A9999 23 AB12CD R".parse::<CoiId>(), Ok(coi));
        assert_eq!(classify("&/CHA999923AB12CD\n"), Scan::Coi(coi));
        assert_eq!(classify("CHA999923AB12CDR"), Scan::Coi(coi));
    }

    #[test]
    fn rejects_coi_without_literal_or_with_wrong_check() {
        let err = CoiId::parse_barcode("&/CXA999923AB12CD").unwrap_err();
        assert!(
            matches!(
                err,
                CodeError::Character {
                    field: "literal",
                    position: 4,
                    ..
                }
            ),
            "{err}"
        );
        let err = "CHA999923AB12CDS".parse::<CoiId>().unwrap_err();
        assert!(
            matches!(
                err,
                CodeError::CheckCharacter {
                    found: 'S',
                    expected: 'R',
                    position: 16,
                    ..
                }
            ),
            "{err}"
        );
        let err = CoiId::parse_barcode("&/CHA999923ab12CD").unwrap_err();
        assert!(
            matches!(
                err,
                CodeError::Character {
                    field: "sequence number",
                    position: 12,
                    ..
                }
            ),
            "{err}"
        );
        assert!(matches!(
            classify("CHA999923AB12CD"),
            Scan::Malformed(CodeError::MissingCheckCharacter { .. })
        ));
    }

    // ---- property tests -------------------------------------------------------------------

    const FIN_FIRST_CHARS: &str = "ABCDEFGHIJKLMNPQRSTUVWXYZ123456789";
    const FIN_MIDDLE_CHARS: &str = "ABCDEFGHIJKLMNPQRSTUVWXYZ0123456789";
    const FLAG_CHARS: &str = "0123456789ABCDEFGHJKLMNPRSTUVWXY";

    fn pick(set: &'static str) -> impl Strategy<Value = char> {
        prop::sample::select(set.chars().collect::<Vec<_>>())
    }

    fn facility() -> impl Strategy<Value = String> {
        (
            pick(FIN_FIRST_CHARS),
            pick(FIN_MIDDLE_CHARS),
            pick(FIN_MIDDLE_CHARS),
            0u8..100,
        )
            .prop_map(|(a, b, c, n)| format!("{a}{b}{c}{n:02}"))
    }

    fn din() -> impl Strategy<Value = Din> {
        (facility(), 0u8..100, 0u32..1_000_000)
            .prop_map(|(f, y, s)| Din::new(&f, y, s).expect("generated parts are valid"))
    }

    fn flags_for(d: Din) -> impl Strategy<Value = Flags> {
        (pick(FLAG_CHARS), pick(FLAG_CHARS)).prop_map(move |(a, b)| {
            let f = Flags::new(&format!("{a}{b}")).expect("generated flags are valid");
            match f.kind() {
                FlagKind::CheckValue(_) => Flags::check_value_of(&d),
                _ => f,
            }
        })
    }

    fn noisy() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "[=<&/ CH0-9A-Z\\[\\]a-z*\r\n]{0,24}",
            "=[A-Z0-9]{13,16}",
            "&/CH[A-Z0-9 ]{0,16}",
        ]
    }

    fn position_in_bounds(input: &str, err: &CodeError) -> bool {
        err.position()
            .is_none_or(|p| p >= 1 && p <= input.chars().count() + 1)
    }

    proptest! {
        #[test]
        fn din_round_trips_through_every_form(d in din().prop_flat_map(|d| (Just(d), flags_for(d)))) {
            let (d, flags) = d;
            prop_assert_eq!(d.to_string().parse::<Din>(), Ok(d));
            prop_assert_eq!(Din::parse_barcode(&d.to_barcode(flags)), Ok((d, flags)));
            prop_assert_eq!(d.eye_readable().parse::<Din>(), Ok(d));
            prop_assert_eq!(format!("{d}{}", d.check_character()).parse::<Din>(), Ok(d));
            prop_assert_eq!(classify(&format!("{}\r\n", d.to_barcode(flags))), Scan::Din(d, flags));
            prop_assert_eq!(classify(&d.eye_readable()), Scan::Din(d, Flags::NONE));
            prop_assert_eq!(Din::new(d.facility(), d.year(), d.sequence()), Ok(d));
        }

        #[test]
        fn check_character_catches_every_single_substitution(d in din()) {
            let keyed: Vec<char> = format!("{d}{}", d.check_character()).chars().collect();
            for at in 0..keyed.len() {
                for with in FIN_MIDDLE_CHARS.chars().chain(['*']) {
                    if with == keyed[at] {
                        continue;
                    }
                    let mut typo = keyed.clone();
                    typo[at] = with;
                    let typo: String = typo.into_iter().collect();
                    prop_assert!(typo.parse::<Din>().is_err(), "{} accepted", typo);
                }
            }
        }

        #[test]
        fn check_character_catches_every_adjacent_transposition(d in din()) {
            let keyed: Vec<char> = format!("{d}{}", d.check_character()).chars().collect();
            for at in 0..keyed.len() - 1 {
                if keyed[at] == keyed[at + 1] {
                    continue;
                }
                let mut typo = keyed.clone();
                typo.swap(at, at + 1);
                let typo: String = typo.into_iter().collect();
                prop_assert!(typo.parse::<Din>().is_err(), "{} accepted", typo);
            }
        }

        #[test]
        fn product_code_round_trips(
            alpha in pick("ABCDEFHPSYGIJKLOQUZ"), o in "[A-Z0-9]{4}", t in "[A-Za-z0-9]",
            d in "[A-Z0-9]", s in "[a-z0-9]"
        ) {
            let p: ProductCode = format!("{alpha}{o}{t}{d}{s}").parse().expect("valid by construction");
            prop_assert_eq!(ProductCode::parse_barcode(&p.to_barcode()), Ok(p));
            prop_assert_eq!(p.to_string().parse::<ProductCode>(), Ok(p));
            prop_assert_eq!(classify(&p.to_barcode()), Scan::Product(p));
        }

        #[test]
        fn coi_round_trips(f in facility(), y in 0u8..100, seq in "[A-Z0-9]{6}") {
            let c = CoiId::new(&f, y, &seq).expect("valid by construction");
            prop_assert_eq!(CoiId::parse_barcode(&c.to_barcode()), Ok(c));
            prop_assert_eq!(c.eye_readable().parse::<CoiId>(), Ok(c));
            prop_assert_eq!(classify(&c.eye_readable()), Scan::Coi(c));
            prop_assert_eq!(classify(&c.to_barcode()), Scan::Coi(c));
        }

        #[test]
        fn isbt_parsers_never_panic_and_point_inside_the_input(s in noisy()) {
            for result in [
                Din::parse_with_flags(&s).map(|_| ()),
                Din::parse_barcode(&s).map(|_| ()),
                ProductCode::from_str(&s).map(|_| ()),
                ProductCode::parse_barcode(&s).map(|_| ()),
                CoiId::from_str(&s).map(|_| ()),
                CoiId::parse_barcode(&s).map(|_| ()),
                Flags::new(&s).map(|_| ()),
            ] {
                if let Err(e) = result {
                    prop_assert!(position_in_bounds(&s, &e), "{} for {:?}", e, s);
                    let _ = e.to_string();
                }
            }
        }
    }
}
