//! GS1 element strings for the application identifiers celltrail uses: (00) SSCC, (01) GTIN,
//! (10) batch, (17) expiry, (21) serial, (7003) expiry date and time, (7240) protocol ID,
//! (8003) GRAI, (8004) GIAI, (8018) GSRN. Parses and writes both the raw form (FNC1 as GS,
//! 0x1D; optional AIM symbology identifier `]C1`, `]d2`, `]Q3`, `]e0`) and the bracketed
//! human-readable form `(01)09506000134352(17)271231(10)LOT42`. Pure; no I/O.

use std::fmt;
use std::str::FromStr;

use super::{CodeError, Text};

const GS1: &str = "GS1";
/// ASCII group separator: how scanners transmit FNC1 inside a GS1 element string.
pub const GS: char = '\u{1d}';
/// AIM symbology identifiers that announce GS1 data (GS1-128, GS1 DataMatrix, GS1 QR Code,
/// GS1 DataBar).
pub const SYMBOLOGY_IDENTIFIERS: [&str; 4] = ["]C1", "]d2", "]Q3", "]e0"];
const KNOWN_AIS: &str = "00, 01, 10, 17, 21, 7003, 7240, 8003, 8004 or 8018";

/// A GS1 application identifier this crate understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Ai {
    /// (00) Serial Shipping Container Code: 18 digits, last one a mod-10 check digit.
    Sscc,
    /// (01) Global Trade Item Number: 14 digits, last one a check digit.
    Gtin,
    /// (10) Batch or lot number: 1-20 characters.
    Batch,
    /// (17) Expiration date YYMMDD (DD = 00: end of month).
    Expiry,
    /// (21) Serial number: 1-20 characters.
    Serial,
    /// (7003) Expiration date and time YYMMDDHHMM.
    ExpiryDateTime,
    /// (7240) Protocol ID: 1-20 characters.
    ProtocolId,
    /// (8003) Global Returnable Asset Identifier: `0`, 12 digits, check digit, then an
    /// optional serial of up to 16 characters (shippers, dewars).
    Grai,
    /// (8004) Global Individual Asset Identifier: 1-30 characters (data loggers, freezers,
    /// storage positions).
    Giai,
    /// (8018) Global Service Relation Number (recipient): 18 digits, last a check digit.
    Gsrn,
}

#[derive(Clone, Copy)]
enum Format {
    /// Exactly this many digits.
    Digits(usize),
    /// 1 to `max` characters of GS1 character set 82.
    Text(usize),
    /// 14 digits, then up to 16 characters.
    Grai,
}

impl Ai {
    /// Every supported AI.
    pub const ALL: [Ai; 10] = [
        Ai::Sscc,
        Ai::Gtin,
        Ai::Batch,
        Ai::Expiry,
        Ai::Serial,
        Ai::ExpiryDateTime,
        Ai::ProtocolId,
        Ai::Grai,
        Ai::Giai,
        Ai::Gsrn,
    ];

    /// The digits of the AI, e.g. `"01"`.
    pub fn code(self) -> &'static str {
        match self {
            Ai::Sscc => "00",
            Ai::Gtin => "01",
            Ai::Batch => "10",
            Ai::Expiry => "17",
            Ai::Serial => "21",
            Ai::ExpiryDateTime => "7003",
            Ai::ProtocolId => "7240",
            Ai::Grai => "8003",
            Ai::Giai => "8004",
            Ai::Gsrn => "8018",
        }
    }

    /// The AI with these digits, if supported.
    pub fn from_code(code: &str) -> Option<Ai> {
        Ai::ALL.into_iter().find(|ai| ai.code() == code)
    }

    /// What the AI carries, in words.
    pub fn name(self) -> &'static str {
        match self {
            Ai::Sscc => "SSCC",
            Ai::Gtin => "GTIN",
            Ai::Batch => "batch/lot",
            Ai::Expiry => "expiration date",
            Ai::Serial => "serial number",
            Ai::ExpiryDateTime => "expiration date and time",
            Ai::ProtocolId => "protocol ID",
            Ai::Grai => "GRAI",
            Ai::Giai => "GIAI",
            Ai::Gsrn => "GSRN",
        }
    }

    /// Field label used in error messages.
    fn field(self) -> &'static str {
        match self {
            Ai::Sscc => "AI (00) SSCC",
            Ai::Gtin => "AI (01) GTIN",
            Ai::Batch => "AI (10) batch/lot",
            Ai::Expiry => "AI (17) expiration date",
            Ai::Serial => "AI (21) serial number",
            Ai::ExpiryDateTime => "AI (7003) expiration date and time",
            Ai::ProtocolId => "AI (7240) protocol ID",
            Ai::Grai => "AI (8003) GRAI",
            Ai::Giai => "AI (8004) GIAI",
            Ai::Gsrn => "AI (8018) GSRN",
        }
    }

    /// Whether the AI is in GS1's table of predefined lengths, so no FNC1 follows it in the
    /// raw form. (7003 and 8018 are fixed length but not predefined: FNC1 follows them.)
    pub fn predefined_length(self) -> bool {
        matches!(self, Ai::Sscc | Ai::Gtin | Ai::Expiry)
    }

    fn format(self) -> Format {
        match self {
            Ai::Sscc | Ai::Gsrn => Format::Digits(18),
            Ai::Gtin => Format::Digits(14),
            Ai::Expiry => Format::Digits(6),
            Ai::ExpiryDateTime => Format::Digits(10),
            Ai::Batch | Ai::Serial | Ai::ProtocolId => Format::Text(20),
            Ai::Giai => Format::Text(30),
            Ai::Grai => Format::Grai,
        }
    }
}

