//! Image references (`[registry/]repository[:tag][@digest]`), normalised the way docker does
//! (`alpine` is `docker.io/library/alpine:latest`).
//!
//! Parsed here with plain string checks following the grammar of distribution's `reference`
//! package (ASCII only), not with `oci_client`'s parser: its grammar is one regex whose Unicode
//! `\w` compiles to ~8 MiB that then stays resident in the daemon for good.

use std::fmt;

use crate::digest::Digest;

/// Why a reference string was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    #[error("invalid image reference {reference:?}: {why}")]
    Invalid {
        reference: String,
        why: &'static str,
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

/// docker's default registry, and its legacy name.
const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_LEGACY: &str = "index.docker.io";
/// Longest repository path distribution accepts.
const NAME_MAX: usize = 255;
/// Longest tag.
const TAG_MAX: usize = 128;

impl ImageRef {
    pub fn parse(s: &str) -> Result<Self, ReferenceError> {
        let invalid = |why| ReferenceError::Invalid {
            reference: s.to_string(),
            why,
        };
        let text = s.trim();
        if text.is_empty() {
            return Err(invalid("empty"));
        }
        let (name_tag, digest) = match text.split_once('@') {
            Some((n, d)) => (n, Some(d)),
            None => (text, None),
        };
        // A tag follows the last ':' after the last '/' (a ':' before it is a registry port).
        let (name, tag) = match name_tag.rfind(':') {
            Some(i) if !name_tag[i..].contains('/') => (&name_tag[..i], Some(&name_tag[i + 1..])),
            _ => (name_tag, None),
        };
        if tag.is_some_and(|t| !valid_tag(t)) {
            return Err(invalid(
                "a tag is 1-128 of A-Z a-z 0-9 _ . - and does not start with . or -",
            ));
        }
        if let Some(d) = digest {
            Digest::parse(d).map_err(|source| ReferenceError::Digest {
                reference: s.to_string(),
                source,
            })?;
        }
        let (registry, repository) = split_registry(name).ok_or_else(|| {
            invalid("the name is [host[:port]/]path with lowercase path components (a-z 0-9 separated by . _ __ or -)")
        })?;
        if repository.len() > NAME_MAX {
            return Err(invalid("the repository name is longer than 255 characters"));
        }
        let inner = match (tag, digest) {
            (Some(t), Some(d)) => oci_client::Reference::with_tag_and_digest(
                registry,
                repository,
                t.to_string(),
                d.to_string(),
            ),
            (None, Some(d)) => {
                oci_client::Reference::with_digest(registry, repository, d.to_string())
            }
            (t, None) => oci_client::Reference::with_tag(
                registry,
                repository,
                t.unwrap_or("latest").to_string(),
            ),
        };
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

/// Splits `name` into registry and repository, normalised like docker: a first component with
/// a `.` or `:` (or `localhost`) is a registry, otherwise the registry is docker.io, where
/// single-component names live under `library/`. `None` if a component is malformed.
fn split_registry(name: &str) -> Option<(String, String)> {
    let (registry, path) = match name.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
            if !valid_host(first) {
                return None;
            }
            (first, rest)
        }
        _ => (DOCKER_HUB, name),
    };
    if !path.split('/').all(valid_path_component) {
        return None;
    }
    let registry = if registry == DOCKER_HUB_LEGACY {
        DOCKER_HUB
    } else {
        registry
    };
    let repository = if registry == DOCKER_HUB && !path.contains('/') {
        format!("library/{path}")
    } else {
        path.to_string()
    };
    Some((registry.to_string(), repository))
}

/// `host[:port]`: dot-separated labels of letters, digits and inner hyphens.
fn valid_host(s: &str) -> bool {
    let (host, port) = match s.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    };
    let label = |l: &str| {
        !l.is_empty()
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    host.split('.').all(label)
        && port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// A path component: runs of `a-z0-9` joined by one `.`, one or two `_`, or any number of `-`.
fn valid_path_component(c: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = c.as_bytes();
    let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    if !alnum(first) || !alnum(last) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-')) {
            return false;
        }
    }
    true
}

/// A tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn valid_tag(t: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    t.len() <= TAG_MAX
        && t.bytes().next().is_some_and(word)
        && t.bytes().all(|b| word(b) || b == b'.' || b == b'-')
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

    #[test]
    fn follows_docker_normalisation_and_grammar() {
        // (input, registry, repository, tag) — cases from distribution's reference tests.
        let ok = [
            ("busybox", "docker.io", "library/busybox", Some("latest")),
            ("test.com:tag", "docker.io", "library/test.com", Some("tag")),
            (
                "test.com:5000",
                "docker.io",
                "library/test.com",
                Some("5000"),
            ),
            ("test.com/repo:tag", "test.com", "repo", Some("tag")),
            ("test:5000/repo", "test:5000", "repo", Some("latest")),
            ("test:5000/repo:tag", "test:5000", "repo", Some("tag")),
            (
                "localhost/corral/testguest:v1",
                "localhost",
                "corral/testguest",
                Some("v1"),
            ),
            (
                "index.docker.io/library/alpine",
                "docker.io",
                "library/alpine",
                Some("latest"),
            ),
            (
                "kubevirt/cirros",
                "docker.io",
                "kubevirt/cirros",
                Some("latest"),
            ),
            (
                "a.b-c.io/x__y/z--w.v:Tag_1.0-rc",
                "a.b-c.io",
                "x__y/z--w.v",
                Some("Tag_1.0-rc"),
            ),
            (
                "sub-dom1.foo.com/bar/baz/quux",
                "sub-dom1.foo.com",
                "bar/baz/quux",
                Some("latest"),
            ),
        ];
        for (input, registry, repository, tag) in ok {
            let r = ImageRef::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(
                (r.registry(), r.repository(), r.tag()),
                (registry, repository, tag),
                "{input}"
            );
        }
        let bad = [
            "",
            ":justtag",
            "Uppercase/repo",
            "repo/Upper",
            "a..b/c",
            "-foo/bar",
            "foo/-bar",
            "foo/bar-",
            "foo/bar:",
            "foo/bar:-tag",
            "foo/bar:.tag",
            "foo/a___b",
            "foo//bar",
            "host:port/repo",
            "-host.com/repo",
            "host-.com/repo",
            "repo:täg",
            "rèpo",
        ];
        for input in bad {
            assert!(ImageRef::parse(input).is_err(), "{input} must be rejected");
        }
        let long_tag = format!("repo:{}", "a".repeat(129));
        assert!(ImageRef::parse(&long_tag).is_err());
        let long_name = format!("repo/{}", "a".repeat(256));
        assert!(ImageRef::parse(&long_name).is_err());
        let d = Digest::of(b"x");
        let both = ImageRef::parse(&format!("quay.io/a/b:v1@{d}")).unwrap();
        assert_eq!((both.tag(), both.digest()), (Some("v1"), Some(d)));
    }
}
