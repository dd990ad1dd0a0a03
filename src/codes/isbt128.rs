//! ISBT 128 identifiers (ICCBBA ST-001): the Donation Identification Number (DIN, data
//! structure 001) with its flag characters and its ISO/IEC 7064 mod 37-2 keyboard entry check
//! character, the Product Code (data structure 003) and the Chain of Identity identifier
//! (data structure 040). Structure only: product descriptions live in ICCBBA's licensed tables.

use std::fmt;
use std::str::FromStr;

use super::{CodeError, Text};

const DIN: &str = "DIN";
const PRODUCT: &str = "product code";
const COI: &str = "CoI";

/// ISO/IEC 7064 value-to-character table (Table 35 of ST-001).
const ISO7064_ALPHABET: &[u8; 37] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ*";

fn iso7064_value(c: u8) -> Option<u32> {
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
fn check_of(parts: &[&[u8]]) -> u8 {
    let mut sum = 0u32;
    for b in parts.iter().flat_map(|p| p.iter()) {
        debug_assert!(iso7064_value(*b).is_some(), "validated on construction");
        sum = ((sum + iso7064_value(*b).unwrap_or(0)) * 2) % 37;
    }
    // (38 - sum) % 37 is at most 36.
    ((38 - sum) % 37) as u8
}

fn check_char_of(value: u8) -> char {
    char::from(ISO7064_ALPHABET[usize::from(value % 37)])
}

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

/// A keyed or eye-readable entry split into its data characters and what followed them.
struct Keyed {
    body: Vec<(usize, char)>,
    flags: Option<Vec<(usize, char)>>,
    check: Option<(usize, char)>,
}

/// What an eye-readable form looks like for one identifier.
struct KeyedSpec {
    kind: &'static str,
    body_len: usize,
    body_name: &'static str,
    allow_flags: bool,
    expected_forms: &'static str,
}

/// Splits an eye-readable entry: either one run of `body_len` characters optionally followed
/// by the check character, or whitespace-separated groups whose first groups make up exactly
/// the body (any grouping), then optionally the flag characters (DIN only, 2 characters) and
/// the check character (1 character, optionally boxed as `[K]`).
fn split_keyed(
    text: &Text,
    start: usize,
    end: usize,
    spec: &KeyedSpec,
) -> Result<Keyed, CodeError> {
    let mut tokens: Vec<Vec<(usize, char)>> = Vec::new();
    let mut current = Vec::new();
    for idx in start..end {
        let c = text.chars[idx];
        if c.is_whitespace() {
            if !current.is_empty() {
                tokens.push(std::mem::take(&mut current));
            }
        } else {
            current.push((idx, c));
        }
    }
    if !current.is_empty() {
        tokens.push(current);
    }
    if tokens.is_empty() {
        return Err(CodeError::Empty {
            kind: spec.kind,
            expected: spec.expected_forms,
        });
    }
    if tokens.len() == 1 {
        let mut body = tokens.remove(0);
        let n = body.len();
        if n == spec.body_len {
            return Ok(Keyed {
                body,
                flags: None,
                check: None,
            });
        }
        if n == spec.body_len + 1 {
            let check = body.pop();
            return Ok(Keyed {
                body,
                flags: None,
                check,
            });
        }
        if spec.allow_flags && n == spec.body_len + 2 {
            return Err(CodeError::MissingDataIdentifier {
                kind: spec.kind,
                input: text.shown(),
                identifier: "=",
                expected: spec.expected_forms,
                position: body[0].0 + 1,
            });
        }
        let position = if n < spec.body_len {
            end + 1
        } else {
            body[spec.body_len + 1].0 + 1
        };
        return Err(CodeError::Length {
            kind: spec.kind,
            input: text.shown(),
            found: n,
            expected: spec.expected_forms,
            position,
        });
    }

    let mut tokens = tokens.into_iter();
    let mut body = Vec::with_capacity(spec.body_len);
    while body.len() < spec.body_len {
        let Some(token) = tokens.next() else {
            return Err(CodeError::Length {
                kind: spec.kind,
                input: text.shown(),
                found: body.len(),
                expected: spec.body_name,
                position: end + 1,
            });
        };
        let room = spec.body_len - body.len();
        if token.len() > room {
            let (idx, _) = token[room];
            return Err(text.character(
                spec.kind,
                idx,
                "eye-readable layout",
                if spec.allow_flags {
                    "a space after the 13-character DIN"
                } else {
                    "a space after the 15-character CoI identifier"
                },
            ));
        }
        body.extend(token);
    }

    let as_check = |t: &[(usize, char)]| -> Option<(usize, char)> {
        match t {
            [one] => Some(*one),
            [(_, '['), one, (_, ']')] => Some(*one),
            _ => None,
        }
    };
    let mut keyed = Keyed {
        body,
        flags: None,
        check: None,
    };
    let mut rest = tokens.peekable();
    if spec.allow_flags {
        if let Some(flags) = rest.next_if(|t| t.len() == 2) {
            keyed.flags = Some(flags);
        }
    }
    if let Some(token) = rest.next() {
        match as_check(&token) {
            Some(check) => keyed.check = Some(check),
            None => {
                let expected = if spec.allow_flags && keyed.flags.is_none() {
                    "the flag characters (2) or the check character (1)"
                } else {
                    "the check character (1)"
                };
                return Err(text.character(spec.kind, token[0].0, "eye-readable layout", expected));
            }
        }
    }
    if let Some(extra) = rest.next() {
        return Err(text.character(
            spec.kind,
            extra[0].0,
            "eye-readable layout",
            "nothing after the check character",
        ));
    }
    Ok(keyed)
}

/// Verifies a keyed check character against the computed one.
fn verify_check(
    text: &Text,
    kind: &'static str,
    check: (usize, char),
    expected: char,
) -> Result<(), CodeError> {
    let (idx, found) = check;
    if found == expected {
        Ok(())
    } else {
        Err(CodeError::CheckCharacter {
            kind,
            input: text.shown(),
            found,
            expected,
            position: idx + 1,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Flags
// ---------------------------------------------------------------------------------------------

/// The two flag characters `ff` of a DIN bar code (ST-001 Table 3). Not part of the DIN.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Flags([u8; 2]);

/// What a pair of flag characters means, by ST-001 Table 3 ranges.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FlagKind {
    /// `00`: flag not used.
    NotUsed,
    /// `01`-`13`, `15`-`19`: process control defined by ICCBBA (container of a set, pilot tube…).
    Iccbba(u8),
    /// `20`-`59`: defined by the assigning facility; meaningless elsewhere.
    Local(u8),
    /// `60`-`96`: 60 + the mod 37-2 check value of the DIN (the "type 3" flags).
    CheckValue(u8),
    /// `14`, `97`-`99` and the alphanumeric values: reserved for future assignment.
    Reserved,
}

impl Flags {
    /// `00`: flag characters not used.
    pub const NONE: Flags = Flags(*b"00");

    /// Flags from their two characters (`0-9`, `A-H`, `J-N`, `P`, `R-Y`).
    pub fn new(s: &str) -> Result<Flags, CodeError> {
        let text = Text::new(s);
        let (start, end) = text.trimmed();
        let chars: Vec<(usize, char)> = (start..end).map(|i| (i, text.chars[i])).collect();
        if chars.len() != 2 {
            return Err(CodeError::Length {
                kind: DIN,
                input: text.shown(),
                found: chars.len(),
                expected: "2 flag characters",
                position: chars.get(2).map_or(end + 1, |&(i, _)| i + 1),
            });
        }
        check_layout(&text, DIN, &chars, &[FLAG_SLOT, FLAG_SLOT])?;
        Ok(Flags(ascii(&chars)))
    }

    /// The type 3 flags that carry `din`'s check value (60 + value).
    pub fn check_value_of(din: &Din) -> Flags {
        let v = 60 + din.check_value();
        Flags([b'0' + v / 10, b'0' + v % 10])
    }

    /// The two characters.
    pub fn as_str(&self) -> &str {
        ascii_str(&self.0)
    }

    /// The meaning class of these flags.
    pub fn kind(&self) -> FlagKind {
        let [a, b] = self.0;
        if !(a.is_ascii_digit() && b.is_ascii_digit()) {
            return FlagKind::Reserved;
        }
        match (a - b'0') * 10 + (b - b'0') {
            0 => FlagKind::NotUsed,
            14 | 97..=99 => FlagKind::Reserved,
            n @ 1..=19 => FlagKind::Iccbba(n),
            n @ 20..=59 => FlagKind::Local(n),
            n => FlagKind::CheckValue(n - 60),
        }
    }
}

impl fmt::Display for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Flags({})", self.as_str())
    }
}

impl Default for Flags {
    fn default() -> Self {
        Flags::NONE
    }
}

// ---------------------------------------------------------------------------------------------
// DIN
// ---------------------------------------------------------------------------------------------

/// An ISBT 128 Donation Identification Number `αppppyynnnnnn` (13 characters): facility
/// identification number (FIN, 5), nominal year (2 digits), sequence number (6 digits).
/// A `Din` that exists is well formed; its check character is computed, never stored.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Din {
    facility: [u8; 5],
    year: u8,
    sequence: u32,
}

const DIN_FORMS: &str =
    "=αppppyynnnnnnff (16), the 13-character DIN, or the DIN and its check character";
const DIN_BARCODE: &str = "16 characters: '=', the 13-character DIN and 2 flag characters";

impl Din {
    /// A DIN from its parts: FIN (5 characters), year 0-99, sequence 0-999999.
    pub fn new(facility: &str, year: u8, sequence: u32) -> Result<Din, CodeError> {
        if year > 99 || sequence > 999_999 {
            return Err(CodeError::OutOfRange {
                kind: DIN,
                input: format!("{facility} {year} {sequence}"),
                field: if year > 99 { "year" } else { "sequence number" },
                expected: if year > 99 { "00-99" } else { "000000-999999" },
            });
        }
        let text = Text::new(&format!("{facility}{year:02}{sequence:06}"));
        let chars = text.indexed(0, text.chars.len());
        if chars.len() != 13 {
            return Err(CodeError::Length {
                kind: DIN,
                input: text.shown(),
                found: chars.len(),
                expected: "a 5-character facility identification number",
                position: if chars.len() < 13 { chars.len() + 1 } else { 6 },
            });
        }
        Din::from_body(&text, &chars)
    }

    fn from_body(text: &Text, body: &[(usize, char)]) -> Result<Din, CodeError> {
        check_layout(text, DIN, body, &DIN_LAYOUT)?;
        Ok(Din {
            facility: ascii(&body[..5]),
            year: u8::try_from(digits_value(&body[5..7])).unwrap_or(0),
            sequence: digits_value(&body[7..13]),
        })
    }

    /// The facility identification number (FIN), e.g. `G1234`.
    pub fn facility(&self) -> &str {
        ascii_str(&self.facility)
    }

    /// The nominal year, last two digits (0-99).
    pub fn year(&self) -> u8 {
        self.year
    }

    /// The sequence number within the year for the FIN (0-999999).
    pub fn sequence(&self) -> u32 {
        self.sequence
    }

    /// The ISO/IEC 7064 mod 37-2 check value (0-36) of the 13 DIN characters.
    pub fn check_value(&self) -> u8 {
        let year = [b'0' + self.year / 10, b'0' + self.year % 10];
        let seq = format!("{:06}", self.sequence);
        check_of(&[&self.facility, &year, seq.as_bytes()])
    }

    /// The keyboard entry check character K (ST-001 §7.5), e.g. `A` for `G123417654321`.
    pub fn check_character(&self) -> char {
        check_char_of(self.check_value())
    }

    /// The bar code data content `=αppppyynnnnnnff`.
    pub fn to_barcode(&self, flags: Flags) -> String {
        format!("={self}{flags}")
    }

    /// The eye-readable text with the check character: `G1234 17 654321 A`.
    pub fn eye_readable(&self) -> String {
        format!(
            "{} {:02} {:06} {}",
            self.facility(),
            self.year,
            self.sequence,
            self.check_character()
        )
    }

    /// Parses exactly the bar code data content `=αppppyynnnnnnff`. Type 3 flags (60-96) must
    /// carry this DIN's check value.
    pub fn parse_barcode(s: &str) -> Result<(Din, Flags), CodeError> {
        let text = Text::new(s);
        let (start, end) = text.trimmed();
        parse_din_barcode(&text, start, end)
    }

    /// Parses any accepted form and returns the flags too ([`Flags::NONE`] when the form has
    /// none). Forms: bar code data content `=αppppyynnnnnnff`; the bare 13-character DIN;
    /// the DIN followed by its check character (`G123417654321A`); eye-readable groups
    /// separated by whitespace (`G1234 17 654321 A`, `G1234 17 654321 02 [A]`, any grouping
    /// of the 13 DIN characters). A check character, when given, must be right.
    pub fn parse_with_flags(s: &str) -> Result<(Din, Flags), CodeError> {
        let text = Text::new(s);
        let (start, end) = text.trimmed();
        parse_din(&text, start, end, false)
    }
}

fn parse_din_barcode(text: &Text, start: usize, end: usize) -> Result<(Din, Flags), CodeError> {
    if start == end {
        return Err(CodeError::Empty {
            kind: DIN,
            expected: DIN_BARCODE,
        });
    }
    if text.chars[start] != '=' {
        return Err(CodeError::MissingDataIdentifier {
            kind: DIN,
            input: text.shown(),
            identifier: "=",
            expected: DIN_BARCODE,
            position: start + 1,
        });
    }
    let n = end - start;
    if n != 16 {
        return Err(CodeError::Length {
            kind: DIN,
            input: text.shown(),
            found: n,
            expected: DIN_BARCODE,
            position: if n < 16 { end + 1 } else { start + 17 },
        });
    }
    let body = text.indexed(start + 1, start + 14);
    let din = Din::from_body(text, &body)?;
    let flag_chars = text.indexed(start + 14, end);
    check_layout(text, DIN, &flag_chars, &[FLAG_SLOT, FLAG_SLOT])?;
    let flags = Flags(ascii(&flag_chars));
    if let FlagKind::CheckValue(v) = flags.kind() {
        if v != din.check_value() {
            return Err(CodeError::FlagCheck {
                kind: DIN,
                input: text.shown(),
                found: flags.as_str().to_owned(),
                expected: Flags::check_value_of(&din).as_str().to_owned(),
                check: din.check_character(),
                position: start + 15,
            });
        }
    }
    Ok((din, flags))
}

/// Any DIN form; with `require_check`, keyed forms must carry the check character.
pub(super) fn parse_din(
    text: &Text,
    start: usize,
    end: usize,
    require_check: bool,
) -> Result<(Din, Flags), CodeError> {
    if start < end && text.chars[start] == '=' {
        return parse_din_barcode(text, start, end);
    }
    let keyed = split_keyed(
        text,
        start,
        end,
        &KeyedSpec {
            kind: DIN,
            body_len: 13,
            body_name: "the 13-character DIN",
            allow_flags: true,
            expected_forms: DIN_FORMS,
        },
    )?;
    let din = Din::from_body(text, &keyed.body)?;
    let flags = match keyed.flags {
        Some(chars) => {
            check_layout(text, DIN, &chars, &[FLAG_SLOT, FLAG_SLOT])?;
            Flags(ascii(&chars))
        }
        None => Flags::NONE,
    };
    match keyed.check {
        Some(check) => verify_check(text, DIN, check, din.check_character())?,
        None if require_check => {
            return Err(CodeError::MissingCheckCharacter {
                kind: DIN,
                input: text.shown(),
                position: keyed.body[12].0 + 2,
            })
        }
        None => {}
    }
    Ok((din, flags))
}

impl FromStr for Din {
    type Err = CodeError;

    /// Any form [`Din::parse_with_flags`] accepts; the flags are dropped.
    fn from_str(s: &str) -> Result<Din, CodeError> {
        Din::parse_with_flags(s).map(|(din, _)| din)
    }
}

impl fmt::Display for Din {
    /// The canonical 13 characters, e.g. `G123417654321`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{:02}{:06}", self.facility(), self.year, self.sequence)
    }
}

