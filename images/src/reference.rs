//! Image references (`[registry/]repository[:tag][@digest]`), normalised the way docker does
//! (`alpine` is `docker.io/library/alpine:latest`).

use std::fmt;

use crate::digest::Digest;

/// Why a reference string was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    #[error("invalid image reference {reference:?}")]
    Invalid {
        reference: String,
        #[source]
        source: oci_client::ParseError,
    },
    #[error("invalid digest in image reference {reference:?}")]
    Digest {
        reference: String,
        #[source]
        source: crate::digest::DigestError,
    },
}

/// A parsed, normalised image reference.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ImageRef {
    inner: oci_client::Reference,
}

impl ImageRef {
    pub fn parse(s: &str) -> Result<Self, ReferenceError> {
        let inner: oci_client::Reference =
            s.trim().parse().map_err(|source| ReferenceError::Invalid {
                reference: s.to_string(),
                source,
            })?;
        if let Some(d) = inner.digest() {
            Digest::parse(d).map_err(|source| ReferenceError::Digest {
                reference: s.to_string(),
                source,
            })?;
        }
        Ok(Self { inner })
    }

    /// The registry host (and port), e.g. `docker.io` or `127.0.0.1:5000`.
    pub fn registry(&self) -> &str {
        self.inner.registry()
    }

    /// The repository path, e.g. `library/alpine`.
    pub fn repository(&self) -> &str {
        self.inner.repository()
    }

    pub fn tag(&self) -> Option<&str> {
        self.inner.tag()
    }

    /// The pinned digest, when the reference names one (`...@sha256:...`).
    pub fn digest(&self) -> Option<Digest> {
        self.inner.digest().and_then(|d| Digest::parse(d).ok())
    }

    /// The same repository, pinned to `digest` (used to fetch a platform manifest).
    pub fn pinned(&self, digest: &Digest) -> Self {
        let inner = oci_client::Reference::with_digest(
            self.registry().to_string(),
            self.repository().to_string(),
            digest.to_string(),
        );
        Self { inner }
    }

    pub(crate) fn oci(&self) -> &oci_client::Reference {
        &self.inner
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.inner.whole())
    }
}

impl std::str::FromStr for ImageRef {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_docker_hub_names() {
        let r = ImageRef::parse("alpine").unwrap();
        assert_eq!(r.registry(), "docker.io");
        assert_eq!(r.repository(), "library/alpine");
        assert_eq!(r.tag(), Some("latest"));
        assert_eq!(r.to_string(), "docker.io/library/alpine:latest");
    }

    #[test]
    fn keeps_registry_port_and_tag() {
        let r = ImageRef::parse("127.0.0.1:5000/corral/testguest:v1").unwrap();
        assert_eq!(r.registry(), "127.0.0.1:5000");
        assert_eq!(r.repository(), "corral/testguest");
        assert_eq!(r.tag(), Some("v1"));
        assert!(r.digest().is_none());
    }

    #[test]
    fn digest_references() {
        let d = Digest::of(b"x");
        let r = ImageRef::parse(&format!("quay.io/kubevirt/cirros@{d}")).unwrap();
        assert_eq!(r.digest(), Some(d.clone()));
        let pinned = ImageRef::parse("quay.io/kubevirt/cirros:latest")
            .unwrap()
            .pinned(&d);
        assert_eq!(pinned.to_string(), format!("quay.io/kubevirt/cirros@{d}"));
    }

    #[test]
    fn rejects_garbage() {
        assert!(ImageRef::parse("a b").is_err());
        assert!(ImageRef::parse("x@sha256:1234").is_err());
    }
}