impl fmt::Display for Ai {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({})", self.code())
    }
}

/// GS1 mod-10 check digit of `data` (the digits before the check digit): weights 3, 1, 3, …
/// from the rightmost digit. `None` if `data` holds a non-digit.
pub fn check_digit(data: &str) -> Option<char> {
    let mut sum = 0u32;
    for (i, c) in data.chars().rev().enumerate() {
        let d = c.to_digit(10)?;
        sum += if i % 2 == 0 { 3 * d } else { d };
    }
    char::from_digit((10 - sum % 10) % 10, 10)
}

/// Whether `key` (GTIN, SSCC, GSRN, …) is all digits and ends in its correct check digit.
pub fn has_valid_check_digit(key: &str) -> bool {
    match key.char_indices().last() {
        Some((i, last)) if i > 0 => check_digit(&key[..i]) == Some(last),
        _ => false,
    }
}

/// GS1 AI encodable character set 82.
fn is_cset82(c: char) -> bool {
    matches!(c,
        '!' | '"' | '%' | '&' | '\'' | '(' | ')' | '*' | '+' | ',' | '-' | '.' | '/'
        | '0'..='9' | ':' | ';' | '<' | '=' | '>' | '?' | 'A'..='Z' | '_' | 'a'..='z')
}

/// A date from AI (17): two-digit year, month, day (0 = the last day of the month).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Gs1Date {
    /// YY. GS1 resolves the century with a sliding window around the current year.
    pub year: u8,
    /// 1-12.
    pub month: u8,
    /// 1-31, or 0 meaning the last day of the month (AI 17 only).
    pub day: u8,
}

/// A date and time from AI (7003).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Gs1DateTime {
    /// The date (day is never 0 here).
    pub date: Gs1Date,
    /// 0-23.
    pub hour: u8,
    /// 0-59.
    pub minute: u8,
}

/// A GRAI from AI (8003): the 14-digit asset type key and the optional serial component.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Grai<'a> {
    /// `0`, GS1 company prefix and asset type, check digit.
    pub asset: &'a str,
    /// The serial component, if the asset is individually identified.
    pub serial: Option<&'a str>,
}

/// A parsed GS1 element string: AIs with their values, in the order given. Every value is
/// valid for its AI (length, character set, check digit, date) and no AI appears twice.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Gs1 {
    elements: Vec<(Ai, String)>,
}

fn two(s: &str, at: usize) -> u8 {
    s.as_bytes()[at..at + 2]
        .iter()
        .fold(0, |n, b| n * 10 + (b - b'0'))
}

