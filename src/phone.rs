//! `PhoneNumber`: a destination parsed once at the edge with libphonenumber's metadata, so
//! everything inside handles one canonical E.164 string per number and knows its country.
//! Built without the `national-numbers` feature, only `+` numbers are read, by the simpler rule
//! of `phone/calling_codes.rs`.

#[cfg(feature = "national-numbers")]
use phonenumber::metadata::{DATABASE, Descriptor, Metadata};
use serde::{Deserialize, Serialize};
#[cfg(feature = "national-numbers")]
use std::collections::BTreeMap;
use std::fmt;
#[cfg(feature = "national-numbers")]
use std::sync::{Arc, Mutex, PoisonError};

#[cfg(any(test, not(feature = "national-numbers")))]
mod calling_codes;
mod prefix;
mod region;

pub use prefix::Prefix;
pub use region::Region;

/// Longest input looked at: a written number with generous grouping fits easily, and nothing
/// longer reaches the metadata's regular expressions.
const MAX_INPUT_CHARS: usize = 40;

/// E.164 caps a number (calling code and national significant number) at 15 digits.
const MAX_E164_DIGITS: usize = 15;

/// A valid phone number in canonical E.164 form, with what providers need to address it.
///
/// Two numbers are equal exactly when they are the same line, however they were written
/// (`+86 0 138…`, `+86 (138) 0013-8000`, full-width digits): limits and lock-outs key on
/// [`PhoneNumber::as_str`]. `Display` and `Debug` mask the middle digits so that a number that
/// slips into a log line does not identify anybody.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PhoneNumber {
    e164: String,
    /// Digits of the calling code, so `e164[1..=cc_len]` is the code.
    cc_len: usize,
    calling_code: u16,
    /// libphonenumber's region (`CN`, `HK`), or `001` for non-geographic codes (`+881`).
    region: &'static str,
    kind: NumberType,
}

/// The kinds of line libphonenumber tells apart; `verification.number_types` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NumberType {
    Mobile,
    /// Where the number itself does not tell (the US, Canada, China's shared ranges).
    FixedLineOrMobile,
    FixedLine,
    TollFree,
    PremiumRate,
    SharedCost,
    Voip,
    PersonalNumber,
    Pager,
    Uan,
    Voicemail,
}

impl NumberType {
    /// The name used in configuration and error messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Mobile => "mobile",
            Self::FixedLineOrMobile => "fixed_line_or_mobile",
            Self::FixedLine => "fixed_line",
            Self::TollFree => "toll_free",
            Self::PremiumRate => "premium_rate",
            Self::SharedCost => "shared_cost",
            Self::Voip => "voip",
            Self::PersonalNumber => "personal_number",
            Self::Pager => "pager",
            Self::Uan => "uan",
            Self::Voicemail => "voicemail",
        }
    }

    /// `verification.number_types` when unset: lines a person carries.
    pub fn defaults() -> Vec<NumberType> {
        vec![Self::Mobile, Self::FixedLineOrMobile]
    }
}

/// Why a phone number was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error("phone number must be '+', the country calling code and the number")]
    NotE164,
    #[error("phone number is not a valid number")]
    Invalid,
    #[error("phone number is not valid for region {0}")]
    InvalidForRegion(String),
    #[error("{} numbers are not accepted", .0.name())]
    UnsupportedType(NumberType),
}

/// How input is read: the default region for numbers typed without `+`, and the line types
/// accepted.
#[derive(Debug, Clone)]
pub struct PhoneParser {
    #[cfg(feature = "national-numbers")]
    default_region: Option<phonenumber::country::Id>,
    types: Vec<NumberType>,
}

impl Default for PhoneParser {
    fn default() -> Self {
        Self::new(None, &NumberType::defaults())
    }
}

/// Why a setting that needs libphonenumber's metadata is refused in a build without it.
const NEEDS_METADATA: &str = "needs libphonenumber's metadata, which this build of verifyd \
                              leaves out (cargo feature `national-numbers`)";