impl fmt::Debug for Din {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Din({self})")
    }
}

// ---------------------------------------------------------------------------------------------
// Product code
// ---------------------------------------------------------------------------------------------

/// The product type named by the first character α of a Product Description Code
/// (ST-001 §2.4.3). What a code *means* needs ICCBBA's licensed database; this is structure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProductCategory {
    /// `E`, `F`.
    Blood,
    /// `H`: MPHO with INN and/or USAN names.
    InnUsan,
    /// `M`: human milk, topical products of human origin.
    OtherTherapy,
    /// `N`.
    Organ,
    /// `P`.
    RegeneratedTissue,
    /// `R`.
    ReproductiveTissue,
    /// `S`: cellular therapy (CAR-T products are coded here).
    CellularTherapy,
    /// `T`.
    Tissue,
    /// `V`.
    OcularTissue,
    /// `W`.
    FecalMicrobiota,
    /// `X`: plasma derivatives, in vivo diagnostic MPHO.
    OtherBlood,
    /// `Y`: clinical trials products (separate ICCBBA database).
    ClinicalTrial,
    /// `A`-`D`: national or local/facility codes.
    NationalOrLocal,
    /// Any other letter: not assigned by ST-001.
    Unassigned,
}

/// An ISBT 128 Product Code (data structure 003), data content `αooootds`: the 5-character
/// Product Description Code `αoooo`, then `tds` (collection type and division code for
/// α = E, F, H, S, P, X0, YA-YZ; a three-digit division code for α = M, N, R, T, V, W).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProductCode {
    code: [u8; 8],
}

