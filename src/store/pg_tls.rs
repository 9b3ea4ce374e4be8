//! TLS to PostgreSQL over rustls, set up from libpq's URL parameters (`sslmode`, `sslrootcert`,
//! `sslcert`, `sslkey`) with libpq's meaning, so the URL an operator tested with `psql` behaves
//! the same here. tokio-postgres itself knows only `disable | prefer | require` and no files.

use percent_encoding::percent_decode_str;
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::client::WebPkiServerVerifier;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::{CryptoProvider, aws_lc_rs};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio_rustls::rustls::{
    self, CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

/// libpq's `sslmode`, minus `allow` (plaintext first, TLS only if refused), which no
/// deployment that sets the parameter on purpose wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<SslMode, String> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(format!(
                    "sslmode={other} is not one of disable, prefer, require, verify-ca, \
                     verify-full"
                ));
            }
        })
    }

    fn name(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// A parsed connection URL: what tokio-postgres understands, plus the TLS connector built from
/// the parameters it does not.
pub struct PgTarget {
    pub config: tokio_postgres::Config,
    pub tls: RustlsConnect,
    pub mode: SslMode,
}

/// libpq parameters verifyd cannot honour; refusing them beats silently connecting with less
/// protection than the operator asked for.
const UNSUPPORTED: &[&str] = &["sslpassword", "sslcrl", "sslcrldir", "sslcertmode"];

/// Parses a `postgres://` URL (or libpq's `key=value` form, which takes no TLS files). Error
/// texts name the parameter but never repeat the URL, which may hold a password.
pub fn parse(url: &str) -> Result<PgTarget, String> {
    let (rest, params) = split_tls_params(url)?;
    let system = params.rootcert.as_deref() == Some("system");
    let mode = match params.mode.as_deref() {
        Some(m) => SslMode::parse(m)?,
        // libpq: `sslrootcert=system` makes verify-full the default.
        None if system => SslMode::VerifyFull,
        None => SslMode::Prefer,
    };
    if system && mode != SslMode::VerifyFull {
        return Err(format!(
            "sslrootcert=system needs sslmode=verify-full (not {}): trusting every public CA \
             is only safe when the host name is checked too",
            mode.name()
        ));
    }
    if matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull) && params.rootcert.is_none() {
        return Err(format!(
            "sslmode={} needs sslrootcert: the CA file that signed the server's certificate, \
             or `system` for the operating system's trust store",
            mode.name()
        ));
    }
    if params.cert.is_some() != params.key.is_some() {
        return Err("sslcert and sslkey must be given together".into());
    }
    let mut config: tokio_postgres::Config = rest
        .parse()
        .map_err(|e| format!("invalid PostgreSQL URL (expected postgres://…): {e}"))?;
    config.ssl_mode(match mode {
        SslMode::Disable => tokio_postgres::config::SslMode::Disable,
        SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
        _ => tokio_postgres::config::SslMode::Require,
    });
    let tls = if mode == SslMode::Disable {
        RustlsConnect::new(None)
    } else {
        RustlsConnect::new(Some(Arc::new(Connector::new(mode, &params)?)))
    };
    Ok(PgTarget { config, tls, mode })
}

#[derive(Default)]
struct TlsParams {
    mode: Option<String>,
    rootcert: Option<String>,
    cert: Option<String>,
    key: Option<String>,
}

/// Takes the TLS parameters out of a URL's query and returns the URL without them.
fn split_tls_params(url: &str) -> Result<(String, TlsParams), String> {
    let mut params = TlsParams::default();
    let is_url = url.starts_with("postgres://") || url.starts_with("postgresql://");
    let Some((base, query)) = url.split_once('?').filter(|_| is_url) else {
        return Ok((url.to_owned(), params));
    };
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let key = decode(k)?;
        let slot = match key.as_str() {
            "sslmode" => &mut params.mode,
            "sslrootcert" => &mut params.rootcert,
            "sslcert" => &mut params.cert,
            "sslkey" => &mut params.key,
            k if UNSUPPORTED.contains(&k) => {
                return Err(format!("the URL parameter {k} is not supported by verifyd"));
            }
            _ => {
                kept.push(pair);
                continue;
            }
        };
        *slot = Some(decode(v)?);
    }
    let rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((rest, params))
}

fn decode(s: &str) -> Result<String, String> {
    percent_decode_str(s)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| "a URL parameter is not valid UTF-8 after percent-decoding".into())
}

