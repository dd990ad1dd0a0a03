//! The Product Code (data structure 003).

use super::*;

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
    pub(super) code: [u8; 8],
}

pub(super) const PRODUCT_FORMS: &str = "=<αooootds (10) or the 8-character product code";

pub(super) fn is_t(c: char) -> bool {
    c.is_ascii_alphanumeric()
}
pub(super) fn is_d(c: char) -> bool {
    is_upper_alnum(c)
}
pub(super) fn is_s(c: char) -> bool {
    matches!(c, 'a'..='z' | '0'..='9')
}

pub(super) const PRODUCT_LAYOUT: [Slot; 8] = [
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

pub(super) const TDS_DIGITS: [Slot; 3] = [(
    is_digit,
    "division code (tds)",
    "a digit 0-9 (α = M, N, R, T, V, W: three-digit division code)",
); 3];
pub(super) const TDS_RESERVED: [Slot; 3] = [(
    |c| c == '0',
    "division code (tds)",
    "0 (α = X1-X9: tds is reserved and must be 000)",
); 3];

impl ProductCode {
    pub(super) fn from_data(text: &Text, data: &[(usize, char)]) -> Result<ProductCode, CodeError> {
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
    pub(super) fn has_collection_type(&self) -> bool {
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

pub(in crate::codes) fn parse_product(
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
