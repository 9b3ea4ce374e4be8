//! Configuration: defaults in code, then `config.toml`, then `VERIFYD_SECTION__KEY` variables,
//! merged by figment. Unknown keys, wrong types and invalid values are refused at start-up with
//! the key and the source that set it.

use figment::providers::{Env, Format, Toml};
use figment::{Figment, Metadata};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub use crate::challenge::config::{ChallengeConfig, ChallengeMode};
use crate::provider::aliyun::AliyunConfig;
use crate::provider::breaker::BreakerConfig;
use crate::provider::hook::HookConfig;
use crate::provider::http::HttpConfig as HttpProviderConfig;
use crate::provider::instances::NamedProvider;
use crate::provider::sns::SnsConfig;
use crate::provider::tencent::TencentConfig;
use crate::secret::Secret;
use crate::session::SessionPolicy;
use crate::store::sqlite::Synchronous;

/// The whole configuration. Every section rejects keys it does not know.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub http: HttpConfig,
    pub store: StoreConfig,
    pub session: SessionConfig,
    pub verification: VerificationConfig,
    /// The single provider; ignored shape when `providers` is used.
    pub provider: ProviderConfig,
    /// Named provider instances, used with `routes` for per-country routing and failover.
    pub providers: BTreeMap<String, NamedProvider>,
    /// E.164 prefix (or `*`) → provider names, tried in order.
    pub routes: BTreeMap<String, Vec<String>>,
    pub api: ApiConfig,
    pub sweeper: SweeperConfig,
    pub compat: CompatConfig,
    pub log: LogConfig,
    pub per_phone: PerPhoneConfig,
    pub per_ip: PerIpConfig,
    pub global: GlobalConfig,
    pub countries: CountriesConfig,
    pub pumping: PumpingConfig,
    /// Challenges (proof-of-work or CAPTCHA) before sends.
    pub challenge: ChallengeConfig,
    pub metrics: MetricsConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Largest accepted request body; larger ones get 413.
    pub max_body_bytes: usize,
    /// Seconds a client may take to send its request headers.
    pub header_timeout: u64,
    /// Seconds a request may take end to end before the client gets 503.
    pub request_timeout: u64,
    /// Open connections beyond this are refused at accept time.
    pub max_connections: usize,
    /// Seconds in-flight requests get to finish after SIGTERM/SIGINT.
    pub shutdown_grace: u64,
    /// Serve the demo page at `GET /` (a development aid; off unless asked for).
    pub demo_page: bool,
    /// Peers (CIDR, e.g. `10.0.0.0/8`) whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<String>,
    /// Which header the trusted proxies write the client's address into.
    pub forwarded_header: ForwardedHeader,
    pub cors: CorsConfig,
}

/// The header a trusted proxy names the client in. Only one is read: the other could come
/// from the client itself, passed on untouched by a proxy that does not know it.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1` (nginx, HAProxy, most load balancers).
    #[default]
    #[serde(rename = "x-forwarded-for")]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client;proto=https, for=proxy1`.
    #[serde(rename = "forwarded")]
    Forwarded,
}

impl ForwardedHeader {
    /// The header's name, lower case.
    pub fn name(self) -> &'static str {
        match self {
            ForwardedHeader::XForwardedFor => "x-forwarded-for",
            ForwardedHeader::Forwarded => "forwarded",
        }
    }
}

/// Browser access from other origins to the browser-facing routes.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CorsConfig {
    /// Exact origins (`https://shop.example`) allowed to call with credentials.
    pub allowed_origins: Vec<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".parse().expect("valid default address"),
            max_body_bytes: 16 * 1024,
            header_timeout: 10,
            request_timeout: 30,
            max_connections: 10_000,
            shutdown_grace: 10,
            demo_page: false,
            trusted_proxies: Vec::new(),
            forwarded_header: ForwardedHeader::default(),
            cors: CorsConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    pub backend: Backend,
    /// Apply pending migrations when `serve` starts.
    pub migrate_on_start: bool,
    pub sqlite: SqliteConfig,
    pub postgres: PostgresConfig,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            backend: Backend::Sqlite,
            migrate_on_start: true,
            sqlite: SqliteConfig::default(),
            postgres: PostgresConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SqliteConfig {
    pub path: PathBuf,
    /// `full`: every acknowledged write survives power loss; `normal`: survives process crashes.
    pub synchronous: Synchronous,
    /// Milliseconds to wait for the database lock before answering 503.
    pub busy_timeout_ms: u64,
}

