//! Registry credentials from a docker `config.json` (or podman `auth.json`): basic auth from
//! `auth`/`username`+`password`, bearer registry tokens from `registrytoken`, and docker
//! credential helpers (`credHelpers` per registry, `credsStore` for all), which are run as
//! `docker-credential-NAME get` exactly as the docker CLI runs them.
//!
//! Lookup order for a registry: its `credHelpers` entry, then its `auths` entry, then
//! `credsStore`. Helper answers are cached for a minute (a pull asks several times).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use oci_client::secrets::RegistryAuth;
use serde::Deserialize;

use crate::credential_helper::{self as helper, HelperError};

/// How long a helper's answer is reused.
const HELPER_CACHE: Duration = Duration::from_secs(60);

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
    #[error(transparent)]
    Helper(#[from] HelperError),
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConfigFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default)]
    cred_helpers: BTreeMap<String, String>,
    #[serde(default)]
    creds_store: Option<String>,
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
    /// Host → helper name (`credHelpers`).
    helpers: BTreeMap<String, String>,
    /// Helper for every other host (`credsStore`).
    store: Option<String>,
    source: Option<PathBuf>,
    /// Host → (when asked, answer) for helper lookups.
    cache: Arc<Mutex<BTreeMap<String, (Instant, RegistryAuth)>>>,
}

