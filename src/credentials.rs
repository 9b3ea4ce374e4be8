//! Secrets from systemd credentials: with `LoadCredential=NAME:PATH` in the unit, systemd hands
//! the service a private, read-only copy of each file in `$CREDENTIALS_DIRECTORY`. A file named
//! after a secret configuration key (`verification.secret`, `providers.cn.aliyun.access_key_secret`,
//! …) sets that key, above the config file and below `VERIFYD_*` variables, so secrets need be
//! neither in the file nor in the unit.

use figment::providers::Serialized;
use figment::value::{Dict, Map};
use figment::{Metadata, Profile, Provider};
use std::path::{Path, PathBuf};

/// The fixed configuration keys a credential may set: the secrets, and nothing else.
pub const SECRET_KEYS: &[&str] = &[
    "verification.secret",
    "store.postgres.url",
    "provider.aliyun.access_key_secret",
    "provider.aliyun.receipt_token",
    "provider.sns.secret_access_key",
    "provider.tencent.secret_key",
    "provider.tencent.receipt_token",
    "provider.http.secret",
    "provider.hook.secret",
    "challenge.secret",
    "challenge.altcha.hmac_key",
];

/// The secrets of a named provider instance, after `providers.<name>.`.
pub const INSTANCE_SECRET_KEYS: &[&str] = &[
    "aliyun.access_key_secret",
    "aliyun.receipt_token",
    "sns.secret_access_key",
    "tencent.secret_key",
    "tencent.receipt_token",
    "http.secret",
    "hook.secret",
];

/// Whether a credential named `name` sets a secret: one of [`SECRET_KEYS`],
/// `providers.<name>.<secret>` for an instance name of the allowed shape, or an event
/// endpoint's `events.endpoints.<name>.secret`.
pub fn is_secret_key(name: &str) -> bool {
    if SECRET_KEYS.contains(&name) {
        return true;
    }
    if let Some(endpoint) = name
        .strip_prefix("events.endpoints.")
        .and_then(|rest| rest.strip_suffix(".secret"))
    {
        return is_table_name(endpoint);
    }
    let Some(rest) = name.strip_prefix("providers.") else {
        return false;
    };
    INSTANCE_SECRET_KEYS.iter().any(|secret| {
        rest.strip_suffix(secret)
            .and_then(|n| n.strip_suffix('.'))
            .is_some_and(is_table_name)
    })
}

/// The shape of a name the operator gives a table (`[providers.<name>]`,
/// `[events.endpoints.<name>]`): 1 to 32 of a-z, 0-9, '_' and '-'. Credential file names are
/// built from it, so it must not hold a dot or a path separator.
pub fn is_table_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// One credential file, as a configuration layer that names its file in error messages.
#[derive(Debug)]
pub struct Credential {
    key: String,
    path: PathBuf,
    value: String,
}

impl Provider for Credential {
    fn metadata(&self) -> Metadata {
        Metadata::named("systemd credential").source(figment::Source::File(self.path.clone()))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Serialized::default(&self.key, &self.value).data()
    }
}

/// The credentials in `$CREDENTIALS_DIRECTORY`; none when it is unset.
pub fn from_env() -> Result<Vec<Credential>, String> {
    match std::env::var_os("CREDENTIALS_DIRECTORY") {
        Some(dir) if !dir.is_empty() => from_dir(Path::new(&dir)),
        _ => Ok(Vec::new()),
    }
}

/// Reads every file in `dir`. A name that is not a secret key is refused: it is a typo in a
/// `LoadCredential=` line, and silently ignoring it would start the daemon without the secret.
pub fn from_dir(dir: &Path) -> Result<Vec<Credential>, String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("credentials {}: {e}", dir.display()))?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("credentials {}: {e}", dir.display()))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if !is_secret_key(&name) {
            return Err(format!(
                "credential {}: not a secret verifyd knows (expected one of: {}, \
                 events.endpoints.<name>.secret, or providers.<name>.{})",
                path.display(),
                SECRET_KEYS.join(", "),
                INSTANCE_SECRET_KEYS.join(" / providers.<name>.")
            ));
        }
        let key = name;
        let raw = std::fs::read_to_string(&path)
            .map_err(|e| format!("credential {}: {e}", path.display()))?;
        // Files written by `echo` or an editor end in a newline that is not part of the secret.
        let value = raw
            .strip_suffix('\n')
            .map(|v| v.strip_suffix('\r').unwrap_or(v))
            .unwrap_or(&raw);
        if value.is_empty() {
            return Err(format!("credential {}: empty", path.display()));
        }
        out.push(Credential {
            key,
            path,
            value: value.to_owned(),
        });
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use figment::Figment;
    use figment::providers::{Format, Toml};

    fn load(dir: &Path, toml: &str) -> Result<Config, String> {
        let mut fig = Figment::new().merge(Toml::string(toml));
        for c in from_dir(dir)? {
            fig = fig.merge(c);
        }
        Config::from_figment(fig).map_err(|e| e.to_string())
    }

    #[test]
    fn credentials_set_their_keys_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("verification.secret"),
            "s3cret-from-systemd\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("store.postgres.url"),
            "postgres://verifyd:pw@db/verifyd",
        )
        .unwrap();
        let c = load(dir.path(), "[verification]\nsecret = \"from-file\"\n").unwrap();
        assert_eq!(c.verification.secret.expose(), "s3cret-from-systemd");
        assert_eq!(
            c.store.postgres.url.expose(),
            "postgres://verifyd:pw@db/verifyd"
        );
    }

    #[test]
    fn unknown_and_empty_credentials_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("verification.secrte"), "x").unwrap();
        let e = from_dir(dir.path()).unwrap_err();
        assert!(
            e.contains("verification.secrte") && e.contains("not a secret"),
            "{e}"
        );

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("verification.secret"), "\n").unwrap();
        assert!(from_dir(dir.path()).unwrap_err().contains("empty"));
    }

    #[cfg(feature = "sns")]
    #[test]
    fn provider_instances_take_their_secrets_from_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let put = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        put("providers.cn.aliyun.access_key_secret", "cn-from-systemd\n");
        put(
            "providers.global.sns.secret_access_key",
            "global-from-systemd",
        );
        let toml = r#"
