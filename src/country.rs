//! The country calling code of an E.164 number. ITU calling codes are prefix-free and 1 to 3
//! digits long, so the assigned 1- and 2-digit codes decide the length; every other number
//! starts with a 3-digit code.

use crate::phone::PhoneNumber;

/// Calling codes of two digits (zones 2 to 9); the 1-digit codes are 1 and 7.
const TWO_DIGIT: &[&str] = &[
    "20", "27", "30", "31", "32", "33", "34", "36", "39", "40", "41", "43", "44", "45", "46", "47",
    "48", "49", "51", "52", "53", "54", "55", "56", "57", "58", "60", "61", "62", "63", "64", "65",
    "66", "81", "82", "84", "86", "90", "91", "92", "93", "94", "95", "98",
];

/// `+86` for `+8613800138000`, `+1` for `+15555550100`, `+353` for an Irish number.
pub fn calling_code(phone: &PhoneNumber) -> &str {
    let s = phone.as_str();
    let digits = &s[1..];
    let len = if digits.starts_with('1') || digits.starts_with('7') {
        1
    } else if TWO_DIGIT.contains(&&digits[..2]) {
        2
    } else {
        3
    };
    &s[..=len]
}

/// Whether `s` looks like a calling code (`+` and 1 to 3 digits, no leading zero).
pub fn is_calling_code(s: &str) -> bool {
    s.strip_prefix('+').is_some_and(|d| {
        (1..=3).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()) && !d.starts_with('0')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cc(n: &str) -> String {
        calling_code(&PhoneNumber::parse_e164(n).unwrap()).to_owned()
    }

    #[test]
    fn one_two_and_three_digit_codes() {
        assert_eq!(cc("+15555550100"), "+1");
        assert_eq!(cc("+74951234567"), "+7");
        assert_eq!(cc("+8613800138000"), "+86");
        assert_eq!(cc("+447700900123"), "+44");
        assert_eq!(cc("+353861234567"), "+353");
        assert_eq!(cc("+85212345678"), "+852");
        assert_eq!(cc("+2348012345678"), "+234");
    }

    #[test]
    fn calling_code_syntax() {
        assert!(is_calling_code("+86") && is_calling_code("+1") && is_calling_code("+353"));
        assert!(!is_calling_code("86") && !is_calling_code("+") && !is_calling_code("+1234"));
        assert!(!is_calling_code("+0") && !is_calling_code("+8a"));
    }
}
