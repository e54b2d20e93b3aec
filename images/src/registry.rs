//! The registry side of a pull, on top of `oci-client`: manifests (HEAD for the digest, GET for
//! the document) and blobs streamed to a file while their digest is verified.
//!
//! `oci-client` does the distribution protocol: the `/v2/` challenge, the anonymous or
//! credentialed bearer-token exchange, HTTP basic auth, and plain HTTP for configured hosts.
//!
//! The HTTP client is built on first use, never when the store opens: `oci-client` 0.18 builds a
//! `reqwest` client whose TLS verifier loads the system's CA certificates and panics (an abort in
//! release) when there are none, so a host without `/etc/ssl/certs` could not even import a local
//! archive or start the daemon. Before building it, [`system_roots`] loads those certificates the
//! same way the verifier will (`SSL_CERT_FILE`/`SSL_CERT_DIR`, else the distribution's bundle) and
//! a pull on a host without any fails with [`RegistryError::NoRoots`] instead. That includes a
//! plain-HTTP (`--insecure-registry`) pull: every `oci_client::Client` 0.18 builds also builds a
//! default `reqwest` client (`..Default::default()` in its `TryFrom<ClientConfig>`), whatever
//! its own configuration says (a root-only configuration was tried), and that one panics too.

use std::path::Path;
use std::sync::OnceLock;

use futures_util::StreamExt as _;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use tokio::io::AsyncWriteExt as _;

use crate::auth::Credentials;
use crate::digest::{Digest, Hasher};
use crate::manifest::{ACCEPTED, Descriptor};
use crate::reference::ImageRef;