/// What the server's certificate is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// `prefer`/`require` without `sslrootcert`: encrypted, but anyone can pose as the server.
    Nothing,
    /// `verify-ca`, and `prefer`/`require` with `sslrootcert` (libpq verifies when it has a CA).
    Chain,
    /// `verify-full`: the chain and the host name.
    ChainAndName,
}

/// The shared part of every handshake: the rustls configuration and what to say on failure.
struct Connector {
    tls: TlsConnector,
    check: Check,
    /// `sslrootcert` as written, for error messages.
    rootcert: String,
}

impl Connector {
    fn new(mode: SslMode, params: &TlsParams) -> Result<Connector, String> {
        let check = match (mode, &params.rootcert) {
            (SslMode::VerifyFull, _) => Check::ChainAndName,
            (SslMode::VerifyCa, _) | (_, Some(_)) => Check::Chain,
            _ => Check::Nothing,
        };
        let provider = Arc::new(aws_lc_rs::default_provider());
        let webpki = match &params.rootcert {
            None => None,
            Some(path) => {
                let roots = Arc::new(load_roots(path)?);
                let verifier = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                    .build()
                    .map_err(|e| format!("sslrootcert={path}: {e}"))?;
                Some(verifier)
            }
        };
        let verifier = Arc::new(Verifier {
            webpki,
            check,
            provider: provider.clone(),
        });
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match (&params.cert, &params.key) {
            (Some(cert), Some(key)) => {
                let chain = load_certs(cert, "sslcert")?;
                check_key_mode(key)?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| format!("sslkey={key}: cannot read a private key: {e}"))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("sslcert/sslkey: the key does not fit: {e}"))?
            }
            _ => builder.with_no_client_auth(),
        };
        // PostgreSQL 17's direct TLS negotiation requires this ALPN name; older servers ignore it.
        config.alpn_protocols = vec![b"postgresql".to_vec()];
        Ok(Connector {
            tls: TlsConnector::from(Arc::new(config)),
            check,
            rootcert: params.rootcert.clone().unwrap_or_default(),
        })
    }

    /// A handshake failure in words an operator can act on.
    fn explain(&self, host: &str, e: io::Error) -> TlsError {
        let cause = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
        let text = match cause {
            Some(rustls::Error::InvalidCertificate(c)) => match c {
                CertificateError::UnknownIssuer => format!(
                    "the certificate of {host} is not signed by a CA in sslrootcert={} \
                     (unknown CA)",
                    self.rootcert
                ),
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => format!(
                    "host name mismatch: the certificate of {host} is not issued for \
                     {host:?} (sslmode=verify-full checks the URL's host against the \
                     certificate's subjectAltName)"
                ),
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    format!("the certificate of {host} has expired")
                }
                other => format!("the certificate of {host} was refused: {other:?}"),
            },
            Some(rustls::Error::AlertReceived(alert)) => format!(
                "{host} refused the TLS handshake ({alert:?}); a server that demands a client \
                 certificate needs sslcert and sslkey"
            ),
            _ => format!("TLS handshake with {host} failed: {e}"),
        };
        TlsError(text)
    }
}

/// libpq's rule for the client key: readable by its owner only (0600), or also by the group
/// when root owns it (0640). A key others can read is a key others may have copied.
fn check_key_mode(path: &str) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path)
        .map_err(|e| format!("sslkey={path}: cannot read a private key: {e}"))?;
    let allowed = if meta.uid() == 0 { 0o640 } else { 0o600 };
    if meta.mode() & 0o777 & !allowed != 0 {
        return Err(format!(
            "sslkey={path}: group or others may access it (mode {:o}); allow at most {allowed:o}",
            meta.mode() & 0o777
        ));
    }
    Ok(())
}

fn load_certs(path: &str, key: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{key}={path}: cannot read certificates: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{key}={path}: no PEM certificate in the file"));
    }
    Ok(certs)
}

fn load_roots(path: &str) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    if path == "system" {
        // Unreadable entries in the system store are skipped, as OpenSSL does.
        let found = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(found.certs);
        if roots.is_empty() {
            return Err(
                "sslrootcert=system: the operating system's trust store holds no usable CA".into(),
            );
        }
        return Ok(roots);
    }
    for cert in load_certs(path, "sslrootcert")? {
        roots
            .add(cert)
            .map_err(|e| format!("sslrootcert={path}: not a usable CA certificate: {e}"))?;
    }
    Ok(roots)
}

