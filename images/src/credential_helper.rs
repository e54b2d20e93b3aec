//! The docker credential-helper protocol: `docker-credential-NAME get` reads a server address
//! on stdin and prints `{"ServerURL","Username","Secret"}` (docker/docker-credential-helpers).
//! Used for `credHelpers` and `credsStore` in a docker `config.json`.

use std::time::Duration;

use oci_client::secrets::RegistryAuth;
use serde::Deserialize;
use tokio::io::AsyncWriteExt as _;

/// How long a credential helper may take (`pass` may wait on gpg-agent, ECR on AWS).
const TIMEOUT: Duration = Duration::from_secs(30);

/// Why a helper gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    #[error("cannot run credential helper {helper}")]
    Spawn {
        helper: String,
        #[source]
        source: std::io::Error,
    },
    #[error("credential helper {helper} did not answer within {}s", TIMEOUT.as_secs())]
    Timeout { helper: String },
    #[error("credential helper {helper} failed: {message}")]
    Failed { helper: String, message: String },
    #[error("credential helper {helper} printed no valid credentials")]
    Output {
        helper: String,
        #[source]
        source: serde_json::Error,
    },
}

/// What a helper prints for `get`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HelperAnswer {
    #[serde(default)]
    username: String,
    #[serde(default)]
    secret: String,
}

/// The server address a helper is asked about: the docker CLI keeps Docker Hub's under its
/// historical URL, every other registry under its host[:port].
pub fn server_url(host: &str) -> String {
    match host {
        "docker.io" => "https://index.docker.io/v1/".to_string(),
        h => h.to_string(),
    }
}

/// Runs `docker-credential-NAME get` with the server address on stdin. A helper that has
/// nothing stored for the server gives [`RegistryAuth::Anonymous`].
pub async fn get(name: &str, server: &str) -> Result<RegistryAuth, HelperError> {
    let helper = format!("docker-credential-{name}");
    let mut child = tokio::process::Command::new(&helper)
        .arg("get")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| HelperError::Spawn {
            helper: helper.clone(),
            source,
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that exits without reading its input shows up in its answer, not here.
        let _ = stdin.write_all(server.as_bytes()).await;
    }
    let out = tokio::time::timeout(TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| HelperError::Timeout {
            helper: helper.clone(),
        })?
        .map_err(|source| HelperError::Spawn {
            helper: helper.clone(),
            source,
        })?;
    if !out.status.success() {
        let text = String::from_utf8_lossy(if out.stderr.is_empty() {
            &out.stdout
        } else {
            &out.stderr
        })
        .trim()
        .to_string();
        // The helpers' shared "not found" message (credentials.errCredentialsNotFound).
        if text.contains("credentials not found") {
            return Ok(RegistryAuth::Anonymous);
        }
        return Err(HelperError::Failed {
            helper,
            message: if text.is_empty() {
                out.status.to_string()
            } else {
                text
            },
        });
    }
    parse_answer(&helper, &out.stdout)
}

/// A helper's JSON answer as credentials. An empty secret means none are stored; the user name
/// `<token>` marks an OAuth identity token, which needs an exchange corral does not do.
fn parse_answer(helper: &str, stdout: &[u8]) -> Result<RegistryAuth, HelperError> {
    let a: HelperAnswer = serde_json::from_slice(stdout).map_err(|source| HelperError::Output {
        helper: helper.to_string(),
        source,
    })?;
    Ok(match (a.username.as_str(), a.secret) {
        (_, s) if s.is_empty() => RegistryAuth::Anonymous,
        ("<token>", _) => {
            tracing::warn!(%helper, "identity tokens (OAuth refresh tokens) are not supported; using anonymous access");
            RegistryAuth::Anonymous
        }
        (u, s) => RegistryAuth::Basic(u.to_string(), s),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helper_answers() {
        let cases: &[(&str, Option<RegistryAuth>)] = &[
            (
                r#"{"ServerURL":"h","Username":"alice","Secret":"pw"}"#,
                Some(RegistryAuth::Basic("alice".into(), "pw".into())),
            ),
            // docker-credential-pass 0.6 answers "nothing stored" like this.
            (
                r#"{"ServerURL":"h","Username":"","Secret":""}"#,
                Some(RegistryAuth::Anonymous),
            ),
            (
                r#"{"Username":"<token>","Secret":"refresh"}"#,
                Some(RegistryAuth::Anonymous),
            ),
            ("not json", None),
        ];
        for (out, want) in cases {
            let got = parse_answer("docker-credential-x", out.as_bytes()).ok();
            assert_eq!(&got, want, "{out}");
        }
    }

    #[test]
    fn docker_hub_keeps_its_historical_server_url() {
        assert_eq!(server_url("docker.io"), "https://index.docker.io/v1/");
        assert_eq!(server_url("127.0.0.1:5000"), "127.0.0.1:5000");
    }
}
