//! The TLS client settings every transport shares: the bundled webpki roots or
//! the system's store, plus `ca_file`, and an optional client certificate
//! (mTLS). TLS 1.2 and 1.3 only: rustls offers nothing older.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::TransportError;
use crate::config::EndpointConfig;

/// The endpoint's rustls client configuration (without ALPN: each transport
/// adds what it speaks).
pub(super) fn client_config(ep: &EndpointConfig) -> Result<rustls::ClientConfig, TransportError> {
    let pem_err =
        |what: &'static str, path: &std::path::Path, reason: String| TransportError::Pem {
            endpoint: ep.name.clone(),
            what,
            path: path.display().to_string(),
            reason,
        };
    let mut roots = rustls::RootCertStore::empty();
    if ep.native_roots {
        let native = rustls_native_certs::load_native_certs();
        for e in &native.errors {
            tracing::warn!(endpoint = %ep.name, error = %e, "while loading the system's trust store");
        }
        let (added, _) = roots.add_parsable_certificates(native.certs);
        if added == 0 {
            return Err(TransportError::Pem {
                endpoint: ep.name.clone(),
                what: "tls_roots",
                path: "native".into(),
                reason: "the system trust store holds no usable certificate".into(),
            });
        }
    } else {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    if let Some(path) = &ep.ca_file {
        let certs = read_certs(path).map_err(|r| pem_err("ca_file", path, r))?;
        for c in certs {
            roots
                .add(c)
                .map_err(|e| pem_err("ca_file", path, e.to_string()))?;
        }
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    Ok(match (&ep.client_cert_file, &ep.client_key_file) {
        (Some(cert), Some(key)) => {
            let chain = read_certs(cert).map_err(|r| pem_err("client_cert_file", cert, r))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| pem_err("client_key_file", key, e.to_string()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|source| TransportError::Tls {
                    endpoint: ep.name.clone(),
                    source,
                })?
        }
        _ => builder.with_no_client_auth(),
    })
}

fn read_certs(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| e.to_string())?
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err("no certificate in file".into());
    }
    Ok(certs)
}
