//! What is checked of the server's certificate, and against which roots.
//!
//! Three levels, one per group of `sslmode`s (see [`crate::options`]):
//!
//! - [`Verification::None`]: the certificate is not judged (`prefer` and
//!   `require` without a root file). The handshake's signatures are still
//!   checked against the key the server presented, and the session's
//!   channel binding ties SCRAM authentication to that key, so a
//!   man-in-the-middle cannot relay the login.
//! - [`Verification::Chain`]: the certificate must chain to a trusted root
//!   and be valid now; any host name (`verify-ca`, and `prefer`/`require`
//!   with a root file).
//! - [`Verification::Full`]: the chain and the host name (`verify-full`),
//!   rustls' own `WebPkiServerVerifier`.
//!
//! Roots come from a PEM file (`sslrootcert=/path`) or from the system's
//! store, read with `rustls-native-certs`. Why the system's store rather
//! than a compiled-in bundle (`webpki-roots`): it is what libpq's
//! `sslrootcert=system` means, it is kept current by the operating system's
//! updates rather than by our releases, and an operator can add a private
//! CA to it (`update-ca-certificates`, or `SSL_CERT_FILE`/`SSL_CERT_DIR`,
//! which `rustls-native-certs` honours) without a code change. The
//! container images ship Debian's `ca-certificates`.
//!
//! The crypto provider is *ring*, the one `reqwest` already brings into
//! both binaries.

use std::fmt;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::options::{ConfigError, RootSource};

/// How much of the server's certificate is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verification {
    None,
    Chain,
    Full,
}

impl fmt::Display for Verification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::None => "none",
            Self::Chain => "chain",
            Self::Full => "chain and host name",
        })
    }
}

/// The provider every Postgres TLS session uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The trusted roots from `source`; an error when there are none.
pub fn roots(source: &RootSource) -> Result<Arc<RootCertStore>, ConfigError> {
    let mut store = RootCertStore::empty();
    match source {
        RootSource::File(path) => {
            let certificates = CertificateDer::pem_file_iter(path)
                .map_err(|error| pem_error(path, error))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|error| pem_error(path, error))?;
            for certificate in certificates {
                store
                    .add(certificate)
                    .map_err(|error| ConfigError::RootCertificates {
                        path: path.clone(),
                        reason: format!("not a usable CA certificate ({error})"),
                    })?;
            }
            if store.is_empty() {
                return Err(ConfigError::RootCertificates {
                    path: path.clone(),
                    reason: "holds no PEM certificate".into(),
                });
            }
        }
        RootSource::System => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                let reason = if found.errors.is_empty() {
                    "no certificates found; install ca-certificates or set SSL_CERT_FILE".to_owned()
                } else {
                    found
                        .errors
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; ")
                };
                return Err(ConfigError::SystemRoots { reason });
            }
        }
    }
    Ok(Arc::new(store))
}

fn pem_error(path: &std::path::Path, error: rustls::pki_types::pem::Error) -> ConfigError {
    match error {
        rustls::pki_types::pem::Error::Io(source) => ConfigError::RootFile {
            path: path.to_owned(),
            source,
        },
        other => ConfigError::RootCertificates {
            path: path.to_owned(),
            reason: format!("not PEM ({other})"),
        },
    }
}

/// The rustls client settings for `verification`; `roots` must be given
/// for [`Verification::Chain`] and [`Verification::Full`].
pub fn client_config(
    verification: Verification,
    roots: Option<&Arc<RootCertStore>>,
) -> Result<Arc<ClientConfig>, ConfigError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(ConfigError::Tls)?;
    let algorithms = provider.signature_verification_algorithms;
    let roots = || roots.map_or_else(|| Arc::new(RootCertStore::empty()), Arc::clone);
    let mut config = match verification {
        Verification::Full => {
            let verifier = WebPkiServerVerifier::builder_with_provider(roots(), provider)
                .build()
                .map_err(|error| ConfigError::Tls(rustls::Error::General(error.to_string())))?;
            builder.with_webpki_verifier(verifier).with_no_client_auth()
        }
        Verification::Chain => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ChainOnly {
                roots: roots(),
                algorithms,
            }))
            .with_no_client_auth(),
        Verification::None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate { algorithms }))
            .with_no_client_auth(),
    };
    // What libpq 17 sends; Postgres requires it for direct TLS negotiation
    // (`sslnegotiation=direct`) and ignores it otherwise.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(Arc::new(config))
}

/// `verify-ca`: the chain to a trusted root, not the name.
#[derive(Debug)]
struct ChainOnly {
    roots: Arc<RootCertStore>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let certificate = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &certificate,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// `prefer`/`require` without a root file: encrypted, certificate unjudged
/// (handshake signatures still checked).
#[derive(Debug)]
struct AnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
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
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
