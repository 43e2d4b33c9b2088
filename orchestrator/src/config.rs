//! `node.toml`: what an orchestrator needs beyond the keys in the node directory.
//!
//! ```toml
//! registry_urls = ["http://127.0.0.1:8080"]   # tried in turn
//! registry_root_key = "<64 hex>"              # every registry response must verify
//! listen = "127.0.0.1:30002"                  # GET /status, /metrics; POST /_/catch_up_package
//! images_dir = "images"                       # relative to the node directory
//! poll_interval_ms = 1000
//! replica_stop_grace_ms = 5000
//! tls_extra_ca_file = "mirror-ca.pem"          # optional: more CAs for https package URLs
//! webhooks = ["http://127.0.0.1:9000/events"]  # optional: a JSON event at every upgrade step
//! ```
//!
//! `https://` URLs use rustls (ring) with the Mozilla roots compiled in, so they work
//! without the system's certificate store; `tls_extra_ca_file` (PEM, relative to the
//! node directory) adds roots for package mirrors, say one inside the operator's network.

use serde::{Deserialize, Serialize};
use std::{net::SocketAddr, path::PathBuf};

/// The node directory's configuration file.
pub const FILE_NAME: &str = "node.toml";
/// The most of `node.toml` read: a few hundred bytes in practice.
pub const MAX_CONFIG_BYTES: u64 = 64 * 1024;

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub registry_urls: Vec<String>,
    pub registry_root_key: String,
    pub listen: SocketAddr,
    #[serde(default = "default_images_dir")]
    pub images_dir: PathBuf,
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    #[serde(default = "default_grace_ms")]
    pub replica_stop_grace_ms: u64,
    /// More CA certificates (PEM) trusted for `https://` package URLs.
    #[serde(default)]
    pub tls_extra_ca_file: Option<PathBuf>,
    /// URLs (http or https) that get a JSON event at every step of an upgrade
    /// (`crate::notify`).
    #[serde(default)]
    pub webhooks: Vec<String>,
    /// Nodes of the NNS subnet (their public API, http or https) to replicate the
    /// registry from, every page checked with `nns_public_key` (issue 19). When given,
    /// they replace `registry_urls` as the source of the registry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nns_urls: Vec<String>,
    /// The NNS subnet's public key (hex of its high-threshold group key, from genesis):
    /// required with `nns_urls`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nns_public_key: Option<String>,
}

/// The most NNS node URLs.
pub const MAX_NNS_URLS: usize = 64;

/// The most webhook URLs.
pub const MAX_WEBHOOKS: usize = 8;

fn default_images_dir() -> PathBuf {
    PathBuf::from("images")
}
fn default_poll_interval_ms() -> u64 {
    1000
}
fn default_grace_ms() -> u64 {
    5000
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {reason}")]
    Unreadable { path: String, reason: String },
    #[error("{path}: {rule}")]
    Invalid { path: String, rule: String },
}

impl NodeConfig {
    /// A configuration with the defaults for everything not given.
    pub fn new(
        registry_urls: Vec<String>,
        registry_root_key: String,
        listen: SocketAddr,
        poll_interval_ms: u64,
        webhooks: Vec<String>,
    ) -> Self {
        Self {
            registry_urls,
            registry_root_key,
            listen,
            images_dir: default_images_dir(),
            poll_interval_ms,
            replica_stop_grace_ms: default_grace_ms(),
            tls_extra_ca_file: None,
            webhooks,
            nns_urls: Vec::new(),
            nns_public_key: None,
        }
    }

    /// Replicates the registry from these nodes of the NNS subnet, checked with its key.
    pub fn with_nns(mut self, urls: Vec<String>, public_key: String) -> Self {
        self.nns_urls = urls;
        self.nns_public_key = Some(public_key);
        self
    }

    /// `node.toml`'s text: what `load` reads back (a test checks).
    pub fn to_toml(&self) -> Result<String, String> {
        toml::to_string(self).map_err(|e| format!("node.toml: {e}"))
    }

    /// Reads and validates `DIR/node.toml`.
    pub fn load(node_dir: &std::path::Path) -> Result<Self, ConfigError> {
        let path = node_dir.join(FILE_NAME);
        let shown = path.display().to_string();
        let unreadable = |reason: String| ConfigError::Unreadable {
            path: shown.clone(),
            reason,
        };
        let bytes = durable::read_bounded(&path, MAX_CONFIG_BYTES)
            .map_err(|e| unreadable(e.source.to_string()))?;
        let text = String::from_utf8(bytes).map_err(|e| unreadable(e.to_string()))?;
        Self::parse(&text).map_err(|rule| ConfigError::Invalid { path: shown, rule })
    }

