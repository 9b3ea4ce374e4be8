//! Secrets from systemd credentials: with `LoadCredential=NAME:PATH` in the unit, systemd hands
//! the service a private, read-only copy of each file in `$CREDENTIALS_DIRECTORY`. A file named
//! after a secret configuration key (`verification.secret`, …) sets that key, above the config
//! file and below `VERIFYD_*` variables, so secrets need be neither in the file nor in the unit.

use figment::providers::Serialized;
use figment::value::{Dict, Map};
use figment::{Metadata, Profile, Provider};
use std::path::{Path, PathBuf};

/// The configuration keys a credential may set: the secrets, and nothing else.
pub const SECRET_KEYS: &[&str] = &[
    "verification.secret",
    "store.postgres.url",
    "provider.aliyun.access_key_secret",
    "challenge.secret",
    "challenge.altcha.hmac_key",
];

/// One credential file, as a configuration layer that names its file in error messages.
#[derive(Debug)]
pub struct Credential {
    key: &'static str,
    path: PathBuf,
    value: String,
}

impl Provider for Credential {
    fn metadata(&self) -> Metadata {
        Metadata::named("systemd credential").source(figment::Source::File(self.path.clone()))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Serialized::default(self.key, &self.value).data()
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
        let key = SECRET_KEYS.iter().find(|k| **k == name).ok_or_else(|| {
            format!(
                "credential {}: not a secret verifyd knows (expected one of: {})",
                path.display(),
                SECRET_KEYS.join(", ")
            )
        })?;
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
    out.sort_by_key(|c| c.key);
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
