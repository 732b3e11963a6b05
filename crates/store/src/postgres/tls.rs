//! PostgreSQL over TLS (contract §7.1): the URL's `sslmode` and
//! `sslrootcert` as libpq reads them, with rustls.
//!
//! - `disable`: plain TCP.
//! - `prefer` (the default) and `require`: TLS if the server offers it
//!   (`require` refuses a server that does not), without checking the
//!   certificate, as libpq does; `require` with `sslrootcert` checks the
//!   chain, as libpq does.
//! - `verify-ca`: the certificate must chain to `sslrootcert`.
//! - `verify-full`: and name the host connected to.
//!
//! `sslrootcert` is a PEM file of CA certificates, or `system` for the
//! platform's trust store (also what `verify-*` use without it).
//! tokio-postgres knows only `disable`, `prefer` and `require`, so both
//! parameters are taken out of the URL here and the stricter modes are
//! `require` for it, with the checking done by the verifier below.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::config::SslMode;
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};

use crate::{StoreError, StoreResult};

/// How a URL asks for TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// Takes `sslmode` and `sslrootcert` out of `url`; returns the rest of the
/// URL, the TLS connector and the mode tokio-postgres should use.
pub(super) fn from_url(url: &str) -> StoreResult<(String, PgTls, SslMode)> {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut kept = Vec::new();
    let (mut mode, mut root) = (Mode::Prefer, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "sslmode" => {
                mode = match percent_decode(value).as_str() {
                    "disable" => Mode::Disable,
                    "allow" | "prefer" => Mode::Prefer,
                    "require" => Mode::Require,
                    "verify-ca" => Mode::VerifyCa,
                    "verify-full" => Mode::VerifyFull,
                    other => {
                        return Err(StoreError::Internal(format!(
                            "invalid PostgreSQL URL: sslmode `{other}` is not disable, prefer, require, verify-ca or verify-full"
                        )));
                    }
                }
            }
            "sslrootcert" => root = Some(percent_decode(value)),
            _ => kept.push(pair),
        }
    }
    // libpq: `require` with a root certificate checks the chain.
    if mode == Mode::Require && root.as_deref().is_some_and(|r| r != "system") {
        mode = Mode::VerifyCa;
    }
    let rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    let ssl_mode = match mode {
        Mode::Disable => SslMode::Disable,
        Mode::Prefer => SslMode::Prefer,
        Mode::Require | Mode::VerifyCa | Mode::VerifyFull => SslMode::Require,
    };
    Ok((rest, PgTls::new(mode, root.as_deref())?, ssl_mode))
}

fn percent_decode(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, ..) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The TLS connector of every connection a store makes.
#[derive(Clone)]
pub(crate) struct PgTls {
    config: Arc<ClientConfig>,
}

impl PgTls {
    fn new(mode: Mode, root: Option<&str>) -> StoreResult<Self> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier: Arc<dyn ServerCertVerifier> = match mode {
            Mode::Disable | Mode::Prefer | Mode::Require => Arc::new(Unchecked(Arc::clone(&provider))),
            Mode::VerifyCa | Mode::VerifyFull => {
                let chain: Arc<dyn ServerCertVerifier> = match root {
                    None | Some("system") => Arc::new(
                        rustls_platform_verifier::Verifier::new(Arc::clone(&provider))
                            .map_err(|e| StoreError::Internal(format!("cannot read the system's trust store: {e}")))?,
                    ),
                    Some(path) => {
                        let mut roots = RootCertStore::empty();
                        for cert in read_pem(path)? {
                            roots.add(cert).map_err(|e| {
                                StoreError::Internal(format!("sslrootcert {path}: not a CA certificate: {e}"))
                            })?;
                        }
                        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                            .build()
                            .map_err(|e| StoreError::Internal(format!("sslrootcert {path}: {e}")))?
                    }
                };
                if mode == Mode::VerifyCa {
                    Arc::new(AnyName(chain))
                } else {
                    chain
                }
            }
        };
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| StoreError::Internal(format!("cannot set up TLS: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(Self {
            config: Arc::new(config),
        })
    }
}

fn read_pem(path: &str) -> StoreResult<Vec<CertificateDer<'static>>> {
    use rustls::pki_types::pem::PemObject;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| StoreError::Internal(format!("sslrootcert {path}: cannot read it: {e}")))?
        .collect::<Result<_, _>>()
        .map_err(|e| StoreError::Internal(format!("sslrootcert {path}: not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(StoreError::Internal(format!(
            "sslrootcert {path}: no certificate in it"
        )));
    }
    Ok(certs)
}

/// `prefer` and `require`: the handshake's signatures are checked, the
/// certificate is not (libpq's behaviour: encryption, not identity).
#[derive(Debug)]
struct Unchecked(Arc<CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must verify; the name in it is not compared.
#[derive(Debug)]
struct AnyName(Arc<dyn ServerCertVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

impl<S> MakeTlsConnect<S> for PgTls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = PgTlsStream<S>;
    type TlsConnect = PgTlsConnect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> io::Result<PgTlsConnect> {
        let name = ServerName::try_from(domain.to_owned())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("`{domain}` as a TLS name: {e}")))?;
        Ok(PgTlsConnect {
            config: Arc::clone(&self.config),
            name,
        })
    }
}

pub(crate) struct PgTlsConnect {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl<S> TlsConnect<S> for PgTlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = PgTlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<PgTlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let stream = tokio_rustls::TlsConnector::from(self.config)
                .connect(self.name, stream)
                .await?;
            Ok(PgTlsStream(stream))
        })
    }
}

pub(crate) struct PgTlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for PgTlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        // SCRAM without channel binding, as libpq's default `prefer` allows.
        ChannelBinding::none()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for PgTlsStream<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for PgTlsStream<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tls_parameters_leave_the_url_and_the_rest_stays() {
        let (rest, _, mode) = from_url("postgres://u@h/db?sslmode=require&application_name=x").unwrap();
        assert_eq!(
            (rest.as_str(), mode),
            ("postgres://u@h/db?application_name=x", SslMode::Require)
        );
        let (rest, _, mode) = from_url("postgres://u@h/db").unwrap();
        assert_eq!((rest.as_str(), mode), ("postgres://u@h/db", SslMode::Prefer));
        let (_, _, mode) = from_url("postgres://u@h/db?sslmode=disable").unwrap();
        assert_eq!(mode, SslMode::Disable);
        let err = from_url("postgres://u@h/db?sslmode=sometimes").err().unwrap();
        assert!(err.to_string().contains("sslmode `sometimes`"), "{err}");
        let err = from_url("postgres://u@h/db?sslmode=verify-full&sslrootcert=%2Fnowhere%2Fca.pem")
            .err()
            .unwrap();
        assert!(err.to_string().contains("sslrootcert /nowhere/ca.pem"), "{err}");
    }
}