/// rustls' web PKI check, relaxed to what the mode asks for. Handshake signatures are always
/// verified, so even `Check::Nothing` proves the peer holds the key of the certificate it sent.
#[derive(Debug)]
struct Verifier {
    webpki: Option<Arc<WebPkiServerVerifier>>,
    check: Check,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(webpki) = self
            .webpki
            .as_ref()
            .filter(|_| self.check != Check::Nothing)
        else {
            return Ok(ServerCertVerified::assertion());
        };
        // rustls checks the chain before the name, so a name error means the chain was good.
        match webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if self.check == Check::Chain => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A handshake or set-up failure; the text is complete, tokio-postgres prefixes its own context.
#[derive(Debug)]
pub struct TlsError(String);

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsError {}

/// The connector handed to the pool; cheap to clone. `inner` is `None` under `sslmode=disable`,
/// where tokio-postgres never asks for a handshake.
#[derive(Clone)]
pub struct RustlsConnect {
    inner: Option<Arc<Connector>>,
    /// Set when a handshake starts, for [`RustlsConnect::watched`].
    began: Arc<AtomicBool>,
}

impl RustlsConnect {
    fn new(inner: Option<Arc<Connector>>) -> RustlsConnect {
        RustlsConnect {
            inner,
            began: Arc::default(),
        }
    }

    /// A copy for one connection attempt and a flag that tells afterwards whether it started a
    /// TLS handshake: under `prefer` tokio-postgres falls back to plaintext without a word.
    pub fn watched(&self) -> (RustlsConnect, Arc<AtomicBool>) {
        let began = Arc::new(AtomicBool::new(false));
        let copy = RustlsConnect {
            inner: self.inner.clone(),
            began: began.clone(),
        };
        (copy, began)
    }
}

impl<S> MakeTlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = Handshake;
    type Error = TlsError;

    fn make_tls_connect(&mut self, host: &str) -> Result<Handshake, TlsError> {
        let connector = self
            .inner
            .clone()
            .ok_or_else(|| TlsError("TLS requested with sslmode=disable".into()))?;
        let name = match ServerName::try_from(host.to_owned()) {
            Ok(name) => name,
            // Only verify-full compares the name; the other modes must not fail on a host
            // (a container name, say) that is no valid DNS name. An address sends no SNI.
            Err(_) if connector.check != Check::ChainAndName => {
                ServerName::IpAddress(std::net::Ipv4Addr::UNSPECIFIED.into())
            }
            Err(_) => {
                return Err(TlsError(format!(
                    "{host:?} is not a host name or IP address a certificate can name \
                     (sslmode=verify-full)"
                )));
            }
        };
        Ok(Handshake {
            connector,
            name,
            host: host.to_owned(),
            began: self.began.clone(),
        })
    }
}

/// One handshake with one host.
pub struct Handshake {
    connector: Arc<Connector>,
    name: ServerName<'static>,
    host: String,
    began: Arc<AtomicBool>,
}

impl<S> TlsConnect<S> for Handshake
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = TlsError;
    type Future = Pin<Box<dyn Future<Output = Result<RustlsStream<S>, TlsError>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        self.began.store(true, Ordering::Relaxed);
        Box::pin(async move {
            match self.connector.tls.connect(self.name, stream).await {
                Ok(s) => Ok(RustlsStream(Box::new(s))),
                Err(e) => Err(self.connector.explain(&self.host, e)),
            }
        })
    }
}