const PRODUCT_FORMS: &str = "=<αooootds (10) or the 8-character product code";

fn is_t(c: char) -> bool {
    c.is_ascii_alphanumeric()
}
fn is_d(c: char) -> bool {
    is_upper_alnum(c)
}
fn is_s(c: char) -> bool {
    matches!(c, 'a'..='z' | '0'..='9')
}

const PRODUCT_LAYOUT: [Slot; 8] = [
    (
        |c| c.is_ascii_uppercase(),
        "product description code",
        "a letter A-Z",
    ),
    (is_upper_alnum, "product description code", "A-Z or 0-9"),
    (is_upper_alnum, "product description code", "A-Z or 0-9"),
    (is_upper_alnum, "product description code", "A-Z or 0-9"),
    (is_upper_alnum, "product description code", "A-Z or 0-9"),
    (is_t, "collection type (t)", "A-Z, a-z or 0-9"),
    (is_d, "division code (d)", "A-Z or 0-9"),
    (is_s, "division code (s)", "a-z or 0-9"),
];

const TDS_DIGITS: [Slot; 3] = [(
    is_digit,
    "division code (tds)",
    "a digit 0-9 (α = M, N, R, T, V, W: three-digit division code)",
); 3];
const TDS_RESERVED: [Slot; 3] = [(
    |c| c == '0',
    "division code (tds)",
    "0 (α = X1-X9: tds is reserved and must be 000)",
); 3];

