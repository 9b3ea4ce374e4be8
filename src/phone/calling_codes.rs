//! Phone numbers without libphonenumber (the `national-numbers` feature left out): a number is
//! read only as `+`, an assigned calling code and a national number whose length is possible
//! under that code. Nothing tells its line type or whether its range is in use.

use super::{NumberType, PhoneError, PhoneNumber};

/// Every assigned country calling code as libphonenumber's metadata knows it: (code, its region
/// or `ZZ` when several regions share the code, shortest and longest national number, whether
/// national numbers may begin with `0`). Calling codes are prefix-free, so at most one matches
/// the start of a number. `every_code_matches_the_metadata` keeps the table in step.
const CALLING_CODES: &[(u16, &str, u8, u8, bool)] = &[
    (1, "ZZ", 7, 10, false),
    (7, "ZZ", 10, 14, false),
    (20, "EG", 8, 10, false),
    (27, "ZA", 5, 10, false),
    (30, "GR", 10, 12, false),
    (31, "NL", 5, 11, false),
    (32, "BE", 8, 9, false),
    (33, "FR", 9, 9, false),
    (34, "ES", 9, 9, false),
    (36, "HU", 8, 9, false),
    (39, "ZZ", 6, 12, true),
    (40, "RO", 6, 9, false),
    (41, "CH", 9, 12, false),
    (43, "AT", 4, 13, false),
    (44, "ZZ", 7, 10, false),
    (45, "DK", 8, 8, false),
    (46, "SE", 6, 12, false),
    (47, "ZZ", 5, 8, true),
    (48, "PL", 6, 10, false),
    (49, "DE", 4, 15, false),
    (51, "PE", 8, 9, false),
    (52, "MX", 10, 10, false),
    (53, "CU", 6, 10, false),
    (54, "AR", 10, 11, false),
    (55, "BR", 8, 11, false),
    (56, "CL", 9, 11, false),
    (57, "CO", 8, 11, false),
    (58, "VE", 10, 10, false),
    (60, "MY", 8, 10, false),
    (61, "ZZ", 5, 12, false),
    (62, "ID", 7, 17, false),
    (63, "PH", 6, 13, false),
    (64, "NZ", 5, 10, false),
    (65, "SG", 8, 11, false),
    (66, "TH", 8, 13, false),
    (81, "JP", 8, 17, false),
    (82, "KR", 5, 14, false),
    (84, "VN", 7, 10, false),
    (86, "CN", 7, 12, false),
    (90, "TR", 7, 13, false),
    (91, "IN", 8, 13, false),
    (92, "PK", 8, 12, false),
    (93, "AF", 9, 9, false),
    (94, "LK", 9, 9, false),
    (95, "MM", 6, 10, false),
    (98, "IR", 4, 10, false),
    (211, "SS", 9, 9, false),
    (212, "ZZ", 9, 9, false),
    (213, "DZ", 8, 9, false),
    (216, "TN", 8, 8, false),
    (218, "LY", 9, 9, false),
    (220, "GM", 7, 7, false),
    (221, "SN", 9, 9, false),
    (222, "MR", 8, 8, false),
    (223, "ML", 8, 8, false),
    (224, "GN", 8, 9, false),
    (225, "CI", 10, 10, true),
    (226, "BF", 8, 8, false),
    (227, "NE", 8, 8, true),
    (228, "TG", 8, 8, false),
    (229, "BJ", 8, 10, true),
    (230, "MU", 7, 10, false),
    (231, "LR", 7, 9, false),
    (232, "SL", 8, 8, false),
    (233, "GH", 8, 9, false),
    (234, "NG", 10, 14, false),
    (235, "TD", 8, 8, false),
    (236, "CF", 8, 8, false),
    (237, "CM", 8, 9, false),
    (238, "CV", 7, 7, false),
    (239, "ST", 7, 7, false),
    (240, "GQ", 9, 9, false),
    (241, "GA", 7, 8, true),
    (242, "CG", 9, 9, true),
    (243, "CD", 7, 10, false),
    (244, "AO", 9, 9, false),
    (245, "GW", 7, 9, false),
    (246, "IO", 7, 7, false),
    (247, "AC", 5, 6, false),
    (248, "SC", 7, 7, false),
    (249, "SD", 9, 9, false),
    (250, "RW", 8, 9, false),
    (251, "ET", 9, 9, false),
    (252, "SO", 6, 9, false),
    (253, "DJ", 8, 8, false),
    (254, "KE", 7, 10, false),
    (255, "TZ", 9, 9, false),
    (256, "UG", 9, 9, false),
    (257, "BI", 8, 8, false),
    (258, "MZ", 8, 9, false),
    (260, "ZM", 9, 9, false),
    (261, "MG", 9, 9, false),
    (262, "ZZ", 9, 9, false),
    (263, "ZW", 5, 10, false),
    (264, "NA", 8, 9, false),
    (265, "MW", 7, 9, false),
    (266, "LS", 8, 8, false),
    (267, "BW", 7, 10, true),
    (268, "SZ", 8, 9, true),
    (269, "KM", 7, 7, false),
    (290, "ZZ", 4, 5, false),
    (291, "ER", 7, 7, false),
    (297, "AW", 7, 7, false),
    (298, "FO", 6, 6, false),
    (299, "GL", 6, 6, false),
    (350, "GI", 8, 8, false),
    (351, "PT", 9, 9, false),
    (352, "LU", 4, 11, false),
    (353, "IE", 7, 10, false),
    (354, "IS", 7, 9, false),
    (355, "AL", 6, 9, false),
    (356, "MT", 8, 8, false),
    (357, "CY", 8, 8, false),
    (358, "ZZ", 5, 12, false),
    (359, "BG", 6, 12, false),
    (370, "LT", 8, 8, false),
    (371, "LV", 8, 8, false),
    (372, "EE", 7, 10, false),
    (373, "MD", 8, 8, false),
    (374, "AM", 8, 8, false),
    (375, "BY", 6, 11, false),
    (376, "AD", 6, 9, false),
    (377, "MC", 8, 9, false),
    (378, "SM", 8, 10, true),
    (380, "UA", 9, 10, false),
    (381, "RS", 6, 12, false),
    (382, "ME", 8, 9, false),
    (383, "XK", 8, 12, false),
    (385, "HR", 7, 9, false),
    (386, "SI", 5, 8, false),
    (387, "BA", 8, 9, false),
    (389, "MK", 8, 8, false),
    (420, "CZ", 9, 12, false),
    (421, "SK", 6, 9, false),
    (423, "LI", 7, 9, false),
    (500, "FK", 5, 5, false),
    (501, "BZ", 7, 11, true),
    (502, "GT", 8, 11, false),
    (503, "SV", 7, 11, false),
    (504, "HN", 8, 11, false),
    (505, "NI", 8, 8, false),
    (506, "CR", 8, 10, false),
    (507, "PA", 7, 11, false),
    (508, "PM", 6, 9, false),
    (509, "HT", 8, 8, false),
    (590, "ZZ", 9, 9, false),
    (591, "BO", 8, 9, false),
    (592, "GY", 7, 7, false),
    (593, "EC", 8, 11, false),
    (594, "GF", 9, 9, false),
    (595, "PY", 6, 11, false),
    (596, "MQ", 9, 9, false),
    (597, "SR", 6, 7, false),
    (598, "UY", 4, 13, false),
    (599, "ZZ", 7, 8, false),
    (670, "TL", 7, 8, false),
    (672, "NF", 6, 6, false),
    (673, "BN", 7, 7, false),
    (674, "NR", 7, 7, false),
    (675, "PG", 7, 8, false),
    (676, "TO", 5, 7, true),
    (677, "SB", 5, 7, false),
    (678, "VU", 5, 7, false),
    (679, "FJ", 7, 11, true),
    (680, "PW", 7, 7, false),
    (681, "WF", 6, 9, false),
    (682, "CK", 5, 5, false),
    (683, "NU", 4, 7, false),
    (685, "WS", 5, 10, false),
    (686, "KI", 5, 8, false),
    (687, "NC", 6, 6, true),
    (688, "TV", 5, 7, false),
    (689, "PF", 6, 9, false),
    (690, "TK", 4, 7, false),
    (691, "FM", 7, 7, false),
    (692, "MH", 7, 7, false),
    (800, "001", 8, 8, false),
    (808, "001", 8, 8, false),
    (850, "KP", 8, 10, false),
    (852, "HK", 5, 11, false),
    (853, "MO", 7, 8, true),
    (855, "KH", 8, 10, false),
    (856, "LA", 8, 10, false),
    (870, "001", 9, 12, false),
    (878, "001", 12, 12, false),
    (880, "BD", 6, 10, false),
    (881, "001", 9, 10, false),
    (882, "001", 7, 12, false),
    (883, "001", 8, 12, false),
    (886, "TW", 7, 11, false),
    (888, "001", 11, 11, false),
    (960, "MV", 7, 10, false),
    (961, "LB", 7, 8, false),
    (962, "JO", 8, 9, false),
    (963, "SY", 8, 9, false),
    (964, "IQ", 8, 10, false),
    (965, "KW", 7, 8, false),
    (966, "SA", 9, 10, false),
    (967, "YE", 7, 9, false),
    (968, "OM", 7, 9, false),
    (970, "PS", 8, 10, false),
    (971, "AE", 5, 12, false),
    (972, "IL", 7, 12, false),
    (973, "BH", 8, 8, false),
    (974, "QA", 7, 11, false),
    (975, "BT", 7, 8, false),
    (976, "MN", 8, 10, false),
    (977, "NP", 8, 11, false),
    (979, "001", 9, 9, false),
    (992, "TJ", 9, 9, false),
    (993, "TM", 8, 8, false),
    (994, "AZ", 9, 9, false),
    (995, "GE", 9, 9, false),
    (996, "KG", 9, 10, false),
    (998, "UZ", 9, 9, false),
];

