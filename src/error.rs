//! The crate's one error type.

/// Everything that can go wrong in the operator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API request failed: {0}")]
    Kube(#[source] kube::Error),

    #[error("leader election stopped before this process became leader")]
    LeaseManagerStopped,

    #[error("leader election failed: {0}")]
    Lease(#[source] kube_lease_manager::LeaseManagerError),

    #[error("http server failed: {0}")]
    Http(#[source] std::io::Error),
}

impl From<kube::Error> for Error {
    fn from(e: kube::Error) -> Self {
        Self::Kube(e)
    }
}

impl Error {
    /// A short, stable label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube(e) => kube_error_label(e),
            Self::LeaseManagerStopped => "lease",
            Self::Lease(_) => "lease",
            Self::Http(_) => "http",
        }
    }
}

/// The metrics label of a failed API request.
pub fn kube_error_label(e: &kube::Error) -> &'static str {
    match e {
        kube::Error::Api(status) => match status.code {
            403 => "forbidden",
            404 => "not_found",
            409 => "conflict",
            422 => "invalid",
            429 => "throttled",
            _ => "api",
        },
        _ => "transport",
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
