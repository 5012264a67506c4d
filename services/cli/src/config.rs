//! The services' configuration: defaults, then a TOML file, then
//! `TWINLOG_*` environment variables, then command-line flags, each layer
//! overriding the one before. Parsed and validated once, at start.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// Every setting of `twinlog up`, `ingest` and `engine`. Field names are the
/// TOML keys and, upper-cased with the `TWINLOG_` prefix, the environment
/// variables (`TWINLOG_APP_SECRETS='["s1","s2"]'`, `TWINLOG_KAFKA=host:9092`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Where the embedded bus, the raw-body store and the audit shards live.
    pub data_dir: PathBuf,
    /// The HTTP listen address: webhooks, the send gateway, metrics, health.
    pub listen: String,
    /// Kafka bootstrap servers; empty runs on the embedded bus.
    pub kafka: String,
    /// Prefix of the topic names.
    pub topic_prefix: String,
    /// Partitions of the embedded bus, fixed when it is created. (With
    /// Kafka, `twinlog topics create --partitions N` decides.)
    pub partitions: u32,
    /// The partitions (audit shards) this engine folds; empty means all.
    pub shards: Vec<u32>,
    /// Meta app secrets; a webhook is authentic if any one signs it.
    pub app_secrets: Vec<String>,
    /// The token Meta's subscription handshake must present.
    pub verify_token: String,
    /// Requests the ingestor serves at once; beyond them it answers 503.
    pub requests_in_flight_max: usize,
    /// Days raw webhook bodies are kept (encrypted) for reprocessing.
    pub raw_retention_days: u32,
    /// The Graph API base URL the send gateway forwards to; empty turns the
    /// gateway off.
    pub graph_base_url: String,
    /// The Graph API access token.
    pub access_token: String,
    /// Sends per second per business number (Meta: 20 for coexistence).
    pub number_rate_per_s: u32,
    /// Per-number overrides of `number_rate_per_s`, by `phone_number_id`.
    pub number_rate_overrides: BTreeMap<String, u32>,
    /// Sends a number may have queued before the gateway answers 429.
    pub send_queue_depth_max: usize,
    /// Wall-clock interval of the engine's clock ticks; 0 turns them off.
    pub tick_interval_ms: u64,
    /// Publish audit records to the audit topic (the engine's changelog).
    pub audit_topic: bool,
    /// The master key file (64 hex digits, mode 0600) that wraps each
    /// shard's key material on the keys topic, so that any engine can
    /// restore any shard. Kafka only; without it shards do not move between
    /// machines. The path only: the key itself never comes from the
    /// environment or the config file.
    pub master_key_file: Option<PathBuf>,
    /// Bearer tokens of the query API (`/v1/...`): `SECRET`, or
    /// `SECRET@PN1,PN2` to limit a token to some `phone_number_id`s. No
    /// token configured: the API answers 401 to everything. Prefer the
    /// environment (`TWINLOG_API_TOKENS='["…"]'`) to the config file.
    pub api_tokens: Vec<String>,
    /// The billing ledger's rate card (CSV; see
    /// `projections/ratecards/example.csv`). None: billable messages are
    /// counted but priced `no_rate`.
    pub rate_card: Option<PathBuf>,
    /// Seconds a conversation stays with a human after an app-side reply.
    pub handoff_quiet_s: i64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            data_dir: PathBuf::from("twinlog-data"),
            listen: "127.0.0.1:8080".into(),
            kafka: String::new(),
            topic_prefix: twinlog_bus::DEFAULT_TOPIC_PREFIX.into(),
            partitions: 1,
            shards: Vec::new(),
            app_secrets: Vec::new(),
            verify_token: String::new(),
            requests_in_flight_max: 64,
            raw_retention_days: 14,
            graph_base_url: String::new(),
            access_token: String::new(),
            number_rate_per_s: 20,
            number_rate_overrides: BTreeMap::new(),
            send_queue_depth_max: 1_000,
            tick_interval_ms: crate::runner::TICK_INTERVAL_MS_DEFAULT,
            audit_topic: true,
            master_key_file: None,
            api_tokens: Vec::new(),
            rate_card: None,
            handoff_quiet_s: twinlog_projections::HANDOFF_QUIET_S_DEFAULT,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid configuration: {0}")]
    Figment(#[from] Box<figment::Error>),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Settings {
    /// Defaults, then `file` (if given; it must exist), then `TWINLOG_*`,
    /// then `flags` (only the keys a flag set).
    pub fn load(
        file: Option<&Path>,
        flags: &BTreeMap<String, figment::value::Value>,
    ) -> Result<Settings, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::Invalid(format!(
                    "the config file {} does not exist",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file(path));
        }
        figment = figment
            .merge(Env::prefixed("TWINLOG_").ignore(&["log_level", "dir", "config"]))
            .merge(Serialized::globals(flags));
        let settings: Settings = figment.extract().map_err(Box::new)?;
        settings.validate()?;
        Ok(settings)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.partitions == 0 || self.partitions > twinlog_bus::PARTITIONS_MAX {
            return bad(format!(
                "partitions must be 1 to {}, not {}",
                twinlog_bus::PARTITIONS_MAX,
                self.partitions
            ));
        }
        if self.handoff_quiet_s < 0 {
            return bad(format!(
                "handoff_quiet_s must not be negative, not {}",
                self.handoff_quiet_s
            ));
        }
        if let Some(t) = self.api_tokens.iter().find(|t| api_token(t).is_none()) {
            let shown: String = t.chars().take(4).collect();
            return bad(format!(
                "api_tokens: {shown}… is not SECRET or SECRET@PN1,PN2 (at least 16 characters of secret)"
            ));
        }
        if self.number_rate_per_s == 0 {
            return bad("number_rate_per_s must be at least 1".into());
        }
        if let Some((n, _)) = self.number_rate_overrides.iter().find(|(_, r)| **r == 0) {
            return bad(format!("number_rate_overrides.{n} must be at least 1"));
        }
        if self.requests_in_flight_max == 0 || self.send_queue_depth_max == 0 {
            return bad(
                "requests_in_flight_max and send_queue_depth_max must be at least 1".into(),
            );
        }
        if self.raw_retention_days == 0 {
            return bad("raw_retention_days must be at least 1".into());
        }
        Ok(())
    }

    /// The embedded bus directory.
    pub fn bus_dir(&self) -> PathBuf {
        self.data_dir.join("bus")
    }

    /// The ingestor's raw-body store.
    pub fn ingest_dir(&self) -> PathBuf {
        self.data_dir.join("ingest")
    }

    /// The projection worker's view store.
    pub fn views_dir(&self) -> PathBuf {
        self.data_dir.join("views")
    }

    /// Audit shard `p`'s log: `DATA/shards/<p>`.
    pub fn shard_dir(&self, partition: u32) -> PathBuf {
        self.data_dir.join("shards").join(partition.to_string())
    }
}