/// Where the credentials for one registry come from.
#[derive(Debug, PartialEq)]
enum Lookup<'a> {
    /// A `credHelpers` entry: the helper must work.
    Helper(&'a str),
    /// An `auths` entry.
    Static(&'a RegistryAuth),
    /// `credsStore`: a missing helper program only means anonymous access.
    Store(&'a str),
    Anonymous,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("hosts", &self.by_host.keys().collect::<Vec<_>>())
            .field("helpers", &self.helpers)
            .field("store", &self.store)
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
        let helpers = file
            .cred_helpers
            .into_iter()
            .map(|(k, v)| (normalize_host(&k), v))
            .collect();
        Ok(Self {
            by_host,
            helpers,
            store: file.creds_store.filter(|s| !s.trim().is_empty()),
            source: Some(path.into()),
            cache: Arc::default(),
        })
    }

    fn lookup(&self, host: &str) -> Lookup<'_> {
        if let Some(h) = self.helpers.get(host) {
            Lookup::Helper(h)
        } else if let Some(a) = self.by_host.get(host) {
            Lookup::Static(a)
        } else if let Some(s) = &self.store {
            Lookup::Store(s)
        } else {
            Lookup::Anonymous
        }
    }

    /// Credentials for `registry` (a host[:port]), anonymous when none are configured. Runs the
    /// registry's credential helper when one is configured.
    pub async fn for_registry(&self, registry: &str) -> Result<RegistryAuth, AuthError> {
        let host = normalize_host(registry);
        let (helper, required) = match self.lookup(&host) {
            Lookup::Static(a) => return Ok(a.clone()),
            Lookup::Anonymous => return Ok(RegistryAuth::Anonymous),
            Lookup::Helper(h) => (h, true),
            Lookup::Store(s) => (s, false),
        };
        if let Some((at, auth)) = self.cache_lock().get(&host)
            && at.elapsed() < HELPER_CACHE
        {
            return Ok(auth.clone());
        }
        let auth = match helper::get(helper, &helper::server_url(&host)).await {
            Ok(auth) => auth,
            Err(HelperError::Spawn { helper, source })
                if !required && source.kind() == std::io::ErrorKind::NotFound =>
            {
                tracing::warn!(%helper, registry = %host, "credsStore helper not installed; using anonymous access");
                RegistryAuth::Anonymous
            }
            Err(e) => return Err(e.into()),
        };
        self.cache_lock()
            .insert(host, (Instant::now(), auth.clone()));
        Ok(auth)
    }

    fn cache_lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, (Instant, RegistryAuth)>> {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Explains a 401/403 from `registry`: which credentials were sent, or why none were.
    pub fn refusal_hint(&self, registry: &str) -> String {
        let host = normalize_host(registry);
        let file = || {
            self.source
                .as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        };
        match self.lookup(&host) {
            Lookup::Static(_) => format!(" with the credentials from {}", file()),
            Lookup::Helper(h) | Lookup::Store(h) => {
                let gave_none = matches!(
                    self.cache_lock().get(&host),
                    Some((_, RegistryAuth::Anonymous))
                );
                if gave_none {
                    format!(
                        ": docker-credential-{h} (named in {}) gave no credentials for {host}",
                        file()
                    )
                } else {
                    format!(
                        " with the credentials from docker-credential-{h} (named in {})",
                        file()
                    )
                }
            }
            Lookup::Anonymous => match &self.source {
                Some(p) => format!(": no credentials for {registry} in {}", p.display()),
                None => ": no credentials given (use --auth-file)".to_string(),
            },
        }
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

    /// Credentials loaded from `json` written to a config.json, and a runtime for the lookups.
    fn load(json: &str) -> (Credentials, tokio::runtime::Runtime) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, json).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        (Credentials::load(&path).unwrap(), rt)
    }

    #[test]
    fn reads_auth_user_password_and_tokens() {
        let b64 = base64::engine::general_purpose::STANDARD.encode("alice:s3cret:x");
        let (c, rt) = load(&format!(
            r#"{{"auths":{{"127.0.0.1:5000":{{"auth":"{b64}"}},
                "https://index.docker.io/v1/":{{"username":"bob","password":"pw"}},
                "http://quay.io":{{"registrytoken":"tok"}},
                "ghcr.io":{{"identitytoken":"refresh"}}}}}}"#
        ));
        let get = |r: &str| rt.block_on(c.for_registry(r)).unwrap();
        assert_eq!(
            get("127.0.0.1:5000"),
            RegistryAuth::Basic("alice".into(), "s3cret:x".into())
        );
        assert_eq!(
            get("docker.io"),
            RegistryAuth::Basic("bob".into(), "pw".into())
        );
        assert_eq!(get("quay.io"), RegistryAuth::Bearer("tok".into()));
        assert_eq!(get("ghcr.io"), RegistryAuth::Anonymous);
        assert_eq!(get("elsewhere:1"), RegistryAuth::Anonymous);
        assert!(
            c.refusal_hint("elsewhere:1")
                .contains("no credentials for elsewhere:1 in"),
            "{}",
            c.refusal_hint("elsewhere:1")
        );
    }

    #[test]
    fn helpers_come_first_then_auths_then_the_store() {
        let (c, _) = load(
            r#"{"auths":{"a.io":{"username":"u","password":"p"},"b.io":{"username":"u","password":"p"}},
                "credHelpers":{"https://a.io":"ecr-login"},"credsStore":"pass"}"#,
        );
        assert_eq!(c.lookup("a.io"), Lookup::Helper("ecr-login"));
        let basic = RegistryAuth::Basic("u".into(), "p".into());
        assert_eq!(c.lookup("b.io"), Lookup::Static(&basic));
        assert_eq!(c.lookup("c.io"), Lookup::Store("pass"));
        assert!(
            c.refusal_hint("a.io")
                .contains("with the credentials from docker-credential-ecr-login")
        );
    }

    #[test]
    fn a_missing_helper_fails_only_when_named_for_the_registry() {
        let (c, rt) = load(
            r#"{"credHelpers":{"a.io":"corral-no-such-helper"},"credsStore":"corral-no-such-helper"}"#,
        );
        let err = rt.block_on(c.for_registry("a.io")).unwrap_err();
        assert!(
            matches!(&err, AuthError::Helper(HelperError::Spawn { helper, .. }) if helper == "docker-credential-corral-no-such-helper"),
            "{err:?}"
        );
        assert_eq!(
            rt.block_on(c.for_registry("b.io")).unwrap(),
            RegistryAuth::Anonymous
        );
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