impl ProductCode {
    fn from_data(text: &Text, data: &[(usize, char)]) -> Result<ProductCode, CodeError> {
        check_layout(text, PRODUCT, data, &PRODUCT_LAYOUT)?;
        let alpha = data[0].1;
        if matches!(alpha, 'M' | 'N' | 'R' | 'T' | 'V' | 'W') {
            check_layout(text, PRODUCT, &data[5..], &TDS_DIGITS)?;
        }
        if alpha == 'X' && matches!(data[1].1, '1'..='9') {
            check_layout(text, PRODUCT, &data[5..], &TDS_RESERVED)?;
        }
        Ok(ProductCode { code: ascii(data) })
    }

    /// Parses exactly the bar code data content `=<αooootds`.
    pub fn parse_barcode(s: &str) -> Result<ProductCode, CodeError> {
        let text = Text::new(s);
        let (start, end) = text.trimmed();
        parse_product(&text, start, end, true)
    }

    /// The 5-character Product Description Code `αoooo`, e.g. `S1234`.
    pub fn description_code(&self) -> &str {
        ascii_str(&self.code[..5])
    }

    /// The product type of the first character.
    pub fn category(&self) -> ProductCategory {
        match self.code[0] {
            b'E' | b'F' => ProductCategory::Blood,
            b'H' => ProductCategory::InnUsan,
            b'M' => ProductCategory::OtherTherapy,
            b'N' => ProductCategory::Organ,
            b'P' => ProductCategory::RegeneratedTissue,
            b'R' => ProductCategory::ReproductiveTissue,
            b'S' => ProductCategory::CellularTherapy,
            b'T' => ProductCategory::Tissue,
            b'V' => ProductCategory::OcularTissue,
            b'W' => ProductCategory::FecalMicrobiota,
            b'X' => ProductCategory::OtherBlood,
            b'Y' => ProductCategory::ClinicalTrial,
            b'A'..=b'D' => ProductCategory::NationalOrLocal,
            _ => ProductCategory::Unassigned,
        }
    }

