//! TLS with rustls, both ways: terminating clients (`--listen-tls`, certificates chosen
//! by SNI, ALPN `h2`/`http/1.1`, resumption by tickets and a per-shard session cache,
//! reload on SIGHUP) and connecting to TLS backends (`https://` servers, verified against
//! the system roots or `--backend-ca`, SNI from the server's name, optional client
//! certificate).
//!
//! One crypto provider, `aws-lc-rs` (chosen by handshake cost against build time on this
//! machine: see docs/tuning.md), and every config is built with `builder_with_provider`,
//! so two providers can never both be active (`ring` is not even compiled in). The certificate store is shared by all shards
//! behind an `ArcSwap`: a reload swaps it whole, new handshakes see the new certificates,
//! open connections keep the ones they started with, and a file that does not load
//! leaves the old store in place.

pub mod stream;

use std::fmt;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert, ServerSessionMemoryCache};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

pub use stream::TlsStream;

/// The one crypto provider ringway uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Why TLS material could not be loaded: which file, and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {why}")]
pub struct TlsError {
    pub path: String,
    pub why: String,
}

impl TlsError {
    fn new(path: &Path, why: impl fmt::Display) -> TlsError {
        TlsError {
            path: path.display().to_string(),
            why: why.to_string(),
        }
    }
}

/// A certificate chain and its key, as configured.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CertPair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let iter = CertificateDer::pem_file_iter(path).map_err(|e| TlsError::new(path, e))?;
    let certs = iter
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::new(path, format!("not a PEM certificate file ({e})")))?;
    if certs.is_empty() {
        return Err(TlsError::new(path, "no certificate in the file"));
    }
    Ok(certs)
}

fn load_pair(pair: &CertPair, provider: &CryptoProvider) -> Result<Arc<CertifiedKey>, TlsError> {
    let certs = load_certs(&pair.cert)?;
    let key = PrivateKeyDer::from_pem_file(&pair.key)
        .map_err(|e| TlsError::new(&pair.key, format!("no usable private key ({e})")))?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::new(&pair.key, e))?;
    let ck = CertifiedKey::new(certs, signing);
    ck.keys_match().map_err(|e| {
        TlsError::new(
            &pair.key,
            format!("does not match {} ({e})", pair.cert.display()),
        )
    })?;
    Ok(Arc::new(ck))
}

/// The certificates served, in configuration order (the first is the default).
struct CertStore {
    keys: Vec<Arc<CertifiedKey>>,
}

impl CertStore {
    fn load(pairs: &[CertPair], provider: &CryptoProvider) -> Result<CertStore, TlsError> {
        let keys = pairs
            .iter()
            .map(|p| load_pair(p, provider))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(CertStore { keys })
    }

    /// The first certificate valid for `sni` (wildcards as webpki reads them), else the
    /// default.
    fn choose(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = sni.and_then(|s| ServerName::try_from(s.to_string()).ok()) {
            for ck in &self.keys {
                let Some(leaf) = ck.cert.first() else {
                    continue;
                };
                let valid = webpki::EndEntityCert::try_from(leaf)
                    .is_ok_and(|ee| ee.verify_is_valid_for_subject_name(&name).is_ok());
                if valid {
                    return Some(ck.clone());
                }
            }
        }
        self.keys.first().cloned()
    }
}

/// Chooses the certificate for a handshake from the current store.
struct Resolver(Arc<ArcSwap<CertStore>>);

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ringway::tls::Resolver")
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.load().choose(hello.server_name())
    }
}

/// TLS termination for the whole process: the certificate store every shard serves
/// from, the ticket keys shared by all shards (a resumed client may land on any shard),
/// and the reload counters.
pub struct ServerTls {
    pairs: Vec<CertPair>,
    provider: Arc<CryptoProvider>,
    store: Arc<ArcSwap<CertStore>>,
    ticketer: Arc<dyn rustls::server::ProducesTickets>,
    pub reloads: AtomicU64,
    pub reload_failures: AtomicU64,
}

impl ServerTls {
    /// Loads every pair; the first error names its file.
    pub fn load(pairs: Vec<CertPair>) -> Result<ServerTls, TlsError> {
        let provider = provider();
        let store = CertStore::load(&pairs, &provider)?;
        let ticketer = rustls::crypto::aws_lc_rs::Ticketer::new().map_err(|e| TlsError {
            path: "(ticket keys)".into(),
            why: e.to_string(),
        })?;
        Ok(ServerTls {
            pairs,
            provider,
            store: Arc::new(ArcSwap::from_pointee(store)),
            ticketer,
            reloads: AtomicU64::new(0),
            reload_failures: AtomicU64::new(0),
        })
    }

    /// A shard's server config: the shared store and ticket keys, its own session cache.
    pub fn shard_config(&self) -> Result<Arc<ServerConfig>, rustls::Error> {
        let mut cfg = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Resolver(self.store.clone())));
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        cfg.session_storage = ServerSessionMemoryCache::new(8192);
        cfg.ticketer = self.ticketer.clone();
        Ok(Arc::new(cfg))
    }

    /// Re-reads every certificate and key. On success new handshakes use them; on
    /// failure the old ones stay, and the error says which file and why.
    pub fn reload(&self) -> Result<(), TlsError> {
        match CertStore::load(&self.pairs, &self.provider) {
            Ok(store) => {
                self.store.store(Arc::new(store));
                self.reloads.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                self.reload_failures.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }
}

/// How ringway talks TLS to one backend's servers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct BackendTlsSpec {
    /// CA bundle to verify servers with; `None`: the system roots.
    pub ca: Option<PathBuf>,
    /// Client certificate and key (mTLS).
    pub client_cert: Option<CertPair>,
    /// SNI and the name verified, instead of the server's host name.
    pub sni: Option<String>,
}

/// Client configs for TLS backends (ALPN `http/1.1` for `https://`, `h2` for `h2://`),
/// with their digest for the pool key.
pub struct BackendTls {
    pub config: Arc<ClientConfig>,
    pub config_h2: Arc<ClientConfig>,
    pub digest: u64,
}

impl BackendTls {
    pub fn build(spec: &BackendTlsSpec) -> Result<BackendTls, TlsError> {
        let mut roots = RootCertStore::empty();
        match &spec.ca {
            Some(path) => {
                for c in load_certs(path)? {
                    roots.add(c).map_err(|e| {
                        TlsError::new(path, format!("not a usable CA certificate ({e})"))
                    })?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                for c in found.certs {
                    let _ = roots.add(c);
                }
                if roots.is_empty() {
                    return Err(TlsError {
                        path: "(system roots)".into(),
                        why: "no CA certificate found; give --backend-ca FILE".into(),
                    });
                }
            }
        }
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError {
                path: "(tls)".into(),
                why: e.to_string(),
            })?
            .with_root_certificates(roots);
        let mut config = match &spec.client_cert {
            Some(pair) => {
                let certs = load_certs(&pair.cert)?;
                let key = PrivateKeyDer::from_pem_file(&pair.key).map_err(|e| {
                    TlsError::new(&pair.key, format!("no usable private key ({e})"))
                })?;
                builder
                    .with_client_auth_cert(certs, key)
                    .map_err(|e| TlsError::new(&pair.key, e))?
            }
            None => builder.with_no_client_auth(),
        };
        let mut config_h2 = config.clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config_h2.alpn_protocols = vec![b"h2".to_vec()];
        let mut h = std::collections::hash_map::DefaultHasher::new();
        spec.hash(&mut h);
        Ok(BackendTls {
            config: Arc::new(config),
            config_h2: Arc::new(config_h2),
            digest: h.finish(),
        })
    }
}