/// The table's row for `code`.
fn row(code: u16) -> Option<&'static (u16, &'static str, u8, u8, bool)> {
    CALLING_CODES
        .binary_search_by_key(&code, |r| r.0)
        .ok()
        .map(|i| &CALLING_CODES[i])
}

/// Whether `code` is assigned to a country or a non-geographic service.
pub(super) fn is_assigned(code: u16) -> bool {
    row(code).is_some()
}

/// `written` is normalised and starts with `+`. The digits are taken as written: a national
/// prefix after the calling code (`+44 0…`) is not removed, and makes the number invalid where
/// national numbers do not begin with `0`.
pub(super) fn read(written: &str) -> Result<PhoneNumber, PhoneError> {
    let digits = written.strip_prefix('+').ok_or(PhoneError::NotE164)?;
    if digits.starts_with('0') {
        return Err(PhoneError::Invalid);
    }
    let (cc_len, &(calling_code, region, shortest, longest, zero)) = (1..=3)
        .filter(|&n| n < digits.len())
        .find_map(|n| Some((n, row(digits[..n].parse().ok()?)?)))
        .ok_or(PhoneError::Invalid)?;
    let nsn = &digits[cc_len..];
    let fits = (usize::from(shortest)..=usize::from(longest)).contains(&nsn.len())
        && digits.len() <= super::MAX_E164_DIGITS
        && (zero || !nsn.starts_with('0'));
    if !fits {
        return Err(PhoneError::Invalid);
    }
    Ok(PhoneNumber {
        e164: written.to_owned(),
        cc_len,
        calling_code,
        region,
        // The number itself does not tell: the one type that claims nothing.
        kind: NumberType::FixedLineOrMobile,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_code_and_national_number_as_written() {
        let cn = read("+8613800138000").unwrap();
        assert_eq!(
            (cn.as_str(), cn.country(), cn.national(), cn.region()),
            ("+8613800138000", "+86", "13800138000", "CN")
        );
        assert_eq!(cn.number_type(), NumberType::FixedLineOrMobile);
        let hk = read("+85291234567").unwrap();
        assert_eq!((hk.country(), hk.region()), ("+852", "HK"));
        // Shared codes name no single region.
        let us = read("+12015550123").unwrap();
        assert_eq!(
            (us.country(), us.calling_code(), us.region()),
            ("+1", 1, "ZZ")
        );
        assert_eq!(read("+8818612345678").unwrap().region(), "001");
        // Where national numbers begin with 0, the 0 is part of the number.
        assert_eq!(read("+390669881234").unwrap().national(), "0669881234");
    }

    #[test]
    fn refuses_codes_lengths_and_prefixes_that_cannot_be() {
        for bad in [
            "+0123456789",
            "+999123456789",
            "+28123456789",
            // A national prefix written after the calling code.
            "+86013800138000",
            "+4407400123456",
            // Too short and too long for the code.
            "+86138",
            "+86138001380001234",
            "+120155501234",
            "+1234567890123456",
            "+",
        ] {
            assert_eq!(read(bad).unwrap_err(), PhoneError::Invalid, "{bad:?}");
        }
        assert!(is_assigned(86) && is_assigned(1) && is_assigned(881));
        assert!(!is_assigned(0) && !is_assigned(28) && !is_assigned(999));
    }

    #[cfg(not(feature = "national-numbers"))]
    #[test]
    fn settings_that_need_the_metadata_are_refused_by_name() {
        use super::super::{PhoneParser, Region};
        let why = "CN".parse::<Region>().unwrap_err();
        assert!(why.contains("national-numbers"), "{why}");
        let why = PhoneParser::check_types(&[NumberType::Mobile]).unwrap_err();
        assert!(why.contains("national-numbers"), "{why}");
        assert_eq!(PhoneParser::check_types(&NumberType::defaults()), Ok(()));
        let p = PhoneParser::new(None, &NumberType::defaults());
        assert_eq!(
            p.parse("+86 138 0013 8000").unwrap().as_str(),
            "+8613800138000"
        );
        assert_eq!(p.parse("13800138000"), Err(PhoneError::NotE164));
    }

    /// Recomputes every row from the metadata the default build carries, so that a newer
    /// libphonenumber cannot leave the table behind unnoticed.
    #[cfg(feature = "national-numbers")]
    #[test]
    fn every_code_matches_the_metadata() {
        use phonenumber::metadata::DATABASE;
        use std::collections::BTreeMap;

        let mut codes: BTreeMap<u16, (Vec<&str>, Vec<u16>, bool)> = BTreeMap::new();
        // Non-geographic services (`001`) are found by code only.
        for code in 1..1000u16 {
            for meta in DATABASE.by_code(&code).unwrap_or_default() {
                let d = meta.descriptors();
                let entry = codes.entry(code).or_default();
                entry.0.push(meta.id());
                let all = [
                    Some(d.general()),
                    d.fixed_line(),
                    d.mobile(),
                    d.toll_free(),
                    d.premium_rate(),
                    d.shared_cost(),
                    d.personal_number(),
                    d.voip(),
                    d.pager(),
                    d.uan(),
                    d.voicemail(),
                    d.no_international(),
                ];
                for desc in all.into_iter().flatten() {
                    entry.1.extend_from_slice(desc.possible_length());
                    entry.2 |= desc.example().is_some_and(|e| e.starts_with('0'));
                }
            }
        }
        let derived: Vec<(u16, &str, u8, u8, bool)> = codes
            .into_iter()
            .map(|(code, (regions, lengths, zero))| {
                let region = if let [only] = regions[..] { only } else { "ZZ" };
                let len = |l: Option<&u16>| u8::try_from(*l.unwrap()).unwrap();
                let lo = len(lengths.iter().min());
                let hi = len(lengths.iter().max());
                (code, region, lo, hi, zero)
            })
            .collect();
        for (table, metadata) in CALLING_CODES.iter().zip(&derived) {
            assert_eq!(table, metadata);
        }
        assert_eq!(CALLING_CODES.len(), derived.len());
    }
}
