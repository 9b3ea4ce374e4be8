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
pub fn read_all(slots: Vec<Slot<'_>>, is_set: impl Fn(&str) -> bool) -> Result<(), (String, String)> {
    for slot in slots {
        let Some(path) = slot.file else { continue };
        let file_key = format!("{}_file", slot.key);
        if is_set(&slot.key) {
            return Err((
                file_key.clone(),
                format!("set either {file_key} or {}, not both", slot.key),
            ));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| (file_key.clone(), format!("cannot read {}: {e}", path.display())))?;
        let text = text.trim();
        if text.is_empty() {
            return Err((file_key, format!("{} is empty", path.display())));
        }
        *slot.secret = Secret::new(text);
    }
    Ok(())
}