fn days_in_month(year: u8, month: u8) -> u8 {
    match month {
        2 if year.is_multiple_of(4) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn value_error(
    text: &Text,
    ai: Ai,
    problem: String,
    expected: impl Into<String>,
    idx: usize,
) -> CodeError {
    CodeError::Value {
        kind: GS1,
        input: text.shown(),
        ai: ai.code(),
        problem,
        expected: expected.into(),
        position: idx + 1,
    }
}

/// Checks one value given as (index in `text`, character) pairs; `end` is the index just past
/// it. Returns the value as a string.
fn validate(text: &Text, ai: Ai, value: &[(usize, char)], end: usize) -> Result<String, CodeError> {
    let s: String = value.iter().map(|&(_, c)| c).collect();
    let at = |i: usize| value.get(i).map_or(end, |&(idx, _)| idx);
    let digits = |chars: &[(usize, char)]| -> Result<(), CodeError> {
        match chars.iter().find(|(_, c)| !c.is_ascii_digit()) {
            Some(&(idx, _)) => Err(text.character(GS1, idx, ai.field(), "a digit 0-9")),
            None => Ok(()),
        }
    };
    let check = |chars: &[(usize, char)]| -> Result<(), CodeError> {
        let Some((&(idx, found), data)) = chars.split_last() else {
            return Ok(());
        };
        let data: String = data.iter().map(|&(_, c)| c).collect();
        match check_digit(&data) {
            Some(expected) if expected != found => Err(CodeError::CheckDigit {
                kind: GS1,
                input: text.shown(),
                field: ai.field(),
                found,
                expected,
                position: idx + 1,
            }),
            _ => Ok(()),
        }
    };
    let cset82 = |chars: &[(usize, char)]| -> Result<(), CodeError> {
        match chars.iter().find(|(_, c)| !is_cset82(*c)) {
            Some(&(idx, _)) => Err(text.character(
                GS1,
                idx,
                ai.field(),
                "a GS1 character set 82 character (A-Z a-z 0-9 ! \" % & ' ( ) * + , - . / : ; < = > ? _)",
            )),
            None => Ok(()),
        }
    };
    match ai.format() {
        Format::Digits(n) => {
            if value.len() != n {
                return Err(value_error(
                    text,
                    ai,
                    format!("value has {} characters", value.len()),
                    format!("{n} digits"),
                    at(n.min(value.len())),
                ));
            }
            digits(value)?;
            match ai {
                Ai::Sscc | Ai::Gtin | Ai::Gsrn => check(value)?,
                Ai::Expiry | Ai::ExpiryDateTime => validate_date(text, ai, &s, value)?,
                _ => {}
            }
        }
        Format::Text(max) => {
            if value.is_empty() {
                return Err(value_error(
                    text,
                    ai,
                    "value is empty".into(),
                    format!("1 to {max} characters"),
                    end,
                ));
            }
            if value.len() > max {
                return Err(value_error(
                    text,
                    ai,
                    format!("value has {} characters", value.len()),
                    format!("at most {max} characters"),
                    at(max),
                ));
            }
            cset82(value)?;
        }
        Format::Grai => {
            if value.len() < 14 || value.len() > 30 {
                return Err(value_error(
                    text,
                    ai,
                    format!("value has {} characters", value.len()),
                    "14 digits then an optional serial of at most 16 characters",
                    at(if value.len() < 14 { value.len() } else { 30 }),
                ));
            }
            let (key, serial) = value.split_at(14);
            digits(key)?;
            if key[0].1 != '0' {
                return Err(text.character(GS1, key[0].0, ai.field(), "0 (the GRAI filler digit)"));
            }
            check(key)?;
            cset82(serial)?;
        }
    }
    Ok(s)
}

fn validate_date(text: &Text, ai: Ai, s: &str, value: &[(usize, char)]) -> Result<(), CodeError> {
    let (yy, mm, dd) = (two(s, 0), two(s, 2), two(s, 4));
    if !(1..=12).contains(&mm) {
        return Err(value_error(
            text,
            ai,
            format!("month {mm:02} does not exist"),
            "a month 01-12",
            value[2].0,
        ));
    }
    let min_day = if ai == Ai::Expiry { 0 } else { 1 };
    if dd < min_day || dd > days_in_month(yy, mm) {
        return Err(value_error(
            text,
            ai,
            format!("day {dd:02} does not exist in month {mm:02} of year {yy:02}"),
            if ai == Ai::Expiry {
                "a day of that month, or 00 for its last day"
            } else {
                "a day of that month"
            },
            value[4].0,
        ));
    }
    if ai == Ai::ExpiryDateTime {
        let (hh, mi) = (two(s, 6), two(s, 8));
        if hh > 23 {
            return Err(value_error(
                text,
                ai,
                format!("hour {hh:02} does not exist"),
                "an hour 00-23",
                value[6].0,
            ));
        }
        if mi > 59 {
            return Err(value_error(
                text,
                ai,
                format!("minute {mi:02} does not exist"),
                "a minute 00-59",
                value[8].0,
            ));
        }
    }
    Ok(())
}

/// Whether the characters at `i` start one of the supported AIs; returns it.
fn ai_at(chars: &[char], i: usize, end: usize) -> Option<Ai> {
    [2, 4].into_iter().find_map(|n| {
        let code: String = chars.get(i..(i + n).min(end))?.iter().collect();
        if code.len() == n {
            Ai::from_code(&code)
        } else {
            None
        }
    })
}

/// Whether a line (without symbology identifier) starts with a supported AI.
pub(super) fn starts_with_known_ai(text: &Text, start: usize, end: usize) -> bool {
    ai_at(&text.chars, start, end).is_some()
}

fn unknown_ai(text: &Text, i: usize, end: usize) -> CodeError {
    let found: String = text.chars[i..end]
        .iter()
        .take_while(|c| c.is_ascii_digit())
        .take(4)
        .collect();
    let found = if found.is_empty() {
        text.chars[i].to_string()
    } else {
        found
    };
    CodeError::UnknownAi {
        kind: GS1,
        input: text.shown(),
        found,
        expected: KNOWN_AIS,
        position: i + 1,
    }
}

fn push_element(
    text: &Text,
    elements: &mut Vec<(Ai, String)>,
    ai: Ai,
    value: String,
    ai_idx: usize,
) -> Result<(), CodeError> {
    if elements.iter().any(|(a, _)| *a == ai) {
        return Err(CodeError::DuplicateAi {
            kind: GS1,
            input: text.shown(),
            ai: ai.code(),
            position: ai_idx + 1,
        });
    }
    elements.push((ai, value));
    Ok(())
}

/// Raw form: optional GS1 symbology identifier, optional leading FNC1 (GS), then AI + value
/// pairs; a GS ends every value that is not of predefined length (and may follow any value).
pub(super) fn parse_raw(text: &Text, start: usize, end: usize) -> Result<Gs1, CodeError> {
    let chars = &text.chars;
    let mut i = start;
    if i < end && chars[i] == ']' {
        let id: String = chars[i..(i + 3).min(end)].iter().collect();
        if !SYMBOLOGY_IDENTIFIERS.contains(&id.as_str()) {
            return Err(CodeError::Symbology {
                kind: GS1,
                input: text.shown(),
                found: id,
                position: i + 1,
            });
        }
        i += 3;
    }
    if i < end && chars[i] == GS {
        i += 1;
    }
    if i == end {
        return Err(CodeError::Empty {
            kind: GS1,
            expected: "at least one AI and its value",
        });
    }
    let mut elements = Vec::new();
    while i < end {
        let Some(ai) = ai_at(chars, i, end) else {
            return Err(unknown_ai(text, i, end));
        };
        let ai_idx = i;
        i += ai.code().len();
        let limit = match ai.format() {
            Format::Digits(n) => (i + n).min(end),
            _ => end,
        };
        let value: Vec<(usize, char)> = (i..limit)
            .map(|j| (j, chars[j]))
            .take_while(|&(_, c)| c != GS)
            .collect();
        i += value.len();
        let value = validate(text, ai, &value, i)?;
        push_element(text, &mut elements, ai, value, ai_idx)?;
        if i < end && chars[i] == GS {
            i += 1;
        }
    }
    Ok(Gs1 { elements })
}

/// Bracketed form: `(AI)value` pairs; a literal `(` inside a value is written `\(`.
pub(super) fn parse_bracketed(text: &Text, start: usize, end: usize) -> Result<Gs1, CodeError> {
    let chars = &text.chars;
    if start == end {
        return Err(CodeError::Empty {
            kind: GS1,
            expected: "(AI)value pairs",
        });
    }
    let mut elements = Vec::new();
    let mut i = start;
    while i < end {
        if chars[i] != '(' {
            return Err(text.character(
                GS1,
                i,
                "bracketed element string",
                "'(' opening an application identifier",
            ));
        }
        let ai_start = i + 1;
        let mut j = ai_start;
        while j < end && chars[j].is_ascii_digit() && j - ai_start < 4 {
            j += 1;
        }
        if j == end || chars[j] != ')' {
            let code: String = chars[ai_start..j].iter().collect();
            if Ai::from_code(&code).is_none() {
                return Err(unknown_ai(text, ai_start.min(end - 1), end));
            }
            return Err(CodeError::Missing {
                kind: GS1,
                input: text.shown(),
                expected: "')' closing the application identifier",
                position: j + 1,
            });
        }
        let code: String = chars[ai_start..j].iter().collect();
        let Some(ai) = Ai::from_code(&code) else {
            return Err(unknown_ai(text, ai_start, end));
        };
        let mut k = j + 1;
        let mut value = Vec::new();
        while k < end && chars[k] != '(' {
            if chars[k] == '\\' && chars.get(k + 1) == Some(&'(') && k + 1 < end {
                value.push((k + 1, '('));
                k += 2;
            } else {
                value.push((k, chars[k]));
                k += 1;
            }
        }
        let value = validate(text, ai, &value, k)?;
        push_element(text, &mut elements, ai, value, ai_start)?;
        i = k;
    }
    Ok(Gs1 { elements })
}

impl Gs1 {
    /// Builds and validates an element string from AI/value pairs. Errors name the offending
    /// value and the position inside it.
    pub fn new(elements: Vec<(Ai, String)>) -> Result<Gs1, CodeError> {
        if elements.is_empty() {
            return Err(CodeError::Empty {
                kind: GS1,
                expected: "at least one AI and its value",
            });
        }
        let mut checked: Vec<(Ai, String)> = Vec::with_capacity(elements.len());
        let mut offset = 0;
        for (ai, value) in elements {
            let text = Text::new(&value);
            let chars = text.indexed(0, text.chars.len());
            let value = validate(&text, ai, &chars, chars.len())?;
            if checked.iter().any(|(a, _)| *a == ai) {
                let mut shown = Gs1 { elements: checked }.to_bracketed();
                shown.push_str(&format!("({}){value}", ai.code()));
                return Err(CodeError::DuplicateAi {
                    kind: GS1,
                    input: Text::new(&shown).shown(),
                    ai: ai.code(),
                    position: offset + 2,
                });
            }
            offset += 2 + ai.code().len() + value.chars().count() + value.matches('(').count();
            checked.push((ai, value));
        }
        Ok(Gs1 { elements: checked })
    }

    /// Parses the raw form (GS separators, optional `]C1`/`]d2`/`]Q3`/`]e0` prefix).
    pub fn parse_raw(s: &str) -> Result<Gs1, CodeError> {
        let text = Text::new(s);
        let (start, end) = text.trimmed();
        parse_raw(&text, start, end)
    }

    /// Parses the bracketed human-readable form `(01)09506000134352(10)LOT42`.
    pub fn parse_bracketed(s: &str) -> Result<Gs1, CodeError> {
        let text = Text::new(s);
        let (start, end) = text.trimmed();
        parse_bracketed(&text, start, end)
    }

    /// The elements in order.
    pub fn elements(&self) -> &[(Ai, String)] {
        &self.elements
    }

    /// The value of `ai`, if present.
    pub fn get(&self, ai: Ai) -> Option<&str> {
        self.elements
            .iter()
            .find(|(a, _)| *a == ai)
            .map(|(_, v)| v.as_str())
    }

    /// The first identification key in element order: SSCC, GTIN, GRAI, GIAI or GSRN. This is
    /// what the element string identifies (a shipper's GRAI, a data logger's GIAI, …).
    pub fn primary_key(&self) -> Option<Ai> {
        self.elements
            .iter()
            .map(|(ai, _)| *ai)
            .find(|ai| matches!(ai, Ai::Sscc | Ai::Gtin | Ai::Grai | Ai::Giai | Ai::Gsrn))
    }

    /// (00) SSCC, 18 digits.
    pub fn sscc(&self) -> Option<&str> {
        self.get(Ai::Sscc)
    }

    /// (01) GTIN-14.
    pub fn gtin(&self) -> Option<&str> {
        self.get(Ai::Gtin)
    }

    /// (10) batch or lot number.
    pub fn batch(&self) -> Option<&str> {
        self.get(Ai::Batch)
    }

    /// (21) serial number.
    pub fn serial(&self) -> Option<&str> {
        self.get(Ai::Serial)
    }

    /// (7240) protocol ID.
    pub fn protocol_id(&self) -> Option<&str> {
        self.get(Ai::ProtocolId)
    }

    /// (8004) GIAI.
    pub fn giai(&self) -> Option<&str> {
        self.get(Ai::Giai)
    }

    /// (8018) GSRN, 18 digits.
    pub fn gsrn(&self) -> Option<&str> {
        self.get(Ai::Gsrn)
    }

    /// (8003) GRAI split into asset key and serial.
    pub fn grai(&self) -> Option<Grai<'_>> {
        self.get(Ai::Grai).map(|v| {
            let (asset, serial) = v.split_at(14);
            Grai {
                asset,
                serial: (!serial.is_empty()).then_some(serial),
            }
        })
    }

    /// (17) expiration date.
    pub fn expiry(&self) -> Option<Gs1Date> {
        self.get(Ai::Expiry).map(|v| Gs1Date {
            year: two(v, 0),
            month: two(v, 2),
            day: two(v, 4),
        })
    }

    /// (7003) expiration date and time.
    pub fn expiry_date_time(&self) -> Option<Gs1DateTime> {
        self.get(Ai::ExpiryDateTime).map(|v| Gs1DateTime {
            date: Gs1Date {
                year: two(v, 0),
                month: two(v, 2),
                day: two(v, 4),
            },
            hour: two(v, 6),
            minute: two(v, 8),
        })
    }

    /// The bracketed human-readable form; `(` inside a value is written `\(`.
    pub fn to_bracketed(&self) -> String {
        let mut out = String::new();
        for (ai, value) in &self.elements {
            out.push('(');
            out.push_str(ai.code());
            out.push(')');
            out.push_str(&value.replace('(', "\\("));
        }
        out
    }

    /// The raw form without symbology identifier: a GS after every value that is not of
    /// predefined length, except the last.
    pub fn to_raw(&self) -> String {
        let mut out = String::new();
        for (i, (ai, value)) in self.elements.iter().enumerate() {
            out.push_str(ai.code());
            out.push_str(value);
            if i + 1 < self.elements.len() && !ai.predefined_length() {
                out.push(GS);
            }
        }
        out
    }
}

impl FromStr for Gs1 {
    type Err = CodeError;

    /// Bracketed if it starts with `(`, raw otherwise.
    fn from_str(s: &str) -> Result<Gs1, CodeError> {
        let text = Text::new(s);
        let (start, end) = text.trimmed();
        if start < end && text.chars[start] == '(' {
            parse_bracketed(&text, start, end)
        } else {
            parse_raw(&text, start, end)
        }
    }
}

impl fmt::Display for Gs1 {
    /// The bracketed form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_bracketed())
    }
}

