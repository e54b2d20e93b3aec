//! Registry credentials from a docker `config.json` (or podman `auth.json`): basic auth from
//! `auth`/`username`+`password`, bearer registry tokens from `registrytoken`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use oci_client::secrets::RegistryAuth;
use serde::Deserialize;

/// Why the auth file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read auth file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("malformed auth file {path}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("auth file {path}: entry for {registry:?} has an undecodable \"auth\" field")]
    Entry { path: PathBuf, registry: String },
}

#[derive(Default, Deserialize)]
struct ConfigFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
}

#[derive(Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    registrytoken: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

/// Credentials per registry host.
#[derive(Clone, Default)]
pub struct Credentials {
    by_host: BTreeMap<String, RegistryAuth>,
    source: Option<PathBuf>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("hosts", &self.by_host.keys().collect::<Vec<_>>())
            .field("source", &self.source)
            .finish()
    }
}

impl Credentials {
    /// No credentials: every registry is accessed anonymously.
    pub fn anonymous() -> Self {
        Self::default()
    }

    /// Loads a docker `config.json`.
    pub fn load(path: &Path) -> Result<Self, AuthError> {
        let text = std::fs::read(path).map_err(|source| AuthError::Read {
            path: path.into(),
            source,
        })?;
        let file: ConfigFile = serde_json::from_slice(&text).map_err(|source| AuthError::Json {
            path: path.into(),
            source,
        })?;
        let mut by_host = BTreeMap::new();
        for (key, entry) in file.auths {
            let host = normalize_host(&key);
            let auth = if let Some(token) = entry.registrytoken {
                RegistryAuth::Bearer(token)
            } else if let (Some(u), Some(p)) = (entry.username, entry.password) {
                RegistryAuth::Basic(u, p)
            } else if let Some(b64) = entry.auth {
                let bad = || AuthError::Entry {
                    path: path.into(),
                    registry: key.clone(),
                };
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(b64.trim())
                    .map_err(|_| bad())?;
                let raw = String::from_utf8(raw).map_err(|_| bad())?;
                let (u, p) = raw.split_once(':').ok_or_else(bad)?;
                RegistryAuth::Basic(u.to_string(), p.to_string())
            } else {
                if entry.identitytoken.is_some() {
                    tracing::warn!(registry = %key, "auth file: identitytoken (OAuth refresh token) is not supported; using anonymous access");
                }
                continue;
            };
            by_host.insert(host, auth);
        }
        Ok(Self {
            by_host,
            source: Some(path.into()),
        })
    }

    /// Credentials for `registry` (a host[:port]), anonymous when none are configured.
    pub fn for_registry(&self, registry: &str) -> RegistryAuth {
        self.by_host
            .get(&normalize_host(registry))
            .cloned()
            .unwrap_or(RegistryAuth::Anonymous)
    }

    /// Where the credentials came from (for error hints).
    pub fn source(&self) -> Option<&Path> {
        self.source.as_deref()
    }

    pub fn has(&self, registry: &str) -> bool {
        self.by_host.contains_key(&normalize_host(registry))
    }
}

/// `https://index.docker.io/v1/` → `docker.io`, `http://127.0.0.1:5000` → `127.0.0.1:5000`.
fn normalize_host(key: &str) -> String {
    let k = key.trim();
    let k = k
        .strip_prefix("https://")
        .or_else(|| k.strip_prefix("http://"))
        .unwrap_or(k);
    let host = k.split('/').next().unwrap_or(k);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".to_string()
        }
        h => h.to_ascii_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_auth_user_password_and_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let b64 = base64::engine::general_purpose::STANDARD.encode("alice:s3cret:x");
        std::fs::write(
            &path,
            format!(
                r#"{{"auths":{{"127.0.0.1:5000":{{"auth":"{b64}"}},
                "https://index.docker.io/v1/":{{"username":"bob","password":"pw"}},
                "http://quay.io":{{"registrytoken":"tok"}},
                "ghcr.io":{{"identitytoken":"refresh"}}}}}}"#
            ),
        )
        .unwrap();
        let c = Credentials::load(&path).unwrap();
        assert_eq!(
            c.for_registry("127.0.0.1:5000"),
            RegistryAuth::Basic("alice".into(), "s3cret:x".into())
        );
        assert_eq!(
            c.for_registry("docker.io"),
            RegistryAuth::Basic("bob".into(), "pw".into())
        );
        assert_eq!(
            c.for_registry("quay.io"),
            RegistryAuth::Bearer("tok".into())
        );
        assert_eq!(c.for_registry("ghcr.io"), RegistryAuth::Anonymous);
        assert_eq!(c.for_registry("elsewhere:1"), RegistryAuth::Anonymous);
    }

    #[test]
    fn names_the_file_on_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, r#"{"auths":{"h":{"auth":"!!!"}}}"#).unwrap();
        let err = Credentials::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("config.json") && err.contains("\"h\""),
            "{err}"
        );
        std::fs::write(&path, "{").unwrap();
        assert!(matches!(
            Credentials::load(&path),
            Err(AuthError::Json { .. })
        ));
    }
}
