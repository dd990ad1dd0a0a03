//! The Chain of Identity identifier (data structure 040).

use super::*;

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
    pub(super) facility: [u8; 5],
    pub(super) year: u8,
    pub(super) sequence: [u8; 6],
}

pub(super) const COI_FORMS: &str =
    "&/CHαppppyynnnnnn (17), the 15-character identifier, or it and its check character";

impl CoiId {
    pub(super) fn from_body(text: &Text, body: &[(usize, char)]) -> Result<CoiId, CodeError> {
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

pub(super) fn parse_coi_barcode(text: &Text, start: usize, end: usize) -> Result<CoiId, CodeError> {
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
pub(in crate::codes) fn parse_coi(
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