impl fmt::Debug for Gs1 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Gs1({})", self.to_bracketed())
    }
}

#[cfg(test)]
mod tests {
    use super::super::{classify, Scan};
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;
    use std::collections::BTreeMap;

    #[derive(Deserialize)]
    struct Vectors {
        gs1_check_digit: CheckDigitVectors,
        gs1_element_strings: Vec<ElementCase>,
    }

    #[derive(Deserialize)]
    struct CheckDigitVectors {
        cases: Vec<CheckDigitCase>,
    }

    #[derive(Deserialize)]
    struct CheckDigitCase {
        key: String,
        kind: String,
        valid: bool,
    }

    #[derive(Deserialize)]
    struct ElementCase {
        bracketed: Option<String>,
        raw: Option<String>,
        fields: BTreeMap<String, String>,
    }

    fn vectors() -> Vectors {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/isbt128.json");
        let json = std::fs::read_to_string(path).expect("read tests/vectors/isbt128.json");
        serde_json::from_str(&json).expect("parse isbt128.json")
    }

    fn fields(gs1: &Gs1) -> BTreeMap<String, String> {
        gs1.elements()
            .iter()
            .map(|(ai, v)| (ai.code().to_owned(), v.clone()))
            .collect()
    }

    #[test]
    fn check_digit_matches_every_vector_case() {
        let cases = vectors().gs1_check_digit.cases;
        assert!(cases.iter().any(|c| c.valid) && cases.iter().any(|c| !c.valid));
        for case in cases {
            assert_eq!(has_valid_check_digit(&case.key), case.valid, "{}", case.key);
            let ai = match case.kind.as_str() {
                "GTIN-14" => Ai::Gtin,
                "SSCC" => Ai::Sscc,
                other => panic!("vector kind {other} not covered"),
            };
            let bracketed = format!("({}){}", ai.code(), case.key);
            match Gs1::parse_bracketed(&bracketed) {
                Ok(gs1) => {
                    assert!(case.valid, "{bracketed} accepted");
                    assert_eq!(gs1.get(ai), Some(case.key.as_str()));
                }
                Err(err) => {
                    assert!(!case.valid, "{bracketed}: {err}");
                    let last = case.key.chars().last().expect("non-empty key");
                    let CodeError::CheckDigit {
                        found,
                        expected,
                        position,
                        ..
                    } = err
                    else {
                        panic!("{bracketed}: {err}");
                    };
                    assert_eq!(found, last);
                    assert_eq!(
                        position,
                        bracketed.chars().count(),
                        "points at the check digit"
                    );
                    let fixed = format!("{}{expected}", &case.key[..case.key.len() - 1]);
                    assert!(has_valid_check_digit(&fixed), "suggested digit is right");
                }
            }
        }
    }

