//! The TLS listener's certificate and configuration (`--tls`): rustls on
//! the `ring` provider, with the certificate chain and key of `--tls-cert`
//! and `--tls-key` (PEM), or a self-signed certificate generated at start.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::{self, PemObject};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::{self, ServerConfig};

/// The names a generated certificate is issued for.
const GENERATED_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// The TLS listener's acceptor, and what to tell the operator about its
/// certificate.
#[derive(Clone)]
pub struct Tls {
    /// Runs the server side of each handshake.
    pub acceptor: TlsAcceptor,
    /// SHA-256 of the (leaf) certificate's DER, as colon-separated hex pairs.
    pub fingerprint: String,
    /// Whether the certificate was generated at start (self-signed).
    pub generated: bool,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("fingerprint", &self.fingerprint)
            .field("generated", &self.generated)
            .finish_non_exhaustive()
    }
}

/// Why the TLS listener has no certificate.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("cannot read {path}: {source}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: pem::Error,
    },
    /// The certificate file holds no certificate.
    #[error("{0} holds no PEM certificate")]
    NoCertificate(PathBuf),
    /// The self-signed certificate could not be generated.
    #[error("cannot generate a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the certificate and key (e.g. a key that does not match).
    #[error("the TLS certificate and key are not usable: {0}")]
    Config(#[from] rustls::Error),
}

/// The acceptor for `cert` and `key` (PEM files: the certificate chain,
/// leaf first, and its private key), or, without them, for a self-signed
/// certificate generated now.
///
/// # Errors
/// [`TlsError`] for files that cannot be read, or a certificate and key
/// that rustls refuses.
pub fn load(cert: Option<&Path>, key: Option<&Path>) -> Result<Tls, TlsError> {
    let (chain, key, generated) = match (cert, key) {
        (Some(cert), Some(key)) => (read_chain(cert)?, read_key(key)?, false),
        _ => {
            let (chain, key) = generate()?;
            (chain, key, true)
        }
    };
    let fingerprint = fingerprint(&chain[0]);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    Ok(Tls {
        acceptor: TlsAcceptor::from(Arc::new(config)),
        fingerprint,
        generated,
    })
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let failed = |source| TlsError::Pem {
        path: path.to_owned(),
        source,
    };
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(failed)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(failed)?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(path.to_owned()));
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|source| TlsError::Pem {
        path: path.to_owned(),
        source,
    })
}

/// A self-signed certificate for [`GENERATED_NAMES`] and its key.
fn generate() -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let names: Vec<String> = GENERATED_NAMES.iter().map(|name| (*name).to_owned()).collect();
    let certified = rcgen::generate_simple_self_signed(names)?;
    let key = PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der());
    Ok((vec![certified.cert.der().clone()], key.into()))
}

/// SHA-256 of a certificate's DER as `AB:CD:…` (as `openssl x509
/// -fingerprint -sha256` prints it).
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    Sha256::digest(cert.as_ref())
        .iter()
        .map(|byte| format!("{byte:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}
