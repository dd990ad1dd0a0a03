//! Keyed and eye-readable entry: splitting typed text into data characters, flags and the
//! check character, and verifying that check character.

use super::*;

/// A keyed or eye-readable entry split into its data characters and what followed them.
pub(super) struct Keyed {
    pub(super) body: Vec<(usize, char)>,
    pub(super) flags: Option<Vec<(usize, char)>>,
    pub(super) check: Option<(usize, char)>,
}

/// What an eye-readable form looks like for one identifier.
pub(super) struct KeyedSpec {
    pub(super) kind: &'static str,
    pub(super) body_len: usize,
    pub(super) body_name: &'static str,
    pub(super) allow_flags: bool,
    pub(super) expected_forms: &'static str,
}

/// Splits an eye-readable entry: either one run of `body_len` characters optionally followed
/// by the check character, or whitespace-separated groups whose first groups make up exactly
/// the body (any grouping), then optionally the flag characters (DIN only, 2 characters) and
/// the check character (1 character, optionally boxed as `[K]`).
pub(super) fn split_keyed(
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
pub(super) fn verify_check(
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
