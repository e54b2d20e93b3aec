//! OCI / Docker schema2 manifests, indexes (manifest lists) and image configs: parsing and the
//! linux/amd64 platform choice.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// Every manifest media type a pull accepts.
pub const ACCEPTED: &[&str] = &[OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];

/// Why a manifest or config was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("malformed manifest JSON")]
    Json(#[source] serde_json::Error),
    #[error("Docker schema1 manifests are not supported (re-push the image with a current tool)")]
    Schema1,
    #[error("unsupported manifest media type {0:?}")]
    MediaType(String),
    #[error("no linux/amd64 image in the index (it has: {0})")]
    NoPlatform(String),
    #[error("layer {digest} has media type {media_type:?}, which is not a container image layer")]
    LayerType { digest: Digest, media_type: String },
    #[error("the image has no layers")]
    NoLayers,
    #[error("malformed image config JSON")]
    Config(#[source] serde_json::Error),
}

/// A content descriptor (manifest entry, config or layer).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: Digest,
    #[serde(default)]
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// A single-platform image manifest.
#[derive(Clone, Debug)]
pub struct ImageManifest {
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// What a manifest document turned out to be.
#[derive(Clone, Debug)]
pub enum Manifest {
    Image(ImageManifest),
    Index(Vec<Descriptor>),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    #[serde(default)]
    schema_version: u32,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
}

impl Manifest {
    /// Parses a manifest or index; `content_type` is the registry's header, used when the
    /// document has no `mediaType` field.
    pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<Self, ManifestError> {
        let raw: RawManifest = serde_json::from_slice(bytes).map_err(ManifestError::Json)?;
        if raw.schema_version == 1 {
            return Err(ManifestError::Schema1);
        }
        let media_type = raw.media_type.as_deref().or(content_type).unwrap_or("");
        let is_index = match media_type {
            OCI_INDEX | DOCKER_LIST => true,
            OCI_MANIFEST | DOCKER_MANIFEST => false,
            // OCI allows omitting mediaType; decide by shape.
            "" | "application/json" => raw.manifests.is_some(),
            other => return Err(ManifestError::MediaType(other.to_string())),
        };
        if is_index {
            return Ok(Manifest::Index(raw.manifests.unwrap_or_default()));
        }
        let (Some(config), Some(layers)) = (raw.config, raw.layers) else {
            return Err(ManifestError::MediaType(format!(
                "{media_type} without config and layers"
            )));
        };
        if layers.is_empty() {
            return Err(ManifestError::NoLayers);
        }
        for layer in &layers {
            if !is_layer_type(&layer.media_type) {
                return Err(ManifestError::LayerType {
                    digest: layer.digest.clone(),
                    media_type: layer.media_type.clone(),
                });
            }
        }
        Ok(Manifest::Image(ImageManifest { config, layers }))
    }
}

/// Tar layers, plain or compressed, OCI or Docker (including foreign/non-distributable).
fn is_layer_type(media_type: &str) -> bool {
    media_type.is_empty()
        || media_type.starts_with("application/vnd.oci.image.layer.")
        || media_type.starts_with("application/vnd.docker.image.rootfs.")
}

/// Picks the linux/amd64 entry of an index.
pub fn choose_platform(entries: &[Descriptor]) -> Result<&Descriptor, ManifestError> {
    entries
        .iter()
        .find(|e| {
            e.platform
                .as_ref()
                .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
        })
        .ok_or_else(|| {
            let have: Vec<String> = entries
                .iter()
                .map(|e| match &e.platform {
                    Some(p) => format!("{}/{}", p.os, p.architecture),
                    None => "unknown".to_string(),
                })
                .collect();
            ManifestError::NoPlatform(if have.is_empty() {
                "nothing".into()
            } else {
                have.join(", ")
            })
        })
}

/// The parts of an image config corral uses.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub rootfs: Option<RootFs>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct RootFs {
    #[serde(default)]
    pub diff_ids: Vec<Digest>,
}

impl ImageConfig {
    pub fn parse(bytes: &[u8]) -> Result<Self, ManifestError> {
        serde_json::from_slice(bytes).map_err(ManifestError::Config)
    }

    /// The uncompressed digest of layer `i`, when the config lists it.
    pub fn diff_id(&self, i: usize) -> Option<&Digest> {
        self.rootfs.as_ref().and_then(|r| r.diff_ids.get(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    #[test]
    fn parses_oci_and_docker_manifests() {
        for mt in [OCI_MANIFEST, DOCKER_MANIFEST] {
            let json = format!(
                r#"{{"schemaVersion":2,"mediaType":"{mt}","config":{{"mediaType":"x","digest":"{}","size":2}},
                "layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"{}","size":3}}]}}"#,
                d('a'),
                d('b')
            );
            let Manifest::Image(m) = Manifest::parse(json.as_bytes(), None).unwrap() else {
                panic!()
            };
            assert_eq!(m.layers.len(), 1);
            assert_eq!(m.config.digest.to_string(), d('a'));
        }
    }

    #[test]
    fn chooses_linux_amd64_from_an_index() {
        let json = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_LIST}","manifests":[
            {{"mediaType":"{DOCKER_MANIFEST}","digest":"{}","size":1,"platform":{{"architecture":"arm64","os":"linux"}}}},
            {{"mediaType":"{DOCKER_MANIFEST}","digest":"{}","size":1,"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#,
            d('1'),
            d('2')
        );
        let Manifest::Index(entries) = Manifest::parse(json.as_bytes(), None).unwrap() else {
            panic!()
        };
        assert_eq!(
            choose_platform(&entries).unwrap().digest.to_string(),
            d('2')
        );
        let err = choose_platform(&entries[..1]).unwrap_err().to_string();
        assert!(err.contains("linux/arm64"), "{err}");
    }

    #[test]
    fn rejects_schema1_and_artifacts() {
        assert!(matches!(
            Manifest::parse(br#"{"schemaVersion":1}"#, None),
            Err(ManifestError::Schema1)
        ));
        let json = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"x","digest":"{}","size":2}},
            "layers":[{{"mediaType":"application/vnd.wasm.content.layer.v1+wasm","digest":"{}","size":3}}]}}"#,
            d('a'),
            d('b')
        );
        let err = Manifest::parse(json.as_bytes(), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a container image layer"), "{err}");
    }

    #[test]
    fn config_diff_ids() {
        let json = format!(
            r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{}"]}}}}"#,
            d('c')
        );
        let c = ImageConfig::parse(json.as_bytes()).unwrap();
        assert_eq!(c.diff_id(0).unwrap().to_string(), d('c'));
        assert!(c.diff_id(1).is_none());
    }
}