    #[test]
    fn element_string_vectors_give_expected_fields_and_round_trip() {
        let cases = vectors().gs1_element_strings;
        assert!(cases.iter().any(|c| c.raw.is_some()));
        for case in cases {
            if let Some(b) = &case.bracketed {
                let gs1 = Gs1::parse_bracketed(b).expect(b);
                assert_eq!(fields(&gs1), case.fields, "{b}");
                assert_eq!(&gs1.to_bracketed(), b, "bracketed round trip");
                assert_eq!(
                    Gs1::parse_raw(&gs1.to_raw()),
                    Ok(gs1.clone()),
                    "raw round trip"
                );
                assert_eq!(classify(b), Scan::Gs1(gs1));
            }
            if let Some(r) = &case.raw {
                let gs1 = Gs1::parse_raw(r).expect(r);
                assert_eq!(fields(&gs1), case.fields, "{r:?}");
                assert_eq!(format!("]d2{}", gs1.to_raw()), *r, "raw round trip");
                assert_eq!(r.parse::<Gs1>(), Ok(gs1.clone()));
                assert_eq!(classify(&format!("{r}\r\n")), Scan::Gs1(gs1));
            }
        }
    }

    #[test]
    fn typed_getters_decode_the_vector_element_string() {
        let gs1: Gs1 = "(01)09506000134352(17)271231(10)LOT42(21)SER001"
            .parse()
            .unwrap();
        assert_eq!(gs1.gtin(), Some("09506000134352"));
        assert_eq!(gs1.batch(), Some("LOT42"));
        assert_eq!(gs1.serial(), Some("SER001"));
        assert_eq!(
            gs1.expiry(),
            Some(Gs1Date {
                year: 27,
                month: 12,
                day: 31
            })
        );
        assert_eq!(gs1.primary_key(), Some(Ai::Gtin));
        assert_eq!(gs1.sscc(), None);
    }

