//! Countries as abuse limits name them: a calling code such as `+86`. A number's country is the
//! code libphonenumber parsed it under, never a prefix of its digits, so `+86` followed by a Hong
//! Kong number is not a Chinese number (it is invalid, and refused before any limit sees it).

use crate::phone::PhoneNumber;

/// `+86` for `+8613800138000`, `+1` for `+12015550123`, `+353` for an Irish number.
pub fn calling_code(phone: &PhoneNumber) -> &str {
    phone.country()
}

/// Whether `s` is a calling code libphonenumber knows (`+` and 1 to 3 digits, no leading
/// zero, assigned to a country or a non-geographic service).
pub fn is_calling_code(s: &str) -> bool {
    let Some(digits) = s.strip_prefix('+') else {
        return false;
    };
    let syntax = (1..=3).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    syntax
        && digits
            .parse::<u16>()
            .is_ok_and(crate::phone::is_assigned_calling_code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cc(n: &str) -> String {
        calling_code(&PhoneNumber::parse_e164(n).unwrap()).to_owned()
    }

    #[test]
    fn one_two_and_three_digit_codes() {
        assert_eq!(cc("+12015550123"), "+1");
        assert_eq!(cc("+74951234567"), "+7");
        assert_eq!(cc("+8613800138000"), "+86");
        assert_eq!(cc("+447400123456"), "+44");
        assert_eq!(cc("+353861234567"), "+353");
        assert_eq!(cc("+85291234567"), "+852");
        assert_eq!(cc("+2348012345678"), "+234");
    }

    #[test]
    fn calling_code_syntax_and_assignment() {
        assert!(is_calling_code("+86") && is_calling_code("+1") && is_calling_code("+353"));
        assert!(
            is_calling_code("+881"),
            "non-geographic codes are codes too"
        );
        assert!(!is_calling_code("86") && !is_calling_code("+") && !is_calling_code("+1234"));
        assert!(!is_calling_code("+0") && !is_calling_code("+8a") && !is_calling_code("+086"));
        assert!(
            !is_calling_code("+999") && !is_calling_code("+28"),
            "unassigned"
        );
    }
}