    /// Parses and validates; the error names the broken rule.
    pub fn parse(text: &str) -> Result<Self, String> {
        let c: Self = toml::from_str(text).map_err(|e| e.to_string())?;
        c.validate()?;
        Ok(c)
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.registry_urls.is_empty() {
            return Err("registry_urls must list at least one URL".into());
        }
        for u in &self.registry_urls {
            let parsed = url::Url::parse(u).map_err(|e| format!("registry URL {u:?}: {e}"))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(format!("registry URL {u:?} must be http or https"));
            }
        }
        let key = hex::decode(&self.registry_root_key)
            .map_err(|_| "registry_root_key must be hex".to_string())?;
        crypto::ed25519::Ed25519PublicKey::from_bytes(&key)
            .map_err(|e| format!("registry_root_key: {e}"))?;
        if !(10..=600_000).contains(&self.poll_interval_ms) {
            return Err("poll_interval_ms must be between 10 and 600000".into());
        }
        if self.replica_stop_grace_ms > 600_000 {
            return Err("replica_stop_grace_ms must be at most 600000".into());
        }
        if self.webhooks.len() > MAX_WEBHOOKS {
            return Err(format!("webhooks: at most {MAX_WEBHOOKS} URLs"));
        }
        for u in &self.webhooks {
            let parsed = url::Url::parse(u).map_err(|e| format!("webhook URL {u:?}: {e}"))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(format!("webhook URL {u:?} must be http or https"));
            }
        }
        if self.nns_urls.len() > MAX_NNS_URLS {
            return Err(format!("nns_urls: at most {MAX_NNS_URLS} URLs"));
        }
        for u in &self.nns_urls {
            let parsed = url::Url::parse(u).map_err(|e| format!("NNS node URL {u:?}: {e}"))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(format!("NNS node URL {u:?} must be http or https"));
            }
        }
        match (&self.nns_public_key, self.nns_urls.is_empty()) {
            (None, false) => return Err("nns_urls needs nns_public_key".into()),
            (Some(_), true) => return Err("nns_public_key needs nns_urls".into()),
            _ => {}
        }
        if self.nns_public_key.is_some() && self.nns_key().is_none() {
            return Err("nns_public_key must be the hex of a BLS public key".into());
        }
        if self.images_dir.as_os_str().is_empty() {
            return Err("images_dir must not be empty".into());
        }
        if self
            .tls_extra_ca_file
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            return Err("tls_extra_ca_file must not be empty when given".into());
        }
        Ok(())
    }

    /// The NNS subnet's public key, when the registry comes from the NNS subnet.
    pub fn nns_key(&self) -> Option<crypto::bls::BlsPublicKey> {
        let bytes = hex::decode(self.nns_public_key.as_ref()?).ok()?;
        crypto::bls::BlsPublicKey::from_bytes(&bytes).ok()
    }

    pub fn root_key(&self) -> Option<crypto::ed25519::Ed25519PublicKey> {
        hex::decode(&self.registry_root_key)
            .ok()
            .and_then(|k| crypto::ed25519::Ed25519PublicKey::from_bytes(&k).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c";

    fn text(urls: &str, key: &str, extra: &str) -> String {
        format!(
            "registry_urls = {urls}\nregistry_root_key = \"{key}\"\nlisten = \"127.0.0.1:1\"\n{extra}"
        )
    }

    #[test]
    fn a_valid_config_parses_with_defaults() {
        let c = NodeConfig::parse(&text("[\"http://127.0.0.1:8080\"]", KEY, "")).expect("valid");
        assert_eq!(c.poll_interval_ms, 1000);
        assert_eq!(c.images_dir, PathBuf::from("images"));
        assert!(c.root_key().is_some());
    }

    #[test]
    fn a_written_config_reads_back() {
        let c = NodeConfig::new(
            vec!["http://10.213.0.2:4100".into()],
            KEY.into(),
            "10.213.0.10:4112".parse().unwrap(),
            300,
            vec!["http://127.0.0.1:9/hook".into()],
        );
        let back = NodeConfig::parse(&c.to_toml().unwrap()).expect("reads back");
        assert_eq!(back.registry_urls, c.registry_urls);
        assert_eq!(back.listen, c.listen);
        assert_eq!(back.poll_interval_ms, 300);
        assert_eq!(back.webhooks, c.webhooks);
        assert_eq!(back.images_dir, PathBuf::from("images"));
        assert_eq!(back.tls_extra_ca_file, None);
    }

    #[test]
    fn each_broken_rule_is_named() {
        let cases = [
            (text("[]", KEY, ""), "at least one URL"),
            (text("[\"ftp://x\"]", KEY, ""), "http or https"),
            (text("[\"http://x\"]", "zz", ""), "must be hex"),
            (text("[\"http://x\"]", "abcd", ""), "registry_root_key"),
            (
                text("[\"http://x\"]", KEY, "poll_interval_ms = 1"),
                "poll_interval_ms",
            ),
            (text("[\"http://x\"]", KEY, "surprise = 1"), "unknown field"),
            (
                text("[\"http://x\"]", KEY, "webhooks = [\"ftp://x\"]"),
                "webhook URL",
            ),
            ("listen = \"nope\"".to_string(), "listen"),
        ];
        for (t, want) in cases {
            let e = NodeConfig::parse(&t).expect_err(&t);
            assert!(e.contains(want), "{t:?}: {e}");
        }
    }
}