/// An established TLS session.
pub struct RustlsStream<S>(Box<tokio_rustls::client::TlsStream<S>>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for RustlsStream<S> {
    /// No `tls-server-end-point` binding: SCRAM runs without it (tokio-postgres'
    /// `channel_binding=prefer`); `channel_binding=require` is therefore refused.
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed CA certificate (its key was thrown away); only parsed, never trusted.
    const TEST_CA: &str = "-----BEGIN CERTIFICATE-----\n\
MIIBlDCCATugAwIBAgIUCwoPcYupGIR2bS5/Q9/7MGKuOMgwCgYIKoZIzj0EAwIw\n\
HzEdMBsGA1UEAwwUdmVyaWZ5ZC11bml0LXRlc3QtY2EwIBcNMjYxMTMwMDYwNDM1\n\
WhgPMjEyNjExMDYwNjA0MzVaMB8xHTAbBgNVBAMMFHZlcmlmeWQtdW5pdC10ZXN0\n\
LWNhMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAERhtd2vlCVOZ+C8KOTiJGb81T\n\
FXQVkkX3gRUqBYE1lw6K8d9TRf4IwpCHlJOOHKrwUeiDu28W08UDS+2MAGAZ9KNT\n\
MFEwHQYDVR0OBBYEFHfruR3jbRRNQj8NJmGg2Cfj/4jYMB8GA1UdIwQYMBaAFHfr\n\
uR3jbRRNQj8NJmGg2Cfj/4jYMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwID\n\
RwAwRAIgdmH4Q5i5DDlIoDaqFLJ2I9qVgbbdp9F4PnBtN/NFJ6MCIB6SS9H6a+BD\n\
DIBub4gn9EM9+rYw4QaDV3BkK+VHHe+6\n\
-----END CERTIFICATE-----\n";

    fn err(url: &str) -> String {
        match parse(url) {
            Ok(_) => panic!("{url} was accepted"),
            Err(e) => e,
        }
    }

    #[test]
    fn the_default_is_prefer_and_tls_parameters_leave_the_url() {
        let t = parse("postgres://u:pw@h:5433/db?application_name=x").unwrap();
        assert_eq!(t.mode, SslMode::Prefer);
        assert_eq!(t.config.get_application_name(), Some("x"));
        let t = parse("postgres://u@h/db?sslmode=require&connect_timeout=2").unwrap();
        assert_eq!(t.mode, SslMode::Require);
        assert_eq!(
            t.config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );
        let t = parse("postgres://u@h/db?sslmode=disable").unwrap();
        assert_eq!(
            t.config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Disable
        );
    }

    #[test]
    fn verifying_modes_need_a_ca_and_system_needs_verify_full() {
        assert!(err("postgres://h/db?sslmode=verify-full").contains("needs sslrootcert"));
        assert!(err("postgres://h/db?sslmode=verify-ca").contains("needs sslrootcert"));
        assert!(
            err("postgres://h/db?sslmode=require&sslrootcert=system")
                .contains("needs sslmode=verify-full")
        );
        assert!(err("postgres://h/db?sslmode=allow").contains("sslmode=allow is not one of"));
        assert!(err("postgres://h/db?sslcrl=/x").contains("sslcrl is not supported"));
        assert!(err("postgres://h/db?sslcert=/x").contains("together"));
    }

    #[test]
    fn unreadable_files_are_named() {
        let e = err("postgres://h/db?sslmode=verify-ca&sslrootcert=/nonexistent/ca.pem");
        assert!(
            e.starts_with("sslrootcert=/nonexistent/ca.pem: cannot read"),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let e = err(&format!(
            "postgres://h/db?sslmode=verify-ca&sslrootcert={}",
            empty.display()
        ));
        assert!(e.contains("no PEM certificate"), "{e}");
    }

    #[test]
    fn only_verify_full_needs_a_host_a_certificate_can_name() {
        let mut t = parse("postgres://u@h/db?sslmode=require").unwrap();
        assert!(
            MakeTlsConnect::<tokio::net::TcpStream>::make_tls_connect(&mut t.tls, "db..x").is_ok()
        );
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, TEST_CA).unwrap();
        let mut t = parse(&format!(
            "postgres://u@h/db?sslmode=verify-full&sslrootcert={}",
            ca.display()
        ))
        .unwrap();
        let e = MakeTlsConnect::<tokio::net::TcpStream>::make_tls_connect(&mut t.tls, "db..x")
            .err()
            .unwrap();
        assert!(
            e.to_string().contains("\"db..x\" is not a host name"),
            "{e}"
        );
    }

    #[test]
    fn percent_encoded_paths_are_decoded() {
        let e = err("postgres://h/db?sslmode=verify-ca&sslrootcert=%2Fno%20such%2Fca.pem");
        assert!(e.starts_with("sslrootcert=/no such/ca.pem:"), "{e}");
    }

    #[test]
    fn errors_never_repeat_the_password() {
        let e = err("postgres://u:hunter2@h/db?sslmode=bogus");
        assert!(!e.contains("hunter2"), "{e}");
        let e = err("postgres://u:hunter2@h/db?nonsense=1");
        assert!(!e.contains("hunter2"), "{e}");
    }
}