impl PhoneParser {
    /// `region` reads numbers typed without `+`; `None` accepts `+` numbers only. Both parts
    /// were checked when the configuration was read, so building one cannot fail.
    pub fn new(region: Option<Region>, types: &[NumberType]) -> Self {
        // The metadata is decoded on first use, which takes a noticeable part of a second; that
        // happens here, at start-up, rather than inside the first request's time budget.
        #[cfg(feature = "national-numbers")]
        let _ = DATABASE.region(&1);
        // Without the metadata `Region` has no values: `region` is always `None` there.
        #[cfg(not(feature = "national-numbers"))]
        let _ = region;
        Self {
            #[cfg(feature = "national-numbers")]
            default_region: region.map(|r| r.0),
            types: types.to_vec(),
        }
    }

    /// Whether this build can tell the line types `types` asks for apart. Without
    /// libphonenumber's metadata no line type is known, so the list must stay at its default.
    pub fn check_types(types: &[NumberType]) -> Result<(), String> {
        if cfg!(feature = "national-numbers") || types == NumberType::defaults() {
            Ok(())
        } else {
            Err(format!("must be left at its default: {NEEDS_METADATA}"))
        }
    }

    /// Parses user input into a valid number of an accepted type.
    pub fn parse(&self, input: &str) -> Result<PhoneNumber, PhoneError> {
        let written = normalise(input).ok_or(PhoneError::NotE164)?;
        #[cfg(feature = "national-numbers")]
        let phone = if written.starts_with('+') {
            PhoneNumber::from_written(None, &written)?
        } else {
            let region = self.default_region.ok_or(PhoneError::NotE164)?;
            PhoneNumber::from_written(Some(region), &written)
                .map_err(|_| PhoneError::InvalidForRegion(region.as_ref().to_string()))?
        };
        #[cfg(not(feature = "national-numbers"))]
        let phone = calling_codes::read(&written)?;
        if !self.types.contains(&phone.kind) {
            return Err(PhoneError::UnsupportedType(phone.kind));
        }
        Ok(phone)
    }
}

/// ASCII digits and an optional leading `+`, with full-width forms folded and visual grouping
/// (spaces, `-`, `.`, `(`, `)`) dropped. `None` for anything else: letters (vanity numbers,
/// `ext.`), `tel:` URIs, `*`/`#` and other scripts' digits are not guessed at.
fn normalise(input: &str) -> Option<String> {
    let trimmed = input.trim();
    if trimmed.chars().count() > MAX_INPUT_CHARS {
        return None;
    }
    let mut out = String::with_capacity(trimmed.len());
    for (i, c) in trimmed.chars().enumerate() {
        match c {
            '0'..='9' => out.push(c),
            '０'..='９' => out.push(char::from(b'0' + (c as u32 - '０' as u32) as u8)),
            '+' | '＋' if i == 0 => out.push('+'),
            ' ' | '-' | '.' | '(' | ')' | '\u{a0}' | '\u{3000}' | '－' => {}
            _ => return None,
        }
    }
    out.bytes().any(|b| b.is_ascii_digit()).then_some(out)
}

#[cfg(feature = "national-numbers")]
/// One number pattern of the metadata, compiled for whole-string matches.
struct Pattern {
    lengths: &'static [u16],
    re: regex::Regex,
}

#[cfg(feature = "national-numbers")]
impl Pattern {
    /// `None` when absent or when it does not compile (never with the shipped metadata); a
    /// number is then simply not of that type.
    fn new(desc: Option<&'static Descriptor>) -> Option<Self> {
        let desc = desc?;
        let source = format!("^(?:{})$", desc.national_number().as_str());
        let re = regex::RegexBuilder::new(&source)
            .ignore_whitespace(true)
            .unicode(false)
            .build()
            .ok()?;
        Some(Self {
            lengths: desc.possible_length(),
            re,
        })
    }

    /// libphonenumber's rule: one of the possible lengths, and the whole pattern.
    fn fits(&self, nsn: &str) -> bool {
        let len = u16::try_from(nsn.len()).unwrap_or(u16::MAX);
        (self.lengths.is_empty() || self.lengths.contains(&len)) && self.re.is_match(nsn)
    }
}

