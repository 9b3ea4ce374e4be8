//! Loading the whole configuration: layering, and errors that name the key and its source.

use super::*;
use crate::secret::Secret;
use figment::Jail;
use std::path::Path;

#[test]
fn defaults_are_valid() {
    Jail::expect_with(|_| {
        let c = Config::load(None, false).map_err(|e| e.to_string())?;
        assert_eq!(c, Config::default());
        Ok(())
    });
}

#[test]
fn file_then_environment() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "c.toml",
            "[http]\nlisten = \"127.0.0.1:9000\"\n[session]\ndefault_age = 10\n",
        )?;
        jail.set_env("VERIFYD_SESSION__DEFAULT_AGE", "20");
        jail.set_env("VERIFYD_CONFIG", "ignored-not-a-key");
        let c = Config::load(Some(Path::new("c.toml")), true).map_err(|e| e.to_string())?;
        assert_eq!(c.http.listen.port(), 9000);
        assert_eq!(c.session.default_age, 20);
        Ok(())
    });
}

#[test]
fn unknown_key_names_key_and_file() {
    Jail::expect_with(|jail| {
        jail.create_file("c.toml", "[http]\nlisten_addr = \"127.0.0.1:9000\"\n")?;
        let err = Config::load(Some(Path::new("c.toml")), true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("http.listen_addr"), "{err}");
        assert!(err.contains("c.toml"), "{err}");
        Ok(())
    });
}

#[test]
fn wrong_type_names_key_and_source() {
    Jail::expect_with(|jail| {
        jail.set_env("VERIFYD_VERIFICATION__MAX_ATTEMPTS", "lots");
        let err = Config::load(None, false).unwrap_err().to_string();
        assert!(err.contains("verification.max_attempts"), "{err}");
        assert!(err.contains("VERIFYD_VERIFICATION__MAX_ATTEMPTS"), "{err}");
        Ok(())
    });
}

#[test]
fn invalid_value_names_key_and_file() {
    Jail::expect_with(|jail| {
        for (file, text, key) in [
            (
                "short_code.toml",
                "[verification]\ncode_length = 3\n",
                "verification.code_length",
            ),
            (
                "slow_resend.toml",
                "[verification]\nresend_interval = 400\n",
                "verification.resend_interval",
            ),
        ] {
            jail.create_file(file, text)?;
            let err = Config::load(Some(Path::new(file)), true)
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{file}: {err}");
            assert!(err.contains(file), "{file}: {err}");
        }
        Ok(())
    });
}

#[test]
fn code_options_are_checked_and_named() {
    Jail::expect_with(|jail| {
        let bad = [
            (
                "otp_domain = \"https://example.com\"",
                "verification.otp_domain",
            ),
            ("otp_domain = \"Example.com\"", "verification.otp_domain"),
            ("max_code_lifetime = 100", "verification.max_code_lifetime"),
            (
                "max_code_lifetime = 90000",
                "verification.max_code_lifetime",
            ),
            ("resend = \"sometimes\"", "verification.resend"),
            ("alphabet = \"hex\"", "verification.alphabet"),
            // Letter codes cannot hold 0 or 1; digit codes no letters.
            (
                "alphabet = \"alphanumeric\"\n[verification.test_numbers]\n\"+12015550123\" = \"000000\"",
                "verification.test_numbers",
            ),
            (
                "[verification.test_numbers]\n\"+12015550123\" = \"ABCDEF\"",
                "verification.test_numbers",
            ),
        ];
        for (i, (text, key)) in bad.iter().enumerate() {
            let name = format!("bad{i}.toml");
            jail.create_file(&name, &format!("[verification]\n{text}\n"))?;
            let err = Config::load(Some(Path::new(&name)), true)
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
        jail.create_file(
            "ok.toml",
            "[verification]\nresend = \"new_code\"\nalphabet = \"alphanumeric\"\n\
             otp_domain = \"login.example.com\"\nmax_code_lifetime = 600\n\
             [verification.test_numbers]\n\"+12015550123\" = \"abc234\"\n",
        )?;
        let c = Config::load(Some(Path::new("ok.toml")), true).map_err(|e| e.to_string())?;
        let v = &c.verification;
        assert_eq!(v.resend, ResendMode::NewCode);
        assert_eq!(v.alphabet, crate::code::Alphabet::Alphanumeric);
        assert_eq!(v.otp_domain.as_deref(), Some("login.example.com"));
        assert_eq!(v.max_code_lifetime(), 600);
        assert_eq!(VerificationConfig::default().max_code_lifetime(), 900);
        assert_eq!(VerificationConfig::default().resend, ResendMode::SameCode);
        Ok(())
    });
}

#[test]
fn host_prefix_needs_secure_root_path_and_no_domain() {
    Jail::expect_with(|jail| {
        jail.create_file("ok.toml", "[session]\ncookie_host_prefix = true\n")?;
        let c = Config::load(Some(Path::new("ok.toml")), true).map_err(|e| e.to_string())?;
        assert_eq!(c.session.full_cookie_name(), "__Host-sessionid");
        for (file, body) in [
            ("a.toml", "cookie_secure = false"),
            ("b.toml", "cookie_path = \"/app\""),
            ("c.toml", "cookie_domain = \"example.com\""),
        ] {
            jail.create_file(
                file,
                &format!("[session]\ncookie_host_prefix = true\n{body}\n"),
            )?;
            let err = Config::load(Some(Path::new(file)), true)
                .unwrap_err()
                .to_string();
            assert!(err.contains("session.cookie_host_prefix"), "{err}");
            assert!(err.contains(file), "{err}");
        }
        jail.create_file("d.toml", "[session]\ncookie_name = \"__Host-sid\"\n")?;
        let err = Config::load(Some(Path::new("d.toml")), true)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("session.cookie_name") && err.contains("cookie_host_prefix"),
            "{err}"
        );
        Ok(())
    });
}

