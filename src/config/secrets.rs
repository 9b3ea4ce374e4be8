//! Every secret setting with its `_file` twin, in one list: what `secret_file` reads, what a
//! credential may set, and what `check-config --explain` redacts.

use super::Config;
use crate::secret_file::Slot;

impl Config {
    /// Every secret setting with its `_file` twin. Credentials may set exactly these keys
    /// ([`crate::credentials::is_secret_key`]; a test keeps the two in step).
    pub fn secret_slots(&mut self) -> Vec<crate::secret_file::Slot<'_>> {
        let slot = Slot::new;
        let v = &mut self.verification;
        let pg = &mut self.store.postgres;
        let a = &mut self.provider.aliyun;
        let sns = &mut self.provider.sns;
        let t = &mut self.provider.tencent;
        let http = &mut self.provider.http;
        let hook = &mut self.provider.hook;
        let ch = &mut self.challenge;
        let mut slots = vec![
            slot("verification.secret", &mut v.secret, &v.secret_file),
            slot("store.postgres.url", &mut pg.url, &pg.url_file),
            slot(
                "provider.aliyun.access_key_secret",
                &mut a.access_key_secret,
                &a.access_key_secret_file,
            ),
            slot(
                "provider.aliyun.receipt_token",
                &mut a.receipt_token,
                &a.receipt_token_file,
            ),
            slot(
                "provider.sns.secret_access_key",
                &mut sns.secret_access_key,
                &sns.secret_access_key_file,
            ),
            slot(
                "provider.tencent.secret_key",
                &mut t.secret_key,
                &t.secret_key_file,
            ),
            slot(
                "provider.tencent.receipt_token",
                &mut t.receipt_token,
                &t.receipt_token_file,
            ),
            slot("provider.http.secret", &mut http.secret, &http.secret_file),
            slot("provider.hook.secret", &mut hook.secret, &hook.secret_file),
            slot("challenge.secret", &mut ch.secret, &ch.secret_file),
            slot(
                "challenge.altcha.hmac_key",
                &mut ch.altcha.hmac_key,
                &ch.altcha.hmac_key_file,
            ),
        ];
        for (name, p) in &mut self.providers {
            if let Some(a) = &mut p.aliyun {
                slots.push(slot(
                    &format!("providers.{name}.aliyun.access_key_secret"),
                    &mut a.access_key_secret,
                    &a.access_key_secret_file,
                ));
                slots.push(slot(
                    &format!("providers.{name}.aliyun.receipt_token"),
                    &mut a.receipt_token,
                    &a.receipt_token_file,
                ));
            }
            if let Some(t) = &mut p.tencent {
                slots.push(slot(
                    &format!("providers.{name}.tencent.secret_key"),
                    &mut t.secret_key,
                    &t.secret_key_file,
                ));
                slots.push(slot(
                    &format!("providers.{name}.tencent.receipt_token"),
                    &mut t.receipt_token,
                    &t.receipt_token_file,
                ));
            }
            if let Some(sns) = &mut p.sns {
                slots.push(slot(
                    &format!("providers.{name}.sns.secret_access_key"),
                    &mut sns.secret_access_key,
                    &sns.secret_access_key_file,
                ));
            }
            if let Some(http) = &mut p.http {
                slots.push(slot(
                    &format!("providers.{name}.http.secret"),
                    &mut http.secret,
                    &http.secret_file,
                ));
            }
            if let Some(hook) = &mut p.hook {
                slots.push(slot(
                    &format!("providers.{name}.hook.secret"),
                    &mut hook.secret,
                    &hook.secret_file,
                ));
            }
        }
        slots.extend(self.events.secret_slots());
        slots
    }
}