#[cfg(feature = "national-numbers")]
/// A region's patterns. The crate's own regular expressions share one cache of 100 behind a
/// global lock and are compiled with Unicode classes, so numbers from many countries in turn
/// would recompile them on every request (milliseconds each, under that lock). ASCII-only
/// regular expressions kept per region cost about half a millisecond once, and some 10 MB once
/// every region of the metadata has been seen: a bound no input can move.
struct RegionPatterns {
    meta: &'static Metadata,
    leading_digits: Option<regex::Regex>,
    general: Option<Pattern>,
    special: Vec<(Pattern, NumberType)>,
    fixed_line: Option<Pattern>,
    mobile: Option<Pattern>,
    same_fixed_and_mobile: bool,
}

#[cfg(feature = "national-numbers")]
impl RegionPatterns {
    fn new(meta: &'static Metadata) -> Self {
        let d = meta.descriptors();
        let special = [
            (d.premium_rate(), NumberType::PremiumRate),
            (d.toll_free(), NumberType::TollFree),
            (d.shared_cost(), NumberType::SharedCost),
            (d.voip(), NumberType::Voip),
            (d.personal_number(), NumberType::PersonalNumber),
            (d.pager(), NumberType::Pager),
            (d.uan(), NumberType::Uan),
            (d.voicemail(), NumberType::Voicemail),
        ]
        .into_iter()
        .filter_map(|(desc, t)| Some((Pattern::new(desc)?, t)))
        .collect();
        let source = |x: Option<&Descriptor>| x.map(|x| x.national_number().as_str().to_owned());
        Self {
            meta,
            leading_digits: meta.leading_digits().and_then(|l| {
                regex::RegexBuilder::new(&format!("^(?:{})", l.as_str()))
                    .ignore_whitespace(true)
                    .unicode(false)
                    .build()
                    .ok()
            }),
            general: Pattern::new(Some(d.general())),
            special,
            fixed_line: Pattern::new(d.fixed_line()),
            mobile: Pattern::new(d.mobile()),
            same_fixed_and_mobile: source(d.fixed_line()) == source(d.mobile()),
        }
    }

    /// The type of `nsn` here, in libphonenumber's order of precedence; `None` when no pattern
    /// fits, which is what makes a number invalid.
    fn kind(&self, nsn: &str) -> Option<NumberType> {
        let fits = |p: &Option<Pattern>| p.as_ref().is_some_and(|p| p.fits(nsn));
        if !fits(&self.general) {
            return None;
        }
        if let Some((_, t)) = self.special.iter().find(|(p, _)| p.fits(nsn)) {
            return Some(*t);
        }
        if fits(&self.fixed_line) {
            return Some(if self.same_fixed_and_mobile || fits(&self.mobile) {
                NumberType::FixedLineOrMobile
            } else {
                NumberType::FixedLine
            });
        }
        fits(&self.mobile).then_some(NumberType::Mobile)
    }
}

