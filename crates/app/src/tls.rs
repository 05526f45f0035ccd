//! HTTPS without a proxy (`[server.tls]`): rustls with the `ring` provider (no C toolchain
//! beyond what `ring` needs, no cmake). The certificate sits behind a resolver that every new
//! handshake asks, so [`ServerCert::reload`] swaps it for new connections while connections
//! already open keep the session they negotiated (decisions.md, "TLS").

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// The PEM files of `[server.tls]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server certificate first, then the intermediates (a "fullchain" file).
    pub cert_file: PathBuf,
    /// Its private key: PKCS#8, PKCS#1 (RSA) or SEC1 (EC), unencrypted.
    pub key_file: PathBuf,
}

/// What was loaded, for the start-up and reload log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertSummary {
    /// Certificates in the chain (the server's own plus its intermediates).
    pub chain_len: usize,
}

/// The certificate the server presents, replaceable while it serves.
pub struct ServerCert {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
}

impl fmt::Debug for ServerCert {
    // Never the key, whatever a caller prints.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerCert").field("files", &self.files).finish_non_exhaustive()
    }
}

impl ServerCert {
    /// Reads and checks both files. Every problem found is returned, each naming its key and
    /// file, in the words `config check` prints.
    pub fn load(files: TlsFiles) -> Result<Arc<Self>, Vec<String>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = read_pair(&files, &provider)?;
        Ok(Arc::new(Self { files, provider, current: RwLock::new(Arc::new(key)) }))
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    pub fn summary(&self) -> CertSummary {
        CertSummary { chain_len: self.certified().cert.len() }
    }

    /// Reads the files again. On success new handshakes present the new certificate; on any
    /// problem the old one stays and the problems are returned.
    pub fn reload(&self) -> Result<CertSummary, Vec<String>> {
        let key = Arc::new(read_pair(&self.files, &self.provider)?);
        let summary = CertSummary { chain_len: key.cert.len() };
        *self.current.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = key;
        Ok(summary)
    }

    /// The end-entity certificate presented now (DER), for tests and diagnostics.
    pub fn presented(&self) -> Option<Vec<u8>> {
        self.certified().cert.first().map(|c| c.as_ref().to_vec())
    }

    fn certified(&self) -> Arc<CertifiedKey> {
        // An Arc swapped whole: a panicking writer cannot leave half of it behind.
        self.current.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// The acceptor the accept loop wraps each connection in: TLS 1.2 and 1.3, HTTP/1.1 only
    /// (the server speaks HTTP/1), the certificate asked of `self` at every handshake.
    pub fn acceptor(self: &Arc<Self>) -> Result<tokio_rustls::TlsAcceptor, String> {
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }
}

impl ResolvesServerCert for ServerCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.certified())
    }
}

fn read_pair(files: &TlsFiles, provider: &CryptoProvider) -> Result<CertifiedKey, Vec<String>> {
    let chain = read_chain(&files.cert_file);
    let key = read_key(&files.key_file);
    let (chain, key) = match (chain, key) {
        (Ok(chain), Ok(key)) => (chain, key),
        (chain, key) => return Err(chain.err().into_iter().chain(key.err()).collect()),
    };
    let cert_file = files.cert_file.display();
    let key_file = files.key_file.display();
    let signing = provider.key_provider.load_private_key(key).map_err(|e| {
        vec![format!(
            "server.tls.key_file: {key_file}: not a usable private key (RSA, ECDSA P-256/P-384 or Ed25519): {e}"
        )]
    })?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => Err(vec![format!(
            "server.tls.key_file: the key in {key_file} does not belong to the first certificate of {cert_file} (the server's own certificate must come first)"
        )]),
        Err(e) => Err(vec![format!("server.tls.cert_file: {cert_file}: the first certificate cannot be read: {e}")]),
    }
}

fn read_file(key: &str, path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("server.tls.{key}: cannot read {}: {e}", path.display()))
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read_file("cert_file", path)?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("server.tls.cert_file: {}: not valid PEM: {e}", path.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "server.tls.cert_file: {} holds no certificate (expected PEM: -----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let pem = read_file("key_file", path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => format!(
            "server.tls.key_file: {} holds no private key (expected unencrypted PEM: -----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY)",
            path.display()
        ),
        e => format!("server.tls.key_file: {}: not valid PEM: {e}", path.display()),
    })
}