    /// Whether this is a cellular therapy product (α = `S`).
    pub fn is_cellular_therapy(&self) -> bool {
        self.category() == ProductCategory::CellularTherapy
    }

    /// Whether `t` is a collection type and `ds` the division code (α = E, F, H, S, P, X0,
    /// YA-YZ); otherwise `tds` is one division/pack code or nationally defined.
    fn has_collection_type(&self) -> bool {
        match self.code[0] {
            b'E' | b'F' | b'H' | b'S' | b'P' => true,
            b'X' => self.code[1] == b'0',
            b'Y' => self.code[1].is_ascii_uppercase(),
            _ => false,
        }
    }

    /// The collection type code `t` where α gives it one (E, F, H, S, P, X0, YA-YZ).
    pub fn collection_type(&self) -> Option<char> {
        self.has_collection_type().then(|| char::from(self.code[5]))
    }

    /// The division code: `ds` (2 characters) when there is a collection type, else `tds`.
    pub fn division(&self) -> &str {
        if self.has_collection_type() {
            ascii_str(&self.code[6..])
        } else {
            ascii_str(&self.code[5..])
        }
    }

    /// The bar code data content `=<αooootds`.
    pub fn to_barcode(&self) -> String {
        format!("=<{self}")
    }
}

pub(super) fn parse_product(
    text: &Text,
    start: usize,
    end: usize,
    barcode_only: bool,
) -> Result<ProductCode, CodeError> {
    let n = end - start;
    if n == 0 {
        return Err(CodeError::Empty {
            kind: PRODUCT,
            expected: PRODUCT_FORMS,
        });
    }
    let prefixed = text.chars[start] == '=';
    if prefixed || barcode_only {
        if !prefixed || text.chars.get(start + 1) != Some(&'<') {
            return Err(CodeError::MissingDataIdentifier {
                kind: PRODUCT,
                input: text.shown(),
                identifier: "=<",
                expected: "10 characters: '=<' and the 8-character product code",
                position: if prefixed { start + 2 } else { start + 1 },
            });
        }
        if n != 10 {
            return Err(CodeError::Length {
                kind: PRODUCT,
                input: text.shown(),
                found: n,
                expected: "10 characters: '=<' and the 8-character product code",
                position: if n < 10 { end + 1 } else { start + 11 },
            });
        }
        return ProductCode::from_data(text, &text.indexed(start + 2, end));
    }
    if n != 8 {
        return Err(CodeError::Length {
            kind: PRODUCT,
            input: text.shown(),
            found: n,
            expected: PRODUCT_FORMS,
            position: if n < 8 { end + 1 } else { start + 9 },
        });
    }
    ProductCode::from_data(text, &text.indexed(start, end))
}

