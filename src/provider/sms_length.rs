//! How long a text is as an SMS. A message that fits the GSM 03.38 alphabet travels as 7-bit
//! septets (160 per single message); anything else as UCS-2 (70 UTF-16 units). Templates are
//! checked against one part at start-up, so a code never arrives split or truncated.

/// The alphabet a text is sent in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Gsm7,
    Ucs2,
}

/// A text's size in its encoding and the single-part limit that applies to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    pub encoding: Encoding,
    /// Septets for GSM-7 (extension characters count two), UTF-16 units for UCS-2.
    pub units: usize,
    pub limit: usize,
}

impl Size {
    pub fn fits_one_part(&self) -> bool {
        self.units <= self.limit
    }
}

/// Single-part limits: 140 octets hold 160 septets or 70 UTF-16 units.
pub const GSM7_SINGLE: usize = 160;
pub const UCS2_SINGLE: usize = 70;

/// The GSM 03.38 default alphabet, in table order (minus ESC).
const BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
                     ¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
/// Characters of the extension table: each takes an escape septet plus its own.
const EXTENSION: &str = "\u{c}^{}\\[~]|€";

/// Septets `c` takes in GSM-7, or `None` when it needs UCS-2.
fn septets(c: char) -> Option<usize> {
    if BASIC.contains(c) {
        Some(1)
    } else if EXTENSION.contains(c) {
        Some(2)
    } else {
        None
    }
}

/// Measures `text` the way a handset will receive it.
pub fn measure(text: &str) -> Size {
    let gsm: Option<usize> = text.chars().map(septets).sum();
    match gsm {
        Some(units) => Size {
            encoding: Encoding::Gsm7,
            units,
            limit: GSM7_SINGLE,
        },
        None => Size {
            encoding: Encoding::Ucs2,
            units: text.encode_utf16().count(),
            limit: UCS2_SINGLE,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_ascii_is_gsm7() {
        let s = measure("Your code is 123456.");
        assert_eq!(s.encoding, Encoding::Gsm7);
        assert_eq!(s.units, 20);
        assert!(s.fits_one_part());
    }

    #[test]
    fn extension_characters_count_twice() {
        let s = measure("{code} €5");
        assert_eq!(s.encoding, Encoding::Gsm7);
        assert_eq!(s.units, 12);
    }

    #[test]
    fn gsm7_limit_is_160_septets() {
        assert!(measure(&"a".repeat(160)).fits_one_part());
        assert!(!measure(&"a".repeat(161)).fits_one_part());
        assert!(!measure(&"[".repeat(81)).fits_one_part());
    }

    #[test]
    fn anything_outside_the_alphabet_is_ucs2() {
        let s = measure("您的验证码是123456");
        assert_eq!(s.encoding, Encoding::Ucs2);
        assert_eq!(s.units, 12);
        assert_eq!(s.limit, 70);
        // Some accented letters are in the table, others force UCS-2.
        assert_eq!(measure("très").encoding, Encoding::Gsm7);
        assert_eq!(measure("código").encoding, Encoding::Ucs2);
        // Characters beyond the BMP take two UTF-16 units.
        assert_eq!(measure("🔑1234").units, 6);
        assert!(!measure(&"码".repeat(71)).fits_one_part());
    }
}