#[cfg(feature = "national-numbers")]
/// Compiled patterns by (calling code, region); at most one entry per region of the metadata.
static PATTERNS: Mutex<BTreeMap<(u16, &'static str), Arc<RegionPatterns>>> =
    Mutex::new(BTreeMap::new());

#[cfg(feature = "national-numbers")]
fn patterns(meta: &'static Metadata) -> Arc<RegionPatterns> {
    cached(&PATTERNS, (meta.country_code(), meta.id()), || {
        RegionPatterns::new(meta)
    })
}

#[cfg(feature = "national-numbers")]
/// The value under `key`, made by `make` the first time. It is made outside the lock: two
/// requests racing on a new key both make it, and one is kept.
fn cached<K: Ord, V>(map: &Mutex<BTreeMap<K, Arc<V>>>, key: K, make: impl FnOnce() -> V) -> Arc<V> {
    let lock = || map.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(hit) = lock().get(&key) {
        return hit.clone();
    }
    let fresh = Arc::new(make());
    lock().entry(key).or_insert(fresh).clone()
}

#[cfg(feature = "national-numbers")]
/// Whether libphonenumber's parser may read a national prefix off the digits after a calling
/// code, by the rules of every region under that code: each region's pattern for national
/// prefixes and its national prefix, as one pattern anchored at the start. `None` when no
/// region has either. A pattern that does not compile counts as matching everything, so the
/// parser decides.
struct PrefixRules(Option<Result<regex::Regex, regex::Error>>);

#[cfg(feature = "national-numbers")]
impl PrefixRules {
    fn new(code: u16) -> Self {
        let mut alternatives = Vec::new();
        for meta in DATABASE.by_code(&code).unwrap_or_default() {
            if let Some(parsing) = meta.national_prefix_for_parsing() {
                alternatives.push(format!("(?:{})", parsing.as_str()));
            }
            if let Some(prefix) = meta.national_prefix() {
                alternatives.push(regex::escape(prefix));
            }
        }
        Self((!alternatives.is_empty()).then(|| {
            regex::RegexBuilder::new(&format!("^(?:{})", alternatives.join("|")))
                .ignore_whitespace(true)
                .unicode(false)
                .build()
        }))
    }

    fn may_strip(&self, nsn: &str) -> bool {
        match &self.0 {
            None => false,
            Some(Ok(re)) => re.is_match(nsn),
            Some(Err(_)) => true,
        }
    }
}

#[cfg(feature = "national-numbers")]
/// Prefix rules by calling code; at most one entry per code of the metadata.
static PREFIX_RULES: Mutex<BTreeMap<u16, Arc<PrefixRules>>> = Mutex::new(BTreeMap::new());

#[cfg(feature = "national-numbers")]
/// The region `nsn` belongs to under `code` and its type there, as libphonenumber picks it: the
/// only region, or among regions sharing a code (`+1`, `+7`, `+44`) the first whose leading
/// digits or number patterns fit. `None`: an unassigned code or an invalid number.
fn classify(code: u16, nsn: &str) -> Option<(&'static str, NumberType)> {
    let database: &'static phonenumber::metadata::Database = &DATABASE;
    let regions = database.region(&code)?;
    let chosen = if let [only] = regions[..] {
        let meta = if only == "001" {
            database.by_code(&code)?.into_iter().next()?
        } else {
            database.by_id(only)?
        };
        patterns(meta)
    } else {
        regions.into_iter().find_map(|region| {
            let p = patterns(database.by_id(region)?);
            let fits = match &p.leading_digits {
                Some(lead) => lead.is_match(nsn),
                None => p.kind(nsn).is_some(),
            };
            fits.then_some(p)
        })?
    };
    Some((chosen.meta.id(), chosen.kind(nsn)?))
}

impl PhoneNumber {
    /// Parses `+`, calling code and number (grouping allowed) into a valid number of any type.
    /// Requests go through [`PhoneParser::parse`], which also applies the accepted types.
    pub fn parse_e164(input: &str) -> Result<Self, PhoneError> {
        let written = normalise(input).ok_or(PhoneError::NotE164)?;
        if !written.starts_with('+') {
            return Err(PhoneError::NotE164);
        }
        #[cfg(feature = "national-numbers")]
        return Self::from_written(None, &written);
        #[cfg(not(feature = "national-numbers"))]
        return calling_codes::read(&written);
    }

    #[cfg(feature = "national-numbers")]
    /// `written` is normalised; libphonenumber strips national prefixes and international
    /// dialling prefixes, then the result must fit one of the metadata's number patterns.
    fn from_written(
        region: Option<phonenumber::country::Id>,
        written: &str,
    ) -> Result<Self, PhoneError> {
        match region {
            None => Self::read_as_written(written)
                .unwrap_or_else(|| Self::through_parser(None, written)),
            Some(_) => Self::through_parser(region, written),
        }
    }

    #[cfg(feature = "national-numbers")]
    /// A `+` number that libphonenumber's parser would take as written, read without it: the
    /// calling code found as the parser finds it, then the rest classified. `None` when the
    /// parser might rewrite the rest, which is left to it: a `0` after the `+` (an
    /// international prefix) or after the code (Italy's leading zero), or a start that some
    /// region under the code reads a national prefix from (`+86 0 138…`). The parser is most of
    /// a request's parsing cost (it finds a number's region through a cache of its regular
    /// expressions keyed by their text); `tests::as_written_reads_what_the_parser_reads`
    /// compares the two on every region's numbers.
    fn read_as_written(written: &str) -> Option<Result<Self, PhoneError>> {
        let digits = written.strip_prefix('+')?;
        if digits.starts_with('0') {
            return None;
        }
        // The parser's own order: the shortest leading digits that are a calling code.
        let Some((cc_len, calling_code)) = (1..=3).filter(|&n| n < digits.len()).find_map(|n| {
            let code: u16 = digits[..n].parse().ok()?;
            DATABASE.by_code(&code).is_some().then_some((n, code))
        }) else {
            return Some(Err(PhoneError::Invalid));
        };
        let (cc, nsn) = digits.split_at(cc_len);
        if nsn.starts_with('0')
            || cached(&PREFIX_RULES, calling_code, || {
                PrefixRules::new(calling_code)
            })
            .may_strip(nsn)
        {
            return None;
        }
        if cc.len() + nsn.len() > MAX_E164_DIGITS {
            return Some(Err(PhoneError::Invalid));
        }
        Some(
            classify(calling_code, nsn)
                .map(|(region, kind)| Self {
                    e164: format!("+{cc}{nsn}"),
                    cc_len,
                    calling_code,
                    region,
                    kind,
                })
                .ok_or(PhoneError::Invalid),
        )
    }

    #[cfg(feature = "national-numbers")]
    /// Reads `written` through libphonenumber's parser (see [`Self::from_written`]).
    fn through_parser(
        region: Option<phonenumber::country::Id>,
        written: &str,
    ) -> Result<Self, PhoneError> {
        let parsed = phonenumber::parse(region, written).map_err(|_| PhoneError::Invalid)?;
        if parsed.extension().is_some() {
            return Err(PhoneError::Invalid);
        }
        let national = parsed.national();
        // Italian fixed lines keep their leading zero in E.164; it is part of the number.
        let stripped = format!(
            "{}{}",
            "0".repeat(usize::from(national.zeros())),
            national.value()
        );
        let calling_code = parsed.code().value();
        let cc = calling_code.to_string();
        // The crate strips a national prefix after the calling code whenever the rest is long
        // enough; libphonenumber keeps it when only the unstripped number is valid (Lithuania's
        // `8` prefix in front of its `8…` numbers). Stripping still wins when it gives a valid
        // number, so `+86 0 138…` stays `+86 138…`.
        let as_written = written
            .strip_prefix('+')
            .and_then(|d| d.strip_prefix(cc.as_str()))
            .filter(|d| *d != stripped);
        let (nsn, (region, kind)) = std::iter::once(stripped.as_str())
            .chain(as_written)
            .filter(|nsn| cc.len() + nsn.len() <= MAX_E164_DIGITS)
            .find_map(|nsn| Some((nsn.to_owned(), classify(calling_code, nsn)?)))
            .ok_or(PhoneError::Invalid)?;
        Ok(Self {
            e164: format!("+{cc}{nsn}"),
            cc_len: cc.len(),
            calling_code,
            region,
            kind,
        })
    }

    /// The canonical number, `+` and digits.
    pub fn as_str(&self) -> &str {
        &self.e164
    }

    /// The country calling code as a number: `86` for mainland China.
    pub fn calling_code(&self) -> u16 {
        self.calling_code
    }

    /// The calling code as limits, lists and the breaker name it: `+86`.
    pub fn country(&self) -> &str {
        &self.e164[..=self.cc_len]
    }

    /// The national significant number: the digits after the calling code, without any
    /// national prefix (`13800138000` for `+8613800138000`).
    pub fn national(&self) -> &str {
        &self.e164[1 + self.cc_len..]
    }

    /// libphonenumber's region for the number (`CN`, `HK`, `US`), `001` when non-geographic.
    pub fn region(&self) -> &str {
        self.region
    }

    /// What kind of line it is.
    pub fn number_type(&self) -> NumberType {
        self.kind
    }

    /// The number with its middle digits hidden, e.g. `+86138****8000`, for logs.
    pub fn masked(&self) -> String {
        let s = &self.e164;
        if s.len() > 8 {
            // Four digits hidden before the last four; at most the calling code and a few
            // leading digits stay visible.
            let head = s.len() - 8;
            format!("{}****{}", &s[..head], &s[s.len() - 4..])
        } else {
            // Very short numbers (Niue, Saint Helena): only the last two digits show.
            format!("+{}{}", "*".repeat(s.len() - 3), &s[s.len() - 2..])
        }
    }
}

/// Whether `code` is a country calling code assigned to a country or a non-geographic service.
pub fn is_assigned_calling_code(code: u16) -> bool {
    #[cfg(feature = "national-numbers")]
    return DATABASE.region(&code).is_some();
    #[cfg(not(feature = "national-numbers"))]
    return calling_codes::is_assigned(code);
}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl fmt::Debug for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PhoneNumber({})", self.masked())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "national-numbers")]
    fn any_type() -> PhoneParser {
        let all = [
            NumberType::Mobile,
            NumberType::FixedLineOrMobile,
            NumberType::FixedLine,
            NumberType::TollFree,
            NumberType::PremiumRate,
            NumberType::SharedCost,
            NumberType::Voip,
            NumberType::PersonalNumber,
            NumberType::Pager,
            NumberType::Uan,
            NumberType::Voicemail,
        ];
        PhoneParser::new(None, &all)
    }

    #[cfg(feature = "national-numbers")]
    #[test]
    fn one_canonical_form_however_written() {
        let p = PhoneParser::default();
        for written in [
            "+8613800138000",
            "+86 138-0013-8000",
            "+86 0 138 0013 8000",
            "+86 (138) 0013.8000",
            " +86\u{a0}13800138000 ",
            "＋８６１３８００１３８０００",
        ] {
            assert_eq!(
                p.parse(written).unwrap().as_str(),
                "+8613800138000",
                "{written:?}"
            );
        }
        let uk = p.parse("+44 07400 123456").unwrap();
        assert_eq!(uk.as_str(), "+447400123456");
    }

    #[cfg(feature = "national-numbers")]
    #[test]
    fn parts_come_from_the_metadata() {
        // (why, as written, E.164, calling code, country, national number, region, type)
        for (why, written, e164, code, country, national, region, kind) in [
            (
                "one region per code",
                "+8613800138000",
                "+8613800138000",
                86,
                "+86",
                "13800138000",
                "CN",
                NumberType::Mobile,
            ),
            (
                "three-digit code",
                "+85291234567",
                "+85291234567",
                852,
                "+852",
                "91234567",
                "HK",
                NumberType::Mobile,
            ),
            (
                "the US cannot tell fixed lines from mobiles",
                "+12015550123",
                "+12015550123",
                1,
                "+1",
                "2015550123",
                "US",
                NumberType::FixedLineOrMobile,
            ),
            (
                "the Isle of Man shares +44 with the UK; the leading digits decide",
                "+447624123456",
                "+447624123456",
                44,
                "+44",
                "7624123456",
                "IM",
                NumberType::Mobile,
            ),
            (
                "Russia shares +7 with Kazakhstan",
                "+74951234567",
                "+74951234567",
                7,
                "+7",
                "4951234567",
                "RU",
                NumberType::FixedLine,
            ),
            (
                "Italian fixed lines keep the leading zero (06 698 is the Vatican's range)",
                "+39 06 6988 1234",
                "+390669881234",
                39,
                "+39",
                "0669881234",
                "VA",
                NumberType::FixedLine,
            ),
        ] {
            let p = PhoneNumber::parse_e164(written).unwrap_or_else(|e| panic!("{why}: {e}"));
            assert_eq!(
                (p.as_str(), p.calling_code(), p.country(), p.national()),
                (e164, code, country, national),
                "{why}"
            );
            assert_eq!((p.region(), p.number_type()), (region, kind), "{why}");
        }
    }

    #[cfg(feature = "national-numbers")]
    #[test]
    fn numbers_that_only_look_right_are_invalid() {
        let p = any_type();
        for bad in [
            // Another country's number behind +86: not a Chinese number.
            "+86 9123 4567",
            "+86 7400 123456",
            "+86 8816 12345678",
            // Zero-padding that does not strip to a real number.
            "+1 0 201 555 0123",
            "+86 138 0013 800",
            "+86 138 0013 80000",
            // Fictional or unassigned ranges.
            "+15555550100",
            "+447700900123",
            "+999123456789",
            "+0123456789",
        ] {
            assert_eq!(p.parse(bad).unwrap_err(), PhoneError::Invalid, "{bad:?}");
        }
    }

    #[test]
    fn rejects_what_is_not_a_written_number() {
        let p = PhoneParser::default();
        for bad in [
            "",
            "+",
            "8613800138000",
            "++8613800138000",
            "+86\u{0663}13800138000",
            "+86 138 0013 8000x",
            "+8613800138000 ext 12",
            "tel:+8613800138000",
            "+1-800-FLOWERS",
            "+86 138 0013 8000 #",
            &format!("+86 {}", "1".repeat(64)),
        ] {
            assert_eq!(p.parse(bad), Err(PhoneError::NotE164), "{bad:?}");
        }
    }

    #[cfg(feature = "national-numbers")]
    #[test]
    fn only_the_accepted_types_pass() {
        let defaults = PhoneParser::default();
        let fixed = PhoneParser::new(None, &[NumberType::FixedLine]);
        // (why, parser, number, refused as this type or accepted)
        for (why, p, number, refused) in [
            (
                "US premium rate",
                &defaults,
                "+1 900 234 5678",
                Some(NumberType::PremiumRate),
            ),
            (
                "UK premium rate",
                &defaults,
                "+44 871 234 5678",
                Some(NumberType::PremiumRate),
            ),
            (
                "US toll free",
                &defaults,
                "+1 800 555 0100",
                Some(NumberType::TollFree),
            ),
            (
                "Japanese fixed line, not a default type",
                &defaults,
                "+81 3 1234 5678",
                Some(NumberType::FixedLine),
            ),
            ("fixed lines when asked for", &fixed, "+81312345678", None),
            (
                "mobiles when only fixed lines are",
                &fixed,
                "+8613800138000",
                Some(NumberType::Mobile),
            ),
        ] {
            match refused {
                Some(kind) => assert_eq!(
                    p.parse(number),
                    Err(PhoneError::UnsupportedType(kind)),
                    "{why}"
                ),
                None => assert!(p.parse(number).is_ok(), "{why}"),
            }
        }
    }

    #[cfg(feature = "national-numbers")]
    #[test]
    fn every_regions_example_numbers_are_valid_there() {
        let mut checked = 0;
        for meta in DATABASE.iter() {
            let d = meta.descriptors();
            // Regions sharing a code (+1, +44) also share ranges; the first that fits wins.
            let code = meta.country_code();
            let shared = DATABASE.region(&code).is_some_and(|r| r.len() > 1);
            for desc in [d.mobile(), d.fixed_line(), d.premium_rate(), d.voip()] {
                let Some(example) = desc.and_then(|x| x.example()) else {
                    continue;
                };
                let written = format!("+{code}{example}");
                let parsed = PhoneNumber::parse_e164(&written);
                if shared {
                    // libphonenumber, too, finds no region for some of these (+7 809).
                    continue;
                }
                let phone = parsed.unwrap_or_else(|e| panic!("{} {written}: {e}", meta.id()));
                assert_eq!(phone.region(), meta.id(), "{written}");
                assert_eq!(phone.as_str(), written);
                checked += 1;
            }
        }
        assert!(checked > 300, "{checked}");
        // One compiled set per region at most, however many numbers were read.
        let regions = DATABASE.iter().count();
        assert!(PATTERNS.lock().unwrap().len() <= regions);
    }

    /// The read without the parser gives what the parser gives, wherever it is taken: every
    /// region's example numbers, written plainly, with a digit more or less, behind a national
    /// prefix or a `0`, and random digits under every calling code.
    #[cfg(feature = "national-numbers")]
    #[test]
    fn as_written_reads_what_the_parser_reads() {
        let (mut plain, mut written) = (Vec::new(), Vec::new());
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut random_digits = |n: usize| -> String {
            (0..n)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    char::from(b'0' + (seed % 10) as u8)
                })
                .collect()
        };
        for meta in DATABASE.iter() {
            let code = meta.country_code();
            let d = meta.descriptors();
            let examples = [
                Some(d.general()),
                d.mobile(),
                d.fixed_line(),
                d.toll_free(),
                d.premium_rate(),
                d.shared_cost(),
                d.voip(),
                d.personal_number(),
                d.pager(),
                d.uan(),
                d.voicemail(),
            ];
            for example in examples.into_iter().flatten().filter_map(|x| x.example()) {
                plain.push(format!("+{code}{example}"));
                let mut forms = vec![
                    format!("0{example}"),
                    format!("{example}7"),
                    example[1..].to_owned(),
                ];
                if let Some(prefix) = meta.national_prefix() {
                    forms.push(format!("{prefix}{example}"));
                }
                written.extend(forms.into_iter().map(|nsn| format!("+{code}{nsn}")));
            }
            for len in [3, 5, 7, 8, 9, 10, 11, 12, 13] {
                written.push(format!("+{code}{}", random_digits(len)));
            }
        }
        for other in [
            "+0064 3 331 6005",
            "+01164 3 331 6005",
            "+1",
            "+12",
            "+999123456",
        ] {
            written.push(normalise(other).unwrap());
        }
        let read = |numbers: &[String]| {
            let mut skipped = 0;
            for w in numbers {
                if let Some(fast) = PhoneNumber::read_as_written(w) {
                    assert_eq!(fast, PhoneNumber::through_parser(None, w), "{w}");
                    skipped += 1;
                }
            }
            skipped
        };
        // Numbers written plainly mostly skip the parser; both paths are compared many times.
        let (skipped, others) = (read(&plain), read(&written));
        assert!(
            skipped * 10 > plain.len() * 9,
            "{skipped} of {}",
            plain.len()
        );
        assert!(
            others > 2000 && written.len() - others > 2000,
            "{others} of {}",
            written.len()
        );
    }

    #[test]
    fn masks_the_middle() {
        let p = PhoneNumber::parse_e164("+8613800138000").unwrap();
        assert_eq!(p.masked(), "+86138****8000");
        assert_eq!(format!("{p}"), "+86138****8000");
        assert!(!format!("{p:?}").contains("13800138000"));
        let short = PhoneNumber::parse_e164("+6837290").unwrap();
        assert!(!short.masked().contains("729"), "{}", short.masked());
    }

    #[cfg(feature = "national-numbers")]
    #[test]
    fn national_numbers_need_a_region() {
        assert_eq!(
            PhoneParser::default().parse("18434288349"),
            Err(PhoneError::NotE164)
        );
        let cn = PhoneParser::new("cn".parse().ok(), &NumberType::defaults());
        assert_eq!(cn.parse("18434288349").unwrap().as_str(), "+8618434288349");
        assert_eq!(
            cn.parse("0086 184 3428 8349").unwrap().as_str(),
            "+8618434288349"
        );
        assert_eq!(
            cn.parse("+8613800138000").unwrap().as_str(),
            "+8613800138000"
        );
        assert!(matches!(
            cn.parse("12345"),
            Err(PhoneError::InvalidForRegion(_))
        ));
        assert!("XX".parse::<Region>().is_err());
    }
}