impl FromStr for ProductCode {
    type Err = CodeError;

    /// `=<αooootds` or the bare 8 characters `αooootds`.
    fn from_str(s: &str) -> Result<ProductCode, CodeError> {
        let text = Text::new(s);
        let (start, end) = text.trimmed();
        parse_product(&text, start, end, false)
    }
}

impl fmt::Display for ProductCode {
    /// The 8-character data content, e.g. `S1234A00`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(ascii_str(&self.code))
    }
}

impl fmt::Debug for ProductCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProductCode({self})")
    }
}

// ---------------------------------------------------------------------------------------------
// Chain of Identity identifier
// ---------------------------------------------------------------------------------------------

/// An ISBT 128 Chain of Identity identifier (data structure 040, ST-001 §2.4.40), bar code
/// `&/CHαppppyynnnnnn`: the literal `CH`, the issuing organisation's FIN (5), the nominal
/// year of issue (2 digits) and a 6-character alphanumeric sequence. It carries no PHI.
/// The keyboard entry check character is required in eye-readable text (ST-001 Table 30);
/// it is computed over the 15-character data content, literal `CH` included.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CoiId {
    facility: [u8; 5],
    year: u8,
    sequence: [u8; 6],
}

const COI_FORMS: &str =
    "&/CHαppppyynnnnnn (17), the 15-character identifier, or it and its check character";

