//! Errors building a provider. Sending never errors (failures are classified outcomes); only
//! start-up can fail, and then the process should refuse to start with the message below.

/// A provider could not be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is invalid.
    #[error("provider {provider}: {field}: {reason}")]
    Config {
        /// The configured provider name.
        provider: String,
        /// The offending field, as written in the TOML section.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The HTTP client could not be built (TLS backend initialisation).
    #[cfg(feature = "http")]
    #[error("provider {provider}: cannot build the HTTP client: {source}")]
    Client {
        /// The configured provider name.
        provider: String,
        /// The underlying error.
        #[source]
        source: reqwest::Error,
    },
}

impl Error {
    /// A configuration error for `field` of `provider`.
    pub(crate) fn config(provider: &str, field: &'static str, reason: impl Into<String>) -> Self {
        Error::Config { provider: provider.to_owned(), field, reason: reason.into() }
    }
}