/// What went wrong talking to a registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot reach registry {registry}{hint}")]
    Unreachable {
        registry: String,
        hint: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("registry {registry} refused access (401/403){hint}")]
    Unauthorized { registry: String, hint: String },
    #[error("cannot get credentials for registry {registry}")]
    Credentials {
        registry: String,
        #[source]
        source: crate::auth::AuthError,
    },
    #[error("{what} not found in registry {registry}")]
    NotFound { what: String, registry: String },
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("blob {digest} is {size} bytes, over the store's size limit of {limit} bytes")]
    TooLarge {
        digest: Digest,
        size: u64,
        limit: u64,
    },
    #[error("blob {digest} ended after {got} of {size} bytes")]
    Truncated { digest: Digest, got: u64, size: u64 },
    #[error("registry {registry} failed on {what}")]
    Protocol {
        registry: String,
        what: String,
        #[source]
        source: OciDistributionError,
    },
    #[error(
        "no CA certificates on this host to verify registry {registry}{hint}: install the \
         ca-certificates package or point SSL_CERT_FILE or SSL_CERT_DIR at a PEM bundle"
    )]
    NoRoots { registry: String, hint: String },
    #[error("cannot set up the registry client")]
    Client(#[source] OciDistributionError),
    #[error("cannot write {path}")]
    Write {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// How many usable CA certificates the system offers, loaded as `reqwest`'s platform verifier
/// loads them (unparsable ones skipped).
pub fn system_roots() -> usize {
    usable_roots(rustls_native_certs::load_native_certs().certs)
}

fn usable_roots(certs: Vec<rustls::pki_types::CertificateDer<'static>>) -> usize {
    let mut store = rustls::RootCertStore::empty();
    store.add_parsable_certificates(certs);
    store.len()
}

/// A registry client with the store's credentials and insecure-registry list.
pub struct RegistryClient {
    /// Built on first use (see the module documentation).
    client: OnceLock<oci_client::Client>,
    creds: Credentials,
    insecure: Vec<String>,
}

impl RegistryClient {
    pub fn new(insecure: &[String], creds: Credentials) -> Self {
        Self {
            client: OnceLock::new(),
            creds,
            insecure: insecure.to_vec(),
        }
    }

    /// The HTTP client, built on the first pull; fails without system CA certificates.
    fn client(&self, r: &ImageRef) -> Result<&oci_client::Client, RegistryError> {
        if let Some(c) = self.client.get() {
            return Ok(c);
        }
        if system_roots() == 0 {
            let registry = r.registry().to_string();
            let hint = if self.insecure.contains(&registry) {
                " (the registry client needs them even for a plain-HTTP registry)".to_string()
            } else {
                String::new()
            };
            return Err(RegistryError::NoRoots { registry, hint });
        }
        // reqwest is built without a default rustls provider (no aws-lc build): install ring's.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config = ClientConfig {
            protocol: ClientProtocol::HttpsExcept(self.insecure.clone()),
            platform_resolver: None,
            connect_timeout: Some(std::time::Duration::from_secs(15)),
            read_timeout: Some(std::time::Duration::from_secs(60)),
            user_agent: concat!("corral/", env!("CARGO_PKG_VERSION")),
            ..Default::default()
        };
        // `try_from`, not `new`: `new` falls back to a default client on error, which panics.
        let client = oci_client::Client::try_from(config).map_err(RegistryError::Client)?;
        Ok(self.client.get_or_init(|| client))
    }

    async fn auth(&self, r: &ImageRef) -> Result<RegistryAuth, RegistryError> {
        self.creds
            .for_registry(r.registry())
            .await
            .map_err(|source| RegistryError::Credentials {
                registry: r.registry().to_string(),
                source,
            })
    }

    /// The digest a tag currently points to (HEAD; no manifest body transferred).
    pub async fn head_digest(&self, r: &ImageRef) -> Result<Digest, RegistryError> {
        let d = self
            .client(r)?
            .fetch_manifest_digest(r.oci(), &self.auth(r).await?)
            .await
            .map_err(|e| self.map_err(r, format!("manifest {r}"), e))?;
        Digest::parse(&d).map_err(|_| RegistryError::Protocol {
            registry: r.registry().into(),
            what: format!("manifest {r}"),
            source: OciDistributionError::SpecViolationError(format!("bad digest header {d:?}")),
        })
    }

    /// Fetches a manifest document and checks it against the digest the reference pins, if any.
    pub async fn manifest(&self, r: &ImageRef) -> Result<(Vec<u8>, Digest), RegistryError> {
        let (bytes, _) = self
            .client(r)?
            .pull_manifest_raw(r.oci(), &self.auth(r).await?, ACCEPTED)
            .await
            .map_err(|e| self.map_err(r, format!("manifest {r}"), e))?;
        let actual = Digest::of(&bytes);
        if let Some(expected) = r.digest()
            && expected != actual
        {
            return Err(RegistryError::DigestMismatch {
                what: format!("manifest {r}"),
                expected,
                actual,
            });
        }
        Ok((bytes.to_vec(), actual))
    }

    /// Streams a blob into `path`, verifying size and digest as it arrives. `progress` gets the
    /// byte count after each chunk.
    pub async fn blob_to_file(
        &self,
        r: &ImageRef,
        desc: &Descriptor,
        path: &Path,
        limit: u64,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<(), RegistryError> {
        let digest = &desc.digest;
        if desc.size > limit {
            return Err(RegistryError::TooLarge {
                digest: digest.clone(),
                size: desc.size,
                limit,
            });
        }
        let what = format!("blob {digest}");
        let digest_str = digest.to_string();
        let mut stream = self
            .client(r)?
            .pull_blob_stream(r.oci(), digest_str.as_str())
            .await
            .map_err(|e| self.map_err(r, what.clone(), e))?;
        let write_err = |source| RegistryError::Write {
            path: path.into(),
            source,
        };
        let file = tokio::fs::File::create(path).await.map_err(write_err)?;
        let mut out = tokio::io::BufWriter::with_capacity(1 << 20, file);
        let mut hasher = Hasher::default();
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                // oci-client's own verification fails the stream at its end: report it as ours.
                Err(e) if hasher.len() == desc.size => {
                    let actual = hasher.finish();
                    if actual != *digest {
                        return Err(RegistryError::DigestMismatch {
                            what,
                            expected: digest.clone(),
                            actual,
                        });
                    }
                    return Err(self.map_err(r, what, OciDistributionError::IoError(e)));
                }
                Err(e) => return Err(self.map_err(r, what, OciDistributionError::IoError(e))),
            };
            if hasher.len() + chunk.len() as u64 > desc.size {
                return Err(RegistryError::Protocol {
                    registry: r.registry().into(),
                    what,
                    source: OciDistributionError::SpecViolationError(format!(
                        "sent more than the {} bytes the manifest declares",
                        desc.size
                    )),
                });
            }
            hasher.update(&chunk);
            out.write_all(&chunk).await.map_err(write_err)?;
            progress(hasher.len());
        }
        out.flush().await.map_err(write_err)?;
        out.into_inner().sync_all().await.map_err(write_err)?;
        if hasher.len() != desc.size {
            return Err(RegistryError::Truncated {
                digest: digest.clone(),
                got: hasher.len(),
                size: desc.size,
            });
        }
        let actual = hasher.finish();
        if actual != *digest {
            return Err(RegistryError::DigestMismatch {
                what,
                expected: digest.clone(),
                actual,
            });
        }
        Ok(())
    }

    fn map_err(&self, r: &ImageRef, what: String, e: OciDistributionError) -> RegistryError {
        let registry = r.registry().to_string();
        let auth_hint = || self.creds.refusal_hint(&registry);
        let not_found = || RegistryError::NotFound {
            what: what.clone(),
            registry: registry.clone(),
        };
        match e {
            OciDistributionError::RequestError(ref re)
                if re.is_connect() || re.is_timeout() || re.is_request() =>
            {
                let chain = error_chain(re);
                let hint = if !self.insecure.contains(&registry)
                    && (chain.contains("InvalidContentType") || chain.contains("corrupt message"))
                {
                    format!(
                        " over HTTPS (it may serve plain HTTP: pass --insecure-registry {registry})"
                    )
                } else {
                    String::new()
                };
                let OciDistributionError::RequestError(re) = e else {
                    unreachable!()
                };
                RegistryError::Unreachable {
                    registry,
                    hint,
                    source: Box::new(re),
                }
            }
            OciDistributionError::UnauthorizedError { .. }
            | OciDistributionError::AuthenticationFailure(_) => RegistryError::Unauthorized {
                hint: auth_hint(),
                registry,
            },
            OciDistributionError::ImageManifestNotFoundError(_) => not_found(),
            OciDistributionError::RegistryError { ref envelope, .. } => {
                if envelope.errors.iter().any(|x| {
                    matches!(
                        x.code,
                        OciErrorCode::ManifestUnknown
                            | OciErrorCode::NameUnknown
                            | OciErrorCode::NotFound
                            | OciErrorCode::BlobUnknown
                    )
                }) {
                    not_found()
                } else if envelope
                    .errors
                    .iter()
                    .any(|x| matches!(x.code, OciErrorCode::Unauthorized | OciErrorCode::Denied))
                {
                    RegistryError::Unauthorized {
                        hint: auth_hint(),
                        registry,
                    }
                } else {
                    RegistryError::Protocol {
                        registry,
                        what,
                        source: e,
                    }
                }
            }
            OciDistributionError::ServerError { code: 404, .. } => not_found(),
            OciDistributionError::ServerError {
                code: 401 | 403, ..
            } => RegistryError::Unauthorized {
                hint: auth_hint(),
                registry,
            },
            other => RegistryError::Protocol {
                registry,
                what,
                source: other,
            },
        }
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = format!("{e:?}");
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(&format!(" {c:?}"));
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unusable_certificates_are_no_roots() {
        assert_eq!(usable_roots(Vec::new()), 0);
        let junk = rustls::pki_types::CertificateDer::from(b"not a certificate".to_vec());
        assert_eq!(usable_roots(vec![junk]), 0);
    }

    #[test]
    fn the_client_is_built_on_first_use() {
        // Opening a store (a local import, the daemon) must not touch TLS.
        let c = RegistryClient::new(&[], Credentials::anonymous());
        assert!(c.client.get().is_none());
        let r = ImageRef::parse("127.0.0.1:1/a/b:latest").unwrap();
        match c.client(&r) {
            Ok(_) => assert!(system_roots() > 0 && c.client.get().is_some()),
            Err(RegistryError::NoRoots { registry, .. }) => {
                assert_eq!(system_roots(), 0);
                assert_eq!(registry, "127.0.0.1:1");
            }
            Err(e) => panic!("{e}"),
        }
    }
}