impl CoiId {
    fn from_body(text: &Text, body: &[(usize, char)]) -> Result<CoiId, CodeError> {
        check_layout(text, COI, body, &COI_LAYOUT)?;
        Ok(CoiId {
            facility: ascii(&body[2..7]),
            year: u8::try_from(digits_value(&body[7..9])).unwrap_or(0),
            sequence: ascii(&body[9..15]),
        })
    }

    /// A CoI identifier from its parts: FIN (5), year 0-99, sequence (6 of A-Z, 0-9).
    pub fn new(facility: &str, year: u8, sequence: &str) -> Result<CoiId, CodeError> {
        if year > 99 {
            return Err(CodeError::OutOfRange {
                kind: COI,
                input: format!("{facility} {year} {sequence}"),
                field: "year",
                expected: "00-99",
            });
        }
        let text = Text::new(&format!("CH{facility}{year:02}{sequence}"));
        let chars = text.indexed(0, text.chars.len());
        if chars.len() != 15 {
            return Err(CodeError::Length {
                kind: COI,
                input: text.shown(),
                found: chars.len(),
                expected: "15 characters: CH, FIN (5), year (2), sequence (6)",
                position: if chars.len() < 15 {
                    chars.len() + 1
                } else {
                    16
                },
            });
        }
        CoiId::from_body(&text, &chars)
    }

    /// Parses exactly the bar code data `&/CHαppppyynnnnnn`.
    pub fn parse_barcode(s: &str) -> Result<CoiId, CodeError> {
        let text = Text::new(s);
        let (start, end) = text.trimmed();
        parse_coi_barcode(&text, start, end)
    }

