//! The Donation Identification Number (data structure 001) and its flag characters.

use super::*;

// ---------------------------------------------------------------------------------------------
// Flags
// ---------------------------------------------------------------------------------------------

/// The two flag characters `ff` of a DIN bar code (ST-001 Table 3). Not part of the DIN.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Flags(pub(super) [u8; 2]);

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
    pub(super) facility: [u8; 5],
    pub(super) year: u8,
    pub(super) sequence: u32,
}

pub(super) const DIN_FORMS: &str =
    "=αppppyynnnnnnff (16), the 13-character DIN, or the DIN and its check character";
pub(super) const DIN_BARCODE: &str =
    "16 characters: '=', the 13-character DIN and 2 flag characters";

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

    pub(super) fn from_body(text: &Text, body: &[(usize, char)]) -> Result<Din, CodeError> {
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

pub(super) fn parse_din_barcode(
    text: &Text,
    start: usize,
    end: usize,
) -> Result<(Din, Flags), CodeError> {
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
pub(in crate::codes) fn parse_din(
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