/// An API token setting: `SECRET` or `SECRET@PN1,PN2`. The secret must be
/// at least 16 characters, so that it cannot be guessed.
pub fn api_token(text: &str) -> Option<twinlog_query::Token> {
    let (secret, numbers) = match text.split_once('@') {
        Some((secret, list)) => {
            let numbers: std::collections::BTreeSet<String> = list
                .split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(str::to_owned)
                .collect();
            if numbers.is_empty() {
                return None;
            }
            (secret, Some(numbers))
        }
        None => (text, None),
    };
    (secret.chars().count() >= 16).then(|| twinlog_query::Token {
        secret: secret.to_owned(),
        numbers,
    })
}

#[cfg(test)]
// figment's Jail returns figment::Error, which is large; it is test-only.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn layers_override_in_order() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "twinlog.toml",
                "listen = \"0.0.0.0:9000\"\npartitions = 4\nnumber_rate_per_s = 5\n\
                 [number_rate_overrides]\n\"106540352242922\" = 2\n",
            )?;
            jail.set_env("TWINLOG_PARTITIONS", "6");
            jail.set_env("TWINLOG_APP_SECRETS", "[\"s1\", \"s2\"]");
            let mut flags = BTreeMap::new();
            flags.insert("number_rate_per_s".to_owned(), 7u32.into());
            let s = Settings::load(Some(Path::new("twinlog.toml")), &flags)
                .map_err(|e| e.to_string())?;
            assert_eq!(s.listen, "0.0.0.0:9000", "file over default");
            assert_eq!(s.partitions, 6, "env over file");
            assert_eq!(s.number_rate_per_s, 7, "flag over file");
            assert_eq!(s.app_secrets, ["s1", "s2"]);
            assert_eq!(s.number_rate_overrides.get("106540352242922"), Some(&2));
            assert_eq!(s.tick_interval_ms, Settings::default().tick_interval_ms);
            Ok(())
        });
    }

    #[test]
    fn the_master_key_file_comes_from_the_environment_or_a_flag() {
        figment::Jail::expect_with(|jail| {
            let s = Settings::load(None, &BTreeMap::new()).map_err(|e| e.to_string())?;
            assert_eq!(s.master_key_file, None, "off by default");
            jail.set_env("TWINLOG_MASTER_KEY_FILE", "/etc/twinlog/master.key");
            let s = Settings::load(None, &BTreeMap::new()).map_err(|e| e.to_string())?;
            assert_eq!(
                s.master_key_file.as_deref(),
                Some(Path::new("/etc/twinlog/master.key"))
            );
            let mut flags = BTreeMap::new();
            flags.insert("master_key_file".to_owned(), "/run/master.key".into());
            let s = Settings::load(None, &flags).map_err(|e| e.to_string())?;
            assert_eq!(
                s.master_key_file.as_deref(),
                Some(Path::new("/run/master.key"))
            );
            Ok(())
        });
    }

    #[test]
    fn invalid_values_are_refused_with_the_key() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("TWINLOG_PARTITIONS", "0");
            let e = Settings::load(None, &BTreeMap::new()).expect_err("0 partitions");
            assert!(e.to_string().contains("partitions must be 1"), "{e}");
            jail.set_env("TWINLOG_PARTITIONS", "two");
            let e = Settings::load(None, &BTreeMap::new()).expect_err("not a number");
            assert!(e.to_string().to_lowercase().contains("partitions"), "{e}");
            Ok(())
        });
        let e = Settings::load(
            Some(Path::new("/nonexistent/twinlog.toml")),
            &BTreeMap::new(),
        )
        .expect_err("missing file");
        assert!(e.to_string().contains("does not exist"), "{e}");
    }

    #[test]
    fn api_tokens_are_secrets_optionally_limited_to_numbers() {
        let all = api_token("0123456789abcdef").expect("a plain token");
        assert_eq!(
            (all.secret.as_str(), all.numbers),
            ("0123456789abcdef", None)
        );
        let some = api_token("0123456789abcdef@PN1, PN2").expect("a scoped token");
        assert_eq!(
            some.numbers,
            Some(["PN1".to_owned(), "PN2".to_owned()].into_iter().collect())
        );
        for bad in ["short", "0123456789abcdef@", "0123456789abcdef@,"] {
            assert!(api_token(bad).is_none(), "{bad}");
        }
        let settings = Settings {
            api_tokens: vec!["shortsecret".into()],
            ..Settings::default()
        };
        let error = settings.validate().expect_err("a short token is refused");
        assert!(
            !error.to_string().contains("shortsecret"),
            "the secret is not echoed: {error}"
        );
    }
}