[providers.cn]
kind = "aliyun"
[providers.cn.aliyun]
access_key_id = "LTAI"
sign_name = "s"
template_code = "SMS_1"
[providers.global]
kind = "sns"
[providers.global.sns]
region = "us-east-1"
access_key_id = "AKIA"
[routes]
"+86" = ["cn"]
"*" = ["global"]
"#;
        let c = load(dir.path(), toml).unwrap();
        let cn = c.providers["cn"].aliyun.as_ref().unwrap();
        assert_eq!(cn.access_key_secret.expose(), "cn-from-systemd");
        let global = c.providers["global"].sns.as_ref().unwrap();
        assert_eq!(global.secret_access_key.expose(), "global-from-systemd");

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("provider.sns.secret_access_key"), "k").unwrap();
        let toml = "[provider]\nkind = \"sns\"\n[provider.sns]\nregion = \"us-east-1\"\naccess_key_id = \"AKIA\"\n";
        let c = load(dir.path(), toml).unwrap();
        assert_eq!(c.provider.sns.secret_access_key.expose(), "k");
    }

    #[test]
    fn instance_secret_names_are_checked_like_instance_names() {
        for ok in [
            "providers.cn.aliyun.access_key_secret",
            "providers.a_b-9.sns.secret_access_key",
            "provider.sns.secret_access_key",
            "provider.http.secret",
            "provider.hook.secret",
            "providers.twilio.http.secret",
            "providers.app.hook.secret",
            "events.endpoints.crm.secret",
        ] {
            assert!(is_secret_key(ok), "{ok}");
        }
        for bad in [
            "providers..aliyun.access_key_secret",
            "providers.CN.aliyun.access_key_secret",
            "providers.cn.aliyun.access_key_id",
            "providers.cn.sns.access_key_secret",
            "providers.a.b.sns.secret_access_key",
            "providers.cn.kind",
            "providers.gw.http.username",
            "providers.gw.http.secret_file",
            "providers.app.hook.url",
            "verification.secret_file",
            "events.endpoints.CRM.secret",
            "events.endpoints.crm.url",
            "events.endpoints..secret",
        ] {
            assert!(!is_secret_key(bad), "{bad}");
        }
    }

    #[test]
    fn credentials_and_file_settings_cover_the_same_secrets() {
        let toml = r#"
[providers.cn]
kind = "aliyun"
[providers.cn.aliyun]
[providers.global]
kind = "sns"
[providers.global.sns]
[providers.tc]
kind = "tencent"
[providers.tc.tencent]
[providers.gw]
kind = "http"
[providers.gw.http]
[providers.app]
kind = "hook"
[providers.app.hook]
[events.endpoints.crm]
"#;
        let mut c: Config = Figment::from(Toml::string(toml)).extract().unwrap();
        let keys: Vec<String> = c.secret_slots().into_iter().map(|s| s.key).collect();
        for key in &keys {
            assert!(
                is_secret_key(key),
                "{key} has a _file setting but no credential"
            );
        }
        for key in SECRET_KEYS {
            assert!(keys.iter().any(|k| k == key), "{key} has no _file setting");
        }
        for key in [
            "providers.cn.aliyun.access_key_secret",
            "providers.global.sns.secret_access_key",
            "providers.tc.tencent.secret_key",
            "providers.tc.tencent.receipt_token",
            "providers.gw.http.secret",
            "providers.app.hook.secret",
            "events.endpoints.crm.secret",
        ] {
            assert!(keys.iter().any(|k| k == key), "{key} is not a secret slot");
        }
        for key in INSTANCE_SECRET_KEYS {
            assert!(
                keys.iter()
                    .any(|k| k.starts_with("providers.") && k.ends_with(key)),
                "providers.<name>.{key} has no _file setting"
            );
        }
    }

    #[test]
    fn each_value_is_attributed_to_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("verification.secret");
        std::fs::write(&path, "k").unwrap();
        let mut fig = Figment::new().merge(Toml::string("[verification]\nsecret = \"f\"\n"));
        for c in from_dir(dir.path()).unwrap() {
            fig = fig.merge(c);
        }
        let md = fig.find_metadata("verification.secret").unwrap();
        assert_eq!(md.name, "systemd credential");
        assert_eq!(md.source, Some(figment::Source::File(path)));
    }
}
