//! TLS for the secure client port (rustls, ring provider): the server key and
//! certificate chain from one PEM file, client certificates checked against
//! a PEM trust store when `ssl.clientAuth` is want or need.

use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use tokio_rustls::TlsAcceptor;

use crate::config::{ClientAuth, TlsSettings};

fn read(path: &std::path::Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}

pub fn acceptor(t: &TlsSettings) -> Result<TlsAcceptor, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let pem = read(&t.key_store)?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", t.key_store.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{}: no certificate in the key store",
            t.key_store.display()
        ));
    }
    let key = rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| format!("{}: {e}", t.key_store.display()))?
        .ok_or_else(|| format!("{}: no private key in the key store", t.key_store.display()))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match (&t.trust_store, t.client_auth) {
        (_, ClientAuth::None) | (None, _) => builder.with_no_client_auth(),
        (Some(ts), auth) => {
            let mut roots = RootCertStore::empty();
            let pem = read(ts)?;
            for c in rustls_pemfile::certs(&mut pem.as_slice()) {
                let c = c.map_err(|e| format!("{}: {e}", ts.display()))?;
                roots.add(c).map_err(|e| format!("{}: {e}", ts.display()))?;
            }
            if roots.is_empty() {
                return Err(format!(
                    "{}: no CA certificate in the trust store",
                    ts.display()
                ));
            }
            let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let v = if auth == ClientAuth::Want {
                v.allow_unauthenticated()
            } else {
                v
            };
            builder.with_client_cert_verifier(v.build().map_err(|e| e.to_string())?)
        }
    };
    let cfg = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("{}: {e}", t.key_store.display()))?;
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}