#[test]
fn missing_explicit_file_is_an_error() {
    Jail::expect_with(|_| {
        let err = Config::load(Some(Path::new("nope.toml")), true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope.toml"), "{err}");
        Ok(())
    });
}

#[test]
fn secrets_are_redacted_when_printed() {
    let mut c = Config::default();
    c.verification.secret = Secret::new("topsecret");
    c.store.postgres.url = Secret::new("postgres://u:pw@h/db");
    let text = toml::to_string(&c).unwrap();
    assert!(
        !text.contains("topsecret") && !text.contains("pw@"),
        "{text}"
    );
}

#[test]
fn parsed_values_name_their_own_key_and_file() {
    Jail::expect_with(|jail| {
        let hash = "a".repeat(64);
        let bad = [
            ("[http]\nheader_timeout = 0\n", "http.header_timeout"),
            ("[http]\nrequest_timeout = 0\n", "http.request_timeout"),
            (
                "[http]\ntrusted_proxies = [\"10.0.0.0/8\", \"10.0.0.0/33\"]\n",
                "http.trusted_proxies",
            ),
            (
                "[http.cors]\nallowed_origins = [\"https://shop.example/\"]\n",
                "http.cors.allowed_origins",
            ),
            ("[api.keys]\nshop = \"not-hex\"\n", "api.keys.shop"),
            ("[pumping]\nwindow = 0\n", "pumping.window"),
            (
                "[verification.templates]\nzh_CN = \"{code}\"\n",
                "verification.templates",
            ),
            (
                "[per_phone]\nfailed_checks_window = 0\n",
                "per_phone.failed_checks_window",
            ),
        ];
        for (i, (text, key)) in bad.iter().enumerate() {
            let name = format!("bad{i}.toml");
            jail.create_file(&name, text)?;
            let err = Config::load(Some(Path::new(&name)), true)
                .unwrap_err()
                .to_string();
            // A list names the entry too: `http.trusted_proxies.1`.
            assert!(err.contains(&format!("`{key}")), "{text}: {err}");
            assert!(err.contains(&name), "{text}: {err}");
        }
        jail.create_file(
            "ok.toml",
            &format!(
                "[http]\ntrusted_proxies = [\"10.0.0.0/8\", \"fd00::1\"]\n\
                 [http.cors]\nallowed_origins = [\"https://shop.example\"]\n\
                 [api.keys]\nshop = \"{hash}\"\n"
            ),
        )?;
        let c = Config::load(Some(Path::new("ok.toml")), true).map_err(|e| e.to_string())?;
        assert!(c.http.trusted_proxies[1].contains("fd00::1".parse().unwrap()));
        assert!(&c.http.cors.allowed_origins[0] == "https://shop.example");
        assert_eq!(c.api.keys["shop"].to_string(), hash);
        Ok(())
    });
}

/// A build without the `sns` feature refuses a configuration that asks for SNS, naming the key
/// and the feature, instead of starting without a provider.
#[cfg(not(feature = "sns"))]
#[test]
fn a_config_naming_sns_is_refused_with_the_key_and_the_feature() {
    use figment::Figment;
    use figment::providers::{Format, Toml};
    for toml in [
        "[provider]\nkind = \"sns\"\n[provider.sns]\nregion = \"us-east-1\"\n",
        "[providers.global]\nkind = \"sns\"\n[providers.global.sns]\nregion = \"us-east-1\"\n\
         [routes]\n\"*\" = [\"global\"]\n",
    ] {
        let err = Config::from_figment(Figment::from(Toml::string(toml)))
            .unwrap_err()
            .to_string();
        assert!(err.contains("kind"), "{err}");
        assert!(err.contains("feature `sns`"), "{err}");
    }
}

/// Calling codes and the default region are parsed as they are read: a bad one is refused
/// naming the key, the entry of a list, the file or variable, and what was expected; good ones
/// arrive as typed values.
#[test]
fn countries_and_region_are_parsed_where_they_are_read() {
    Jail::expect_with(|jail| {
        let bad = [
            (
                "allow_unassigned",
                "[countries]\nallow = [\"+86\", \"+999\"]\n",
                "`countries.allow.1`",
                "\"+999\" is not an assigned calling code",
            ),
            (
                "deny_with_space",
                "[countries]\ndeny = [\"+86 \"]\n",
                "`countries.deny.0`",
                "\"+86 \" is not an assigned calling code",
            ),
            (
                "deny_without_plus",
                "[countries]\ndeny = [\"86\"]\n",
                "`countries.deny.0`",
                "like \"+86\"",
            ),
            (
                "limit_unassigned",
                "[countries.limits]\n\"+28\" = 5\n",
                "`countries.limits",
                "\"+28\" is not an assigned calling code like \"+86\", or \"*\"",
            ),
            #[cfg(feature = "national-numbers")]
            (
                "unknown_region",
                "[verification]\ndefault_region = \"XX\"\n",
                "`verification.default_region`",
                "ISO 3166-1 alpha-2",
            ),
            #[cfg(not(feature = "national-numbers"))]
            (
                "region_without_metadata",
                "[verification]\ndefault_region = \"CN\"\n",
                "`verification.default_region`",
                "national-numbers",
            ),
            #[cfg(not(feature = "national-numbers"))]
            (
                "types_without_metadata",
                "[verification]\nnumber_types = [\"mobile\"]\n",
                "`verification.number_types`",
                "national-numbers",
            ),
        ];
        for (case, text, key, why) in bad {
            let name = format!("{case}.toml");
            jail.create_file(&name, text)?;
            let err = Config::load(Some(Path::new(&name)), true)
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{case}: {err}");
            assert!(err.contains(&name), "{case}: {err}");
            assert!(err.contains(why), "{case}: {err}");
        }
        jail.set_env("VERIFYD_COUNTRIES__ALLOW", "[\"+1\", \"+0\"]");
        let err = Config::load(None, false).unwrap_err().to_string();
        assert!(err.contains("`countries.allow.1`"), "{err}");
        assert!(
            err.contains("environment VERIFYD_COUNTRIES__ALLOW"),
            "{err}"
        );
        jail.clear_env();
        jail.create_file(
            "ok.toml",
            "[countries]\nallow = [\"+86\", \"+852\"]\ndeny = [\"+881\"]\n\
             [countries.limits]\n\"*\" = 7\n\"+86\" = 9\n",
        )?;
        let c = Config::load(Some(Path::new("ok.toml")), true).map_err(|e| e.to_string())?;
        let code = |s: &str| s.parse::<crate::country::CallingCode>().unwrap();
        assert_eq!(c.countries.allow, [code("+86"), code("+852")]);
        assert_eq!(c.countries.deny, [code("+881")]);
        let limits = c.limits();
        assert!(limits.serves(code("+852")) && !limits.serves(code("+1")));
        assert_eq!(limits.country_cap(code("+86")), Some(9));
        assert_eq!(
            limits.country_cap(code("+852")),
            Some(7),
            "`*` for the rest"
        );
        #[cfg(feature = "national-numbers")]
        {
            jail.create_file("cn.toml", "[verification]\ndefault_region = \"cn\"\n")?;
            let c = Config::load(Some(Path::new("cn.toml")), true).map_err(|e| e.to_string())?;
            let region = c.verification.default_region.map(|r| r.to_string());
            assert_eq!(region.as_deref(), Some("CN"));
            let phones = c.verification.phone_parser();
            assert_eq!(
                phones.parse("138 0013 8000").unwrap().as_str(),
                "+8613800138000"
            );
        }
        Ok(())
    });
}

#[test]
fn dead_events_are_kept_a_week_unless_told_otherwise() {
    use crate::seconds::Seconds;
    Jail::expect_with(|jail| {
        let c = Config::load(None, false).map_err(|e| e.to_string())?;
        assert_eq!(c.events.keep_dead, Seconds::from_secs(604_800));
        jail.create_file("long.toml", "[events]\nkeep_dead = 1209600.5\n")?;
        let c = Config::load(Some(Path::new("long.toml")), true).map_err(|e| e.to_string())?;
        assert_eq!(c.events.keep_dead, Seconds::from_millis(1_209_600_500));
        // Zero (deleted as soon as dead), negative, not a number, longer than a year.
        for value in ["0", "-1", "\"a week\"", "40000000"] {
            jail.create_file("bad.toml", &format!("[events]\nkeep_dead = {value}\n"))?;
            let err = Config::load(Some(Path::new("bad.toml")), true)
                .unwrap_err()
                .to_string();
            assert!(err.contains("events.keep_dead"), "{value}: {err}");
            assert!(err.contains("bad.toml"), "{value}: {err}");
        }
        jail.set_env("VERIFYD_EVENTS__KEEP_DEAD", "0");
        let err = Config::load(None, false).unwrap_err().to_string();
        assert!(err.contains("events.keep_dead"), "{err}");
        assert!(err.contains("VERIFYD_EVENTS__KEEP_DEAD"), "{err}");
        Ok(())
    });
}