impl Default for SqliteConfig {
    fn default() -> Self {
        Self {
            path: "verifyd.db".into(),
            synchronous: Synchronous::Full,
            busy_timeout_ms: 5000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresConfig {
    /// libpq-style URL; may carry a password, so it is redacted when printed.
    pub url: Secret,
    /// A file holding the URL instead, read at start-up.
    pub url_file: Option<PathBuf>,
    pub pool_size: usize,
    /// Seconds to open a connection.
    pub connect_timeout: u64,
    /// Milliseconds a request waits for a pooled connection before 503.
    pub acquire_timeout_ms: u64,
    /// Milliseconds one statement may run (server-side `statement_timeout`).
    pub statement_timeout_ms: u64,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        Self {
            url: Secret::new("postgres://postgres@127.0.0.1:5432/verifyd"),
            url_file: None,
            pool_size: 16,
            connect_timeout: 3,
            acquire_timeout_ms: 2000,
            statement_timeout_ms: 5000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    pub cookie_name: String,
    pub cookie_domain: Option<String>,
    pub cookie_path: String,
    /// Send the cookie with `Secure`; turn off only for plain-HTTP development.
    pub cookie_secure: bool,
    /// Name the cookie `__Host-<cookie_name>`: browsers then accept it only with `Secure`,
    /// `Path=/` and no `Domain`, so no sibling subdomain can set or shadow it.
    pub cookie_host_prefix: bool,
    /// Seconds of inactivity before a session expires (Django's `SESSION_COOKIE_AGE`).
    pub default_age: u32,
    /// Absolute cap in seconds since creation; 0 means no cap.
    pub max_lifetime: u32,
    /// A read slides the expiry at most once per this many seconds.
    pub refresh_interval: u32,
    /// Most bytes one session's data may take as compact JSON; writes beyond it are 413.
    pub max_data_bytes: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            cookie_name: "sessionid".into(),
            cookie_domain: None,
            cookie_path: "/".into(),
            cookie_secure: true,
            cookie_host_prefix: false,
            default_age: 1_209_600,
            max_lifetime: 0,
            refresh_interval: 60,
            max_data_bytes: 64 * 1024,
        }
    }
}

impl SessionConfig {
    /// The cookie's name as browsers see it, with the `__Host-` prefix when it is on.
    pub fn full_cookie_name(&self) -> String {
        if self.cookie_host_prefix {
            format!("__Host-{}", self.cookie_name)
        } else {
            self.cookie_name.clone()
        }
    }

    pub fn policy(&self) -> SessionPolicy {
        SessionPolicy {
            default_age: self.default_age,
            max_lifetime: (self.max_lifetime > 0).then_some(self.max_lifetime),
            refresh_interval: self.refresh_interval,
            max_data_bytes: self.max_data_bytes,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct VerificationConfig {
    pub code_length: usize,
    /// Seconds a code stays valid.
    pub ttl: u64,
    /// Seconds between two sends to the same session and phone.
    pub resend_interval: u64,
    /// Wrong tries before a code dies.
    pub max_attempts: u32,
    /// ISO 3166-1 alpha-2 region for numbers typed without `+` (e.g. "CN"); unset: E.164 only.
    pub default_region: Option<String>,
    /// Key for code MACs. Unset: a random key kept in the store (shared by all daemons on it).
    pub secret: Secret,
    /// A file holding the key instead, read at start-up.
    pub secret_file: Option<PathBuf>,
    /// Message text; `{code}` and `{minutes}` are replaced.
    pub template: String,
    /// Message texts by locale (`zh-CN`, `zh`) or E.164 prefix (`+86`); see `provider::templates`.
    pub templates: BTreeMap<String, String>,
    /// Line types a code may be sent to; premium-rate and similar numbers are a pumping vector.
    pub number_types: Vec<crate::phone::NumberType>,
    /// Fixed codes for test numbers: nothing is sent, every other rule applies.
    pub test_numbers: BTreeMap<String, String>,
    /// What a resend within a code's lifetime sends: the same code again or a new one.
    pub resend: ResendMode,
    /// Seconds a code may live in all when `same_code` resends extend it; unset: 3 × `ttl`
    /// (at most 86400).
    pub max_code_lifetime: Option<u64>,
    /// The symbols codes are made of.
    pub alphabet: crate::code::Alphabet,
    /// Domain for the origin-bound last line `@domain #code` (WebOTP, iOS autofill); unset: none.
    pub otp_domain: Option<String>,
}

/// `verification.resend`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ResendMode {
    /// A resend while the code lives sends that code again and extends its lifetime, up to
    /// `max_code_lifetime`: the first SMS still works if it arrives late.
    #[default]
    SameCode,
    /// Every send draws a new code; the previous one stops working.
    NewCode,
}

impl VerificationConfig {
    /// The parser for numbers in requests and in `test_numbers`.
    /// The longest a `same_code` resend may keep one code alive, counted from when it was drawn.
    pub fn max_code_lifetime(&self) -> u64 {
        self.max_code_lifetime
            .unwrap_or_else(|| self.ttl.saturating_mul(3).min(86_400))
    }

    pub fn phone_parser(&self) -> Result<crate::phone::PhoneParser, (&'static str, String)> {
        crate::phone::PhoneParser::new(self.default_region.as_deref(), &self.number_types)
    }
}

impl Default for VerificationConfig {
    fn default() -> Self {
        Self {
            code_length: 6,
            ttl: 300,
            resend_interval: 60,
            max_attempts: 5,
            default_region: None,
            secret: Secret::default(),
            secret_file: None,
            template: "Your verification code is {code}. It expires in {minutes} minutes.".into(),
            templates: BTreeMap::new(),
            number_types: crate::phone::NumberType::defaults(),
            test_numbers: BTreeMap::new(),
            resend: ResendMode::default(),
            max_code_lifetime: None,
            alphabet: crate::code::Alphabet::default(),
            otp_domain: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    Mock,
    Aliyun,
    Sns,
    Tencent,
    Http,
    Hook,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ProviderConfig {
    pub kind: ProviderKind,
    /// Milliseconds one send may take, the provider's own retries included.
    pub timeout_ms: u64,
    pub breaker: BreakerConfig,
    pub mock: MockConfig,
    pub aliyun: AliyunConfig,
    pub sns: SnsConfig,
    pub tencent: TencentConfig,
    pub http: HttpProviderConfig,
    pub hook: HookConfig,
}

impl Default for ProviderConfig {
    fn default() -> Self {
        Self {
            kind: ProviderKind::Mock,
            timeout_ms: crate::provider::instances::DEFAULT_TIMEOUT_MS,
            breaker: BreakerConfig::default(),
            mock: MockConfig::default(),
            aliyun: AliyunConfig::default(),
            sns: SnsConfig::default(),
            tencent: TencentConfig::default(),
            http: HttpProviderConfig::default(),
            hook: HookConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MockConfig {
    /// Also append each message as a JSON line to this file.
    pub outbox: Option<PathBuf>,
    /// Do not print messages on stdout (the outbox still gets them).
    pub quiet: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Backend API keys by name, each given as the hex SHA-256 of the key
    /// (`verifyd hash-api-key` prints it).
    pub keys: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SweeperConfig {
    pub enabled: bool,
    /// Seconds between sweeps.
    pub interval: u64,
    /// Rows deleted per statement.
    pub batch_size: u32,
}

impl Default for SweeperConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: 60,
            batch_size: 10_000,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CompatConfig {
    /// Serve the seed application's `/sms_send/` and `/sms_check/` routes.
    pub seed_routes: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Own address for `GET /metrics` (Prometheus), where scrapes need no authentication: bind
    /// it to loopback or an internal network. Unset: served on the API port behind the API key.
    pub listen: Option<SocketAddr>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `tracing` filter directive, e.g. `info` or `verifyd=debug`.
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// Limits per destination number, across all sessions (0 turns a limit off).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PerPhoneConfig {
    /// Sends per `window` seconds.
    pub max_sends: u32,
    pub window: u64,
    /// Sends per day.
    pub daily_max: u32,
    /// Caps on sends per `window` and per day that even a solved challenge cannot pass
    /// (`max_sends` and `daily_max` are the budgets past which a challenge is asked for).
    pub hard_max_sends: u32,
    pub hard_daily_max: u32,
    /// Sends per `window` and per day to one number from one client network (IPv4 /24,
    /// IPv6 /48), so that a stranger's network cannot spend the number's whole budget.
    pub network_max_sends: u32,
    pub network_daily_max: u32,
    /// Wrong codes per `failed_checks_window` seconds before checks are refused for `lockout`:
    /// from anywhere, and from one client network (which locks only that network).
    pub max_failed_checks: u32,
    pub network_max_failed_checks: u32,
    pub failed_checks_window: u64,
    pub lockout: u64,
}

impl Default for PerPhoneConfig {
    fn default() -> Self {
        Self {
            max_sends: 5,
            window: 600,
            daily_max: 10,
            hard_max_sends: 10,
            hard_daily_max: 20,
            network_max_sends: 3,
            network_daily_max: 5,
            max_failed_checks: 50,
            network_max_failed_checks: 5,
            failed_checks_window: 3600,
            lockout: 3600,
        }
    }
}

/// Limits per browser client address (IPv4 address, IPv6 /64) and network (IPv4 /24, IPv6
/// /48); 0 turns a limit off.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PerIpConfig {
    pub max_sends: u32,
    pub max_checks: u32,
    /// Sends per client network (IPv4 /24, IPv6 /48), beside the per-address `max_sends`.
    pub prefix_max_sends: u32,
    /// Seconds.
    pub window: u64,
}

impl Default for PerIpConfig {
    fn default() -> Self {
        Self {
            max_sends: 20,
            max_checks: 100,
            prefix_max_sends: 200,
            window: 3600,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GlobalConfig {
    /// SMS per hour for the whole deployment; 0 means no cap.
    pub max_sends_per_hour: u32,
}

impl Default for GlobalConfig {
    fn default() -> Self {
        Self {
            max_sends_per_hour: 1000,
        }
    }
}

/// Destinations by country calling code (`+86`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CountriesConfig {
    /// SMS per hour per calling code; `"*"` applies to codes not listed.
    pub limits: BTreeMap<String, u32>,
    /// When not empty, only these calling codes are served.
    pub allow: Vec<String>,
    /// Calling codes never served.
    pub deny: Vec<String>,
}

/// The SMS-pumping breaker, per calling code.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PumpingConfig {
    pub enabled: bool,
    /// Seconds of one observation window.
    pub window: u64,
    /// Sends in a window before the conversion is judged.
    pub min_sample: u32,
    /// Approvals per send below which sends to the country stop.
    pub min_conversion: f64,
    /// What a tripped breaker does to browser sends: ask for a solved challenge, or refuse.
    pub on_trip: OnTrip,
}

impl Default for PumpingConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            window: 3600,
            min_sample: 50,
            min_conversion: 0.2,
            on_trip: OnTrip::Challenge,
        }
    }
}

/// `pumping.on_trip`: a tripped breaker makes browser sends to the country solve a challenge
/// (backends, never challenged, go through), or refuses every send with `destination_blocked`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnTrip {
    #[default]
    Challenge,
    Block,
}

/// A configuration that could not be loaded, with the key and where it came from.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

impl Config {
    /// Defaults, then `path` (when given and present), then systemd credentials
    /// (`$CREDENTIALS_DIRECTORY`, see [`crate::credentials`]), then `VERIFYD_*__*` variables.
    /// An explicitly given path must exist.
    pub fn load(path: Option<&Path>, explicit: bool) -> Result<Config, ConfigError> {
        // No `Serialized::defaults` layer: every section is `#[serde(default)]`, so serde fills
        // in what the file and environment leave out — and secrets are never round-tripped
        // through their redacting `Serialize`.
        let mut fig = Figment::new();
        if let Some(p) = path {
            if explicit && !p.exists() {
                return Err(ConfigError(format!(
                    "config file {} does not exist",
                    p.display()
                )));
            }
            fig = fig.merge(Toml::file_exact(p));
        }
        for credential in crate::credentials::from_env().map_err(ConfigError)? {
            fig = fig.merge(credential);
        }
        Self::from_figment(fig.merge(env_provider()))
    }

    /// Extracts and validates; used by `load` and by tests that build their own figment.
    pub fn from_figment(fig: Figment) -> Result<Config, ConfigError> {
        let mut config: Config = fig.extract().map_err(|e| describe(&fig, e))?;
        let invalid = |key: &str, msg: String| {
            // The nearest key figment knows: `routes."+86"` is found as `routes`.
            let mut probe = key;
            let source = loop {
                if let Some(md) = fig.find_metadata(probe) {
                    break source_name(md);
                }
                match probe.rfind('.') {
                    Some(i) => probe = &probe[..i],
                    None => break "the defaults".into(),
                }
            };
            ConfigError(format!(
                "invalid value for key `{key}` (from {source}): {msg}"
            ))
        };
        // Before validation, which checks that the secrets a provider needs are there.
        crate::secret_file::read_all(config.secret_slots(), |key| fig.contains(key))
            .map_err(|(key, msg)| invalid(&key, msg))?;
        config.validate().map_err(|(key, msg)| invalid(key, msg))?;
        if !config.providers.is_empty() && fig.contains("provider") {
            return Err(invalid(
                "provider",
                "use either [provider] or [providers.<name>] with [routes], not both".into(),
            ));
        }
        crate::provider::instances::validate(&config).map_err(|(key, msg)| invalid(&key, msg))?;
        Ok(config)
    }

    /// Every secret setting with its `_file` twin. Credentials may set exactly these keys
    /// ([`crate::credentials::is_secret_key`]; a test keeps the two in step).
    pub fn secret_slots(&mut self) -> Vec<crate::secret_file::Slot<'_>> {
        use crate::secret_file::Slot;
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
        slots
    }

    /// Checks the values serde cannot: ranges and relations between keys.
    /// Returns the offending key and why.
    fn validate(&self) -> Result<(), (&'static str, String)> {
        let v = &self.verification;
        if !(4..=10).contains(&v.code_length) {
            return Err((
                "verification.code_length",
                "must be between 4 and 10".into(),
            ));
        }
        if v.ttl == 0 || v.ttl > 86_400 {
            return Err((
                "verification.ttl",
                "must be between 1 and 86400 seconds".into(),
            ));
        }
        if v.resend_interval >= v.ttl {
            return Err((
                "verification.resend_interval",
                format!("must be shorter than verification.ttl ({} s)", v.ttl),
            ));
        }
        if v.max_attempts == 0 || v.max_attempts > 100 {
            return Err((
                "verification.max_attempts",
                "must be between 1 and 100".into(),
            ));
        }
        if let Some(max) = v.max_code_lifetime {
            if max < v.ttl || max > 86_400 {
                return Err((
                    "verification.max_code_lifetime",
                    format!(
                        "must be between verification.ttl ({} s) and 86400 seconds",
                        v.ttl
                    ),
                ));
            }
        }
        if let Some(domain) = &v.otp_domain {
            crate::provider::templates::check_otp_domain(domain)
                .map_err(|e| ("verification.otp_domain", e))?;
        }
        crate::provider::templates::validate(
            &v.template,
            &v.templates,
            std::time::Duration::from_secs(v.ttl),
            v.otp_domain.as_deref(),
        )?;
        if v.number_types.is_empty() {
            return Err((
                "verification.number_types",
                "must name at least one type, e.g. [\"mobile\", \"fixed_line_or_mobile\"]".into(),
            ));
        }
        let phones = v.phone_parser()?;
        let mut canonical = std::collections::HashSet::new();
        for (number, code) in &v.test_numbers {
            let phone = phones
                .parse(number)
                .map_err(|e| ("verification.test_numbers", format!("{number:?}: {e}")))?;
            if !canonical.insert(phone.as_str().to_owned()) {
                return Err((
                    "verification.test_numbers",
                    format!("{number:?} is {} again", phone.as_str()),
                ));
            }
            if code.len() != v.code_length
                || crate::code::Code::parse_in(code, v.alphabet).is_none()
            {
                return Err((
                    "verification.test_numbers",
                    format!(
                        "code for {number:?} must be {} symbols of verification.alphabet",
                        v.code_length
                    ),
                ));
            }
        }
        let s = &self.session;
        if s.cookie_name.is_empty()
            || !s
                .cookie_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err((
                "session.cookie_name",
                "must be letters, digits, '_' or '-'".into(),
            ));
        }
        let lower = s.cookie_name.to_ascii_lowercase();
        if lower.starts_with("__host-") {
            return Err((
                "session.cookie_name",
                "give the name without \"__Host-\" and set session.cookie_host_prefix = true"
                    .into(),
            ));
        }
        if lower.starts_with("__secure-") && !s.cookie_secure {
            return Err((
                "session.cookie_name",
                "a \"__Secure-\" name needs session.cookie_secure = true".into(),
            ));
        }
        if s.cookie_host_prefix
            && (!s.cookie_secure || s.cookie_path != "/" || s.cookie_domain.is_some())
        {
            return Err((
                "session.cookie_host_prefix",
                "a \"__Host-\" cookie needs session.cookie_secure = true, \
                 session.cookie_path = \"/\" and no session.cookie_domain"
                    .into(),
            ));
        }
        if !s.cookie_path.starts_with('/') || s.cookie_path.contains([';', ' ']) {
            return Err((
                "session.cookie_path",
                "must start with '/' and hold no ';' or spaces".into(),
            ));
        }
        if let Some(d) = &s.cookie_domain {
            if d.is_empty() || d.contains([';', ' ', '/']) {
                return Err(("session.cookie_domain", "must be a host name".into()));
            }
        }
        if s.default_age == 0 || s.default_age > i32::MAX as u32 {
            return Err((
                "session.default_age",
                "must be between 1 and 2147483647".into(),
            ));
        }
        if s.max_lifetime > i32::MAX as u32 {
            return Err(("session.max_lifetime", "must be at most 2147483647".into()));
        }
        // Room for verifyd's own `verified_phone` entry, and no more than a jsonb row holds well.
        if !(256..=16 * 1024 * 1024).contains(&s.max_data_bytes) {
            return Err((
                "session.max_data_bytes",
                "must be between 256 and 16777216".into(),
            ));
        }
        let h = &self.http;
        if h.max_body_bytes == 0 {
            return Err(("http.max_body_bytes", "must be positive".into()));
        }
        if h.max_connections == 0 {
            return Err(("http.max_connections", "must be positive".into()));
        }
        if h.header_timeout == 0 || h.request_timeout == 0 {
            return Err(("http.request_timeout", "timeouts must be positive".into()));
        }
        if self.store.postgres.pool_size == 0 {
            return Err(("store.postgres.pool_size", "must be positive".into()));
        }
        if self.sweeper.interval == 0 {
            return Err(("sweeper.interval", "must be positive".into()));
        }
        if self.sweeper.batch_size == 0 {
            return Err(("sweeper.batch_size", "must be positive".into()));
        }
        for (name, hash) in &self.api.keys {
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err((
                    "api.keys",
                    format!("key {name:?} must be the 64-hex-digit SHA-256 of the API key"),
                ));
            }
        }
        if self.provider.kind == ProviderKind::Aliyun {
            self.provider.aliyun.validate()?;
            // Otherwise the request times out first, and the send is cancelled mid-retry.
            if self.provider.aliyun.max_total_ms >= h.request_timeout.saturating_mul(1000) {
                return Err((
                    "provider.aliyun.max_total_ms",
                    format!(
                        "must be shorter than http.request_timeout ({} s)",
                        h.request_timeout
                    ),
                ));
            }
        }
        self.validate_limits()?;
        self.challenge.validate()?;
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| ("log.level", e.to_string()))?;
        Ok(())
    }
}

impl Config {
    /// The abuse-limit sections and the HTTP keys that go with them.
    fn validate_limits(&self) -> Result<(), (&'static str, String)> {
        let p = &self.per_phone;
        if p.window == 0 || p.failed_checks_window == 0 {
            return Err(("per_phone.window", "windows must be positive".into()));
        }
        if self.per_ip.window == 0 {
            return Err(("per_ip.window", "must be positive".into()));
        }
        for (key, soft_key, soft, hard) in [
            (
                "per_phone.hard_max_sends",
                "max_sends",
                p.max_sends,
                p.hard_max_sends,
            ),
            (
                "per_phone.hard_daily_max",
                "daily_max",
                p.daily_max,
                p.hard_daily_max,
            ),
        ] {
            if hard > 0 && hard < soft {
                return Err((
                    key,
                    format!("must be 0 (off) or at least per_phone.{soft_key} ({soft})"),
                ));
            }
        }
        let c = &self.countries;
        for code in c.limits.keys() {
            if code != "*" && !crate::country::is_calling_code(code) {
                return Err((
                    "countries.limits",
                    format!("{code:?} is not an assigned calling code like \"+86\", or \"*\""),
                ));
            }
        }
        for (key, list) in [("countries.allow", &c.allow), ("countries.deny", &c.deny)] {
            if let Some(bad) = list.iter().find(|c| !crate::country::is_calling_code(c)) {
                return Err((
                    key,
                    format!("{bad:?} is not an assigned calling code like \"+86\""),
                ));
            }
        }
        let pu = &self.pumping;
        if pu.window == 0 || !(0.0..=1.0).contains(&pu.min_conversion) {
            return Err((
                "pumping.min_conversion",
                "needs a positive window and a conversion between 0 and 1".into(),
            ));
        }
        for proxy in &self.http.trusted_proxies {
            crate::http::client_ip::Cidr::parse(proxy)
                .ok_or(("http.trusted_proxies", format!("{proxy:?} is not a CIDR")))?;
        }
        for origin in &self.http.cors.allowed_origins {
            if !crate::http::cors::is_origin(origin) {
                return Err((
                    "http.cors.allowed_origins",
                    format!("{origin:?} is not an origin like \"https://shop.example\""),
                ));
            }
        }
        Ok(())
    }
}

/// `VERIFYD_SECTION__KEY=value`; variables without `__` (such as `VERIFYD_CONFIG`) are not keys.
fn env_provider() -> Env {
    Env::prefixed("VERIFYD_")
        .filter(|k| k.as_str().contains("__"))
        .split("__")
}

fn source_name(md: &Metadata) -> String {
    match &md.source {
        Some(figment::Source::File(p)) => format!("{} {}", md.name, p.display()),
        Some(src) => format!("{} ({src})", md.name),
        None => md.name.to_string(),
    }
}

/// Turns figment's errors into one message per problem, each naming key and source.
fn describe(fig: &Figment, err: figment::Error) -> ConfigError {
    let lines: Vec<String> = err
        .into_iter()
        .map(|e| {
            let key = e.path.join(".");
            let source = e
                .metadata
                .as_ref()
                .map(source_name)
                .or_else(|| fig.find_metadata(&key).map(source_name))
                .unwrap_or_else(|| "the defaults".into());
            let what = match &e.kind {
                figment::error::Kind::UnknownField(field, _) => {
                    // figment's path sometimes already ends with the field, sometimes not.
                    let full = if key.is_empty() {
                        field.clone()
                    } else if key == *field || key.ends_with(&format!(".{field}")) {
                        key.clone()
                    } else {
                        format!("{key}.{field}")
                    };
                    return format!("unknown key `{full}` in {source}");
                }
                kind => kind.to_string(),
            };
            if key.is_empty() {
                format!("{what} (in {source})")
            } else {
                format!("invalid value for key `{key}` (from {source}): {what}")
            }
        })
        .collect();
    ConfigError(lines.join("\n"))
}

#[cfg(test)]
// figment's `Jail` closures return its (large) error type by design.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::Jail;

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
            assert!(err.contains("VERIFYD_"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn invalid_value_names_key_and_file() {
        Jail::expect_with(|jail| {
            jail.create_file("c.toml", "[verification]\ncode_length = 3\n")?;
            let err = Config::load(Some(Path::new("c.toml")), true)
                .unwrap_err()
                .to_string();
            assert!(err.contains("verification.code_length"), "{err}");
            assert!(err.contains("c.toml"), "{err}");
            jail.create_file("d.toml", "[verification]\nresend_interval = 400\n")?;
            let err = Config::load(Some(Path::new("d.toml")), true)
                .unwrap_err()
                .to_string();
            assert!(err.contains("verification.resend_interval"), "{err}");
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
}
