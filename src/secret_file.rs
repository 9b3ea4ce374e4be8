//! `*_file` settings: each secret key `K` may be given instead as `K_file`, a path read once at
//! start-up, so a secret can live in a root-only file (a container secret, a mounted volume)
//! rather than in the config file, the environment or a unit file.

use std::path::PathBuf;

use crate::secret::Secret;

/// One secret setting and the `_file` setting beside it.
pub struct Slot<'a> {
    /// The secret's full key, e.g. `providers.cn.aliyun.access_key_secret`.
    pub key: String,
    pub secret: &'a mut Secret,
    pub file: Option<&'a PathBuf>,
}

impl<'a> Slot<'a> {
    pub fn new(key: &str, secret: &'a mut Secret, file: &'a Option<PathBuf>) -> Self {
        Self {
            key: key.to_owned(),
            secret,
            file: file.as_ref(),
        }
    }
}

/// Reads each slot's file into its secret (surrounding whitespace, such as the newline an editor
/// adds, is not part of it). `is_set(key)` tells whether some layer set the secret itself: then
/// the two settings contradict each other. Errors name the `_file` key and say why.
pub fn read_all(
    slots: Vec<Slot<'_>>,
    is_set: impl Fn(&str) -> bool,
) -> Result<(), (String, String)> {
    for slot in slots {
        let Some(path) = slot.file else { continue };
        let file_key = format!("{}_file", slot.key);
        if is_set(&slot.key) {
            return Err((
                file_key.clone(),
                format!("set either {file_key} or {}, not both", slot.key),
            ));
        }
        let text = std::fs::read_to_string(path).map_err(|e| {
            (
                file_key.clone(),
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        let text = text.trim();
        if text.is_empty() {
            return Err((file_key, format!("{} is empty", path.display())));
        }
        *slot.secret = Secret::new(text);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use figment::Figment;
    use figment::providers::{Format, Toml};
    use std::path::Path;

    fn load(toml: &str) -> Result<Config, String> {
        Config::from_figment(Figment::from(Toml::string(toml))).map_err(|e| e.to_string())
    }

    fn write(dir: &Path, name: &str, text: &str) -> String {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }

    const NAMED: &str = r#"
[providers.cn]
kind = "aliyun"
[providers.cn.aliyun]
access_key_id = "LTAI"
access_key_secret_file = "ALIYUN"
sign_name = "s"
template_code = "SMS_1"
[providers.global]
kind = "sns"
[providers.global.sns]
region = "us-east-1"
access_key_id = "AKIA"
secret_access_key_file = "SNS"
[routes]
"+86" = ["cn"]
"*" = ["global"]
"#;

    #[cfg(feature = "sns")]
    #[test]
    fn every_secret_setting_reads_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let toml = format!(
            "[verification]\nsecret_file = {:?}\n[store.postgres]\nurl_file = {:?}\n\
             [provider]\nkind = \"sns\"\n[provider.sns]\nregion = \"eu-west-1\"\n\
             access_key_id = \"AKIA\"\nsecret_access_key_file = {:?}\n\
             [provider.aliyun]\naccess_key_secret_file = {:?}\n",
            write(d, "mac", "mac-key\n"),
            write(d, "url", "postgres://u:pw@db/v\n"),
            write(d, "sns", "  sns-secret\r\n"),
            write(d, "aliyun", "aliyun-secret"),
        );
        let c = load(&toml).unwrap();
        assert_eq!(c.verification.secret.expose(), "mac-key");
        assert_eq!(c.store.postgres.url.expose(), "postgres://u:pw@db/v");
        assert_eq!(c.provider.sns.secret_access_key.expose(), "sns-secret");
        assert_eq!(
            c.provider.aliyun.access_key_secret.expose(),
            "aliyun-secret"
        );
        let printed = format!("{c:?}");
        for secret in ["mac-key", "pw@db", "sns-secret", "aliyun-secret"] {
            assert!(!printed.contains(secret), "{secret} printed");
        }

        let named = NAMED
            .replace(
                "\"ALIYUN\"",
                &format!("{:?}", write(d, "a2", "cn-secret\n")),
            )
            .replace(
                "\"SNS\"",
                &format!("{:?}", write(d, "s2", "global-secret\n")),
            );
        let c = load(&named).unwrap();
        let cn = c.providers["cn"].aliyun.as_ref().unwrap();
        assert_eq!(cn.access_key_secret.expose(), "cn-secret");
        let global = c.providers["global"].sns.as_ref().unwrap();
        assert_eq!(global.secret_access_key.expose(), "global-secret");
    }

    #[test]
    fn a_file_that_cannot_be_used_is_an_error_naming_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let missing = d.join("missing").display().to_string();
        let empty = write(d, "empty", " \n");
        let cases = [
            (
                format!("[verification]\nsecret_file = {missing:?}\n"),
                "verification.secret_file",
                "cannot read",
            ),
            (
                format!(
                    "[store.postgres]\nurl_file = {:?}\n",
                    d.display().to_string()
                ),
                "store.postgres.url_file",
                "cannot read",
            ),
            (
                format!("[provider.sns]\nsecret_access_key_file = {empty:?}\n"),
                "provider.sns.secret_access_key_file",
                "is empty",
            ),
            (
                NAMED
                    .replace("\"ALIYUN\"", &format!("{missing:?}"))
                    .replace("\"SNS\"", &format!("{empty:?}")),
                "providers.cn.aliyun.access_key_secret_file",
                "cannot read",
            ),
            (
                NAMED
                    .replace("\"ALIYUN\"", &format!("{:?}", write(d, "ok", "x")))
                    .replace("\"SNS\"", &format!("{missing:?}")),
                "providers.global.sns.secret_access_key_file",
                "cannot read",
            ),
            (
                format!(
                    "[verification]\nsecret = \"inline\"\nsecret_file = {:?}\n",
                    write(d, "both", "x")
                ),
                "verification.secret_file",
                "not both",
            ),
        ];
        for (toml, key, why) in cases {
            let err = load(&toml).unwrap_err();
            assert!(
                err.contains(&format!("`{key}`")) && err.contains(why),
                "{key}: {err}"
            );
        }
    }

    #[test]
    fn the_default_database_url_does_not_conflict_with_url_file() {
        let dir = tempfile::tempdir().unwrap();
        let url = write(dir.path(), "url", "postgres://a@b/c");
        let c = load(&format!("[store.postgres]\nurl_file = {url:?}\n")).unwrap();
        assert_eq!(c.store.postgres.url.expose(), "postgres://a@b/c");
    }
}