    #[test]
    fn shipper_grai_splits_asset_and_serial() {
        // Check digit 2 computed independently (Python GS1 mod 10).
        let gs1 = Gs1::parse_raw("]C18003095060001343520042\u{1d}7003271231235").unwrap_err();
        assert!(matches!(gs1, CodeError::Value { ai: "7003", .. }), "{gs1}");
        let gs1 = Gs1::parse_raw("]C18003095060001343520042\u{1d}70032712312359").unwrap();
        assert_eq!(
            gs1.grai(),
            Some(Grai {
                asset: "09506000134352",
                serial: Some("0042")
            })
        );
        let dt = gs1.expiry_date_time().unwrap();
        assert_eq!(
            (dt.date.month, dt.date.day, dt.hour, dt.minute),
            (12, 31, 23, 59)
        );
        assert_eq!(gs1.primary_key(), Some(Ai::Grai));
        assert_eq!(gs1.to_raw(), "8003095060001343520042\u{1d}70032712312359");
    }

    #[test]
    fn rejects_grai_without_filler_zero() {
        let err = Gs1::parse_bracketed("(8003)19506000134352").unwrap_err();
        assert!(
            matches!(
                err,
                CodeError::Character {
                    found: '1',
                    position: 7,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn gsrn_needs_eighteen_digits_and_check_digit() {
        assert!(Gs1::parse_bracketed("(8018)950600013435000004").is_ok());
        let err = Gs1::parse_bracketed("(8018)950600013435000005").unwrap_err();
        assert!(
            matches!(
                err,
                CodeError::CheckDigit {
                    expected: '4',
                    position: 24,
                    ..
                }
            ),
            "{err}"
        );
        let err = Gs1::parse_bracketed("(8018)95060001343500000").unwrap_err();
        assert!(
            matches!(
                err,
                CodeError::Value {
                    ai: "8018",
                    position: 24,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn rejects_unknown_application_identifier_with_its_position() {
        let err = Gs1::parse_raw("0109506000134352991234").unwrap_err();
        assert_eq!(
            err.to_string(),
            "GS1 0109506000134352991234: unknown application identifier \"9912\", \
             expected one of 00, 01, 10, 17, 21, 7003, 7240, 8003, 8004 or 8018 (position 17)"
        );
        let err = Gs1::parse_bracketed("(01)09506000134352(99)X").unwrap_err();
        assert!(
            matches!(err, CodeError::UnknownAi { position: 20, .. }),
            "{err}"
        );
    }

    #[test]
    fn rejects_repeated_ai() {
        let err = Gs1::parse_bracketed("(10)A(21)B(10)C").unwrap_err();
        assert!(
            matches!(
                err,
                CodeError::DuplicateAi {
                    ai: "10",
                    position: 12,
                    ..
                }
            ),
            "{err}"
        );
        let err = Gs1::new(vec![(Ai::Batch, "A".into()), (Ai::Batch, "B".into())]).unwrap_err();
        assert!(
            matches!(err, CodeError::DuplicateAi { ai: "10", .. }),
            "{err}"
        );
    }

    #[test]
    fn rejects_impossible_expiry_dates_but_accepts_day_00() {
        assert_eq!(
            Gs1::parse_bracketed("(17)270200")
                .unwrap()
                .expiry()
                .map(|d| d.day),
            Some(0)
        );
        assert!(Gs1::parse_bracketed("(17)280229").is_ok(), "leap year");
        for (input, position) in [("(17)271301", 7), ("(17)270230", 9), ("(17)270229", 9)] {
            let err = Gs1::parse_bracketed(input).unwrap_err();
            assert!(matches!(err, CodeError::Value { ai: "17", .. }), "{err}");
            assert_eq!(err.position(), Some(position), "{input}");
        }
        let err = Gs1::parse_bracketed("(7003)2712312400").unwrap_err();
        assert_eq!(err.position(), Some(13));
        let err = Gs1::parse_bracketed("(7003)2712002300").unwrap_err();
        assert_eq!(err.position(), Some(11), "7003 has no day 00");
    }

    #[test]
    fn rejects_variable_field_longer_than_its_maximum() {
        let long = "A".repeat(21);
        let err = Gs1::parse_raw(&format!("10{long}")).unwrap_err();
        assert!(
            matches!(
                err,
                CodeError::Value {
                    ai: "10",
                    position: 23,
                    ..
                }
            ),
            "{err}"
        );
        assert!(Gs1::parse_raw(&format!("8004{}", "X".repeat(30))).is_ok());
        let err = Gs1::parse_raw(&format!("8004{}", "X".repeat(31))).unwrap_err();
        assert_eq!(err.position(), Some(35));
    }

    #[test]
    fn rejects_characters_outside_cset82() {
        let err = Gs1::parse_bracketed("(10)LOT 42").unwrap_err();
        assert!(
            matches!(
                err,
                CodeError::Character {
                    found: ' ',
                    position: 8,
                    ..
                }
            ),
            "{err}"
        );
        let err = Gs1::parse_raw("10LOT\u{1d}\u{1d}21X").unwrap_err();
        assert!(
            matches!(err, CodeError::UnknownAi { position: 7, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("10LOT␝␝21X"), "{err}");
    }

    #[test]
    fn rejects_non_gs1_symbology_identifier() {
        let err = Gs1::parse_raw("]C00109506000134352").unwrap_err();
        assert!(
            matches!(err, CodeError::Symbology { position: 1, .. }),
            "{err}"
        );
    }

    #[test]
    fn accepts_leading_fnc1_and_every_gs1_symbology_identifier() {
        let want = Gs1::parse_bracketed("(01)09506000134352(10)X1").unwrap();
        for prefix in ["", "\u{1d}", "]C1", "]d2", "]Q3", "]e0", "]C1\u{1d}"] {
            let line = format!("{prefix}0109506000134352\u{1d}10X1");
            assert_eq!(Gs1::parse_raw(&line), Ok(want.clone()), "{line:?}");
        }
    }

    #[test]
    fn fixed_length_ais_without_fnc1_are_followed_by_gs_in_raw_form() {
        let gs1 = Gs1::new(vec![
            (Ai::Gsrn, "950600013435000004".into()),
            (Ai::Gtin, "09506000134352".into()),
            (Ai::Serial, "7".into()),
        ])
        .unwrap();
        assert_eq!(
            gs1.to_raw(),
            "8018950600013435000004\u{1d}0109506000134352217"
        );
        // And without the GS the 18 digits are still read as one fixed-length value.
        assert_eq!(Gs1::parse_raw(&gs1.to_raw().replace('\u{1d}', "")), Ok(gs1));
    }

    #[test]
    fn bracketed_form_escapes_parentheses_in_values() {
        let gs1 = Gs1::new(vec![(Ai::Batch, "A(B)".into()), (Ai::Serial, "(".into())]).unwrap();
        assert_eq!(gs1.to_bracketed(), "(10)A\\(B)(21)\\(");
        assert_eq!(Gs1::parse_bracketed(&gs1.to_bracketed()), Ok(gs1));
    }

    #[test]
    fn new_names_the_bad_value_and_position() {
        let err = Gs1::new(vec![(Ai::Gtin, "09506000134353".into())]).unwrap_err();
        assert!(
            matches!(
                err,
                CodeError::CheckDigit {
                    expected: '2',
                    position: 14,
                    ..
                }
            ),
            "{err}"
        );
        assert!(Gs1::new(vec![]).is_err());
        assert!(Gs1::new(vec![(Ai::Batch, "a\\".into())]).is_err());
    }

    // ---- property tests -------------------------------------------------------------------

    const CSET82: &str =
        "!\"%&'()*+,-./0123456789:;<=>?ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz";

    fn text(max: usize) -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop::sample::select(CSET82.chars().collect::<Vec<_>>()),
            1..=max,
        )
        .prop_map(|v| v.into_iter().collect())
    }

    fn with_check(digits: &str) -> String {
        format!("{digits}{}", check_digit(digits).expect("digits"))
    }

    fn value(ai: Ai) -> BoxedStrategy<String> {
        let yymm = (0u8..100, 1u8..=12);
        match ai {
            Ai::Sscc | Ai::Gsrn => "[0-9]{17}".prop_map(|d| with_check(&d)).boxed(),
            Ai::Gtin => "[0-9]{13}".prop_map(|d| with_check(&d)).boxed(),
            Ai::Batch | Ai::Serial | Ai::ProtocolId => text(20).boxed(),
            Ai::Giai => text(30).boxed(),
            Ai::Expiry => (yymm, 0u8..=28)
                .prop_map(|((y, m), d)| format!("{y:02}{m:02}{d:02}"))
                .boxed(),
            Ai::ExpiryDateTime => (yymm, 1u8..=28, 0u8..24, 0u8..60)
                .prop_map(|((y, m), d, h, mi)| format!("{y:02}{m:02}{d:02}{h:02}{mi:02}"))
                .boxed(),
            Ai::Grai => ("[0-9]{12}", prop::option::of(text(16)))
                .prop_map(|(d, s)| {
                    format!("{}{}", with_check(&format!("0{d}")), s.unwrap_or_default())
                })
                .boxed(),
        }
    }

    fn element_list() -> impl Strategy<Value = Vec<(Ai, String)>> {
        prop::sample::subsequence(Ai::ALL.to_vec(), 1..=Ai::ALL.len())
            .prop_shuffle()
            .prop_flat_map(|ais| {
                ais.into_iter()
                    .map(|ai| value(ai).prop_map(move |v| (ai, v)))
                    .collect::<Vec<_>>()
            })
    }

    proptest! {
        #[test]
        fn gs1_round_trips_through_both_forms(elements in element_list()) {
            let gs1 = Gs1::new(elements.clone()).expect("valid by construction");
            prop_assert_eq!(gs1.elements(), elements.as_slice());
            prop_assert_eq!(Gs1::parse_bracketed(&gs1.to_bracketed()), Ok(gs1.clone()));
            prop_assert_eq!(Gs1::parse_raw(&gs1.to_raw()), Ok(gs1.clone()));
            prop_assert_eq!(Gs1::parse_raw(&format!("]d2{}\r\n", gs1.to_raw())), Ok(gs1.clone()));
            prop_assert_eq!(gs1.to_string().parse::<Gs1>(), Ok(gs1.clone()));
            prop_assert_eq!(classify(&format!("]C1{}\r\n", gs1.to_raw())), Scan::Gs1(gs1.clone()));
            prop_assert_eq!(classify(&gs1.to_bracketed()), Scan::Gs1(gs1));
        }

        #[test]
        fn gs1_parsers_never_panic_and_point_inside_the_input(
            s in prop_oneof![
                any::<String>(),
                "(\\]d2)?[0-9()\u{1d}A-Za-z\\\\]{0,40}",
                "\\((00|01|10|17|21|7003|8003|8004|8018|7240)\\)[0-9A-Z(\\\\]{0,30}",
            ]
        ) {
            for result in [Gs1::parse_raw(&s), Gs1::parse_bracketed(&s), s.parse::<Gs1>()] {
                if let Err(e) = result {
                    let n = s.chars().count();
                    prop_assert!(e.position().is_none_or(|p| p >= 1 && p <= n + 1), "{} for {:?}", e, s);
                    let _ = e.to_string();
                }
            }
        }
    }
}
