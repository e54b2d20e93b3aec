//! The store's top-level error: which operation on which reference or file, with the module
//! error underneath as its source (the CLI prints the whole chain once).

use std::path::PathBuf;
use std::sync::Arc;

use crate::auth::AuthError;
use crate::build::BuildError;
use crate::import::ImportError;
use crate::layout::StoreError;
use crate::manifest::ManifestError;
use crate::reference::ReferenceError;
use crate::registry::RegistryError;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("pull {reference}")]
    Registry {
        reference: String,
        #[source]
        source: Box<RegistryError>,
    },
    #[error("image {reference}")]
    Manifest {
        reference: String,
        #[source]
        source: Box<ManifestError>,
    },
    #[error("image {reference}")]
    Build {
        reference: String,
        #[source]
        source: Box<BuildError>,
    },
    #[error("import {path}")]
    Import {
        path: PathBuf,
        #[source]
        source: Box<ImportError>,
    },
    #[error("image store {root}")]
    Store {
        root: PathBuf,
        #[source]
        source: Box<StoreError>,
    },
    #[error("no image {0} in the store")]
    NotFound(String),
    #[error("image {reference} has no kernel and no kernelBoot override supplies one")]
    NoKernel { reference: String },
    #[error("kernelBoot.container needs kernelPath or initrdPath")]
    KernelBootPaths,
    #[error("image store task failed")]
    Task(#[source] tokio::task::JoinError),
    /// The same failure, shared by every caller of a deduplicated pull.
    #[error(transparent)]
    Shared(Arc<ImageError>),
}

impl ImageError {
    /// Unwraps a shared error when this caller is its only holder.
    pub(crate) fn from_shared(e: Arc<ImageError>) -> Self {
        Arc::try_unwrap(e).unwrap_or_else(ImageError::Shared)
    }
}