    /// The issuing organisation's FIN.
    pub fn facility(&self) -> &str {
        ascii_str(&self.facility)
    }

    /// The nominal year of issue (0-99).
    pub fn year(&self) -> u8 {
        self.year
    }

    /// The 6-character sequence.
    pub fn sequence(&self) -> &str {
        ascii_str(&self.sequence)
    }

    /// The keyboard entry check character over the 15-character data content.
    pub fn check_character(&self) -> char {
        let year = [b'0' + self.year / 10, b'0' + self.year % 10];
        check_char_of(check_of(&[b"CH", &self.facility, &year, &self.sequence]))
    }

    /// The bar code data `&/CHαppppyynnnnnn`.
    pub fn to_barcode(&self) -> String {
        format!("&/{self}")
    }

    /// Eye-readable text with the check character: `CH G1234 23 AB12CD K`.
    pub fn eye_readable(&self) -> String {
        format!(
            "CH {} {:02} {} {}",
            self.facility(),
            self.year,
            self.sequence(),
            self.check_character()
        )
    }
}

fn parse_coi_barcode(text: &Text, start: usize, end: usize) -> Result<CoiId, CodeError> {
    const EXPECTED: &str = "17 characters: '&/' and the 15-character identifier";
    let n = end - start;
    if n == 0 {
        return Err(CodeError::Empty {
            kind: COI,
            expected: EXPECTED,
        });
    }
    if text.chars[start] != '&' || text.chars.get(start + 1) != Some(&'/') {
        return Err(CodeError::MissingDataIdentifier {
            kind: COI,
            input: text.shown(),
            identifier: "&/",
            expected: EXPECTED,
            position: if text.chars[start] == '&' {
                start + 2
            } else {
                start + 1
            },
        });
    }
    if n != 17 {
        return Err(CodeError::Length {
            kind: COI,
            input: text.shown(),
            found: n,
            expected: EXPECTED,
            position: if n < 17 { end + 1 } else { start + 18 },
        });
    }
    CoiId::from_body(text, &text.indexed(start + 2, end))
}

/// Any CoI form; with `require_check`, keyed forms must carry the check character.
pub(super) fn parse_coi(
    text: &Text,
    start: usize,
    end: usize,
    require_check: bool,
) -> Result<CoiId, CodeError> {
    if start < end && text.chars[start] == '&' {
        return parse_coi_barcode(text, start, end);
    }
    let keyed = split_keyed(
        text,
        start,
        end,
        &KeyedSpec {
            kind: COI,
            body_len: 15,
            body_name: "the 15-character CoI identifier",
            allow_flags: false,
            expected_forms: COI_FORMS,
        },
    )?;
    let coi = CoiId::from_body(text, &keyed.body)?;
    match keyed.check {
        Some(check) => verify_check(text, COI, check, coi.check_character())?,
        None if require_check => {
            return Err(CodeError::MissingCheckCharacter {
                kind: COI,
                input: text.shown(),
                position: keyed.body[14].0 + 2,
            })
        }
        None => {}
    }
    Ok(coi)
}

impl FromStr for CoiId {
    type Err = CodeError;

    /// `&/CHαppppyynnnnnn`, the bare 15 characters, or keyed/eye-readable with the check
    /// character (`CHG123423AB12CDK`, `CH G1234 23 AB12CD K`).
    fn from_str(s: &str) -> Result<CoiId, CodeError> {
        let text = Text::new(s);
        let (start, end) = text.trimmed();
        parse_coi(&text, start, end, false)
    }
}

impl fmt::Display for CoiId {
    /// The 15-character data content, e.g. `CHG123423AB12CD`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CH{}{:02}{}",
            self.facility(),
            self.year,
            self.sequence()
        )
    }
}

impl fmt::Debug for CoiId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CoiId({self})")
    }
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
