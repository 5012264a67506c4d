//! The five input topics and the audit topic, their names and their fixed
//! merge rank.

use std::fmt;

/// The default prefix of topic names: `twinlog.inbound` and so on.
pub const DEFAULT_TOPIC_PREFIX: &str = "twinlog.";

/// A topic: one of the five input topics, or the audit topic. The
/// declaration order is the merge rank: the engine merges one partition's
/// input topics by (record timestamp, [`Topic::rank`], offset).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Topic {
    /// History and contact sync (`smb_app_data`, `history`).
    Sync,
    /// Customer messages (`messages`).
    Inbound,
    /// Messages sent from the Business App (`smb_message_echoes`).
    AppEcho,
    /// Messages sent through the Cloud API by the send gateway.
    ApiSend,
    /// Delivery statuses.
    Status,
    /// The engine's output: partition `p` holds audit shard `p`'s records,
    /// the record at offset `n` being the shard's record `seq = n`. Not an
    /// input; it is the engine's changelog.
    Audit,
}

impl Topic {
    /// Every topic, in rank order: the inputs, then the audit topic.
    pub const ALL: [Topic; 6] = [
        Topic::Sync,
        Topic::Inbound,
        Topic::AppEcho,
        Topic::ApiSend,
        Topic::Status,
        Topic::Audit,
    ];

    /// The five input topics, in rank order.
    pub const INPUTS: [Topic; 5] = [
        Topic::Sync,
        Topic::Inbound,
        Topic::AppEcho,
        Topic::ApiSend,
        Topic::Status,
    ];

    /// The fixed merge rank, 0 to 5 in [`Topic::ALL`] order. Also the first
    /// byte of the embedded bus's record keys, so it never changes.
    pub const fn rank(self) -> u8 {
        match self {
            Topic::Sync => 0,
            Topic::Inbound => 1,
            Topic::AppEcho => 2,
            Topic::ApiSend => 3,
            Topic::Status => 4,
            Topic::Audit => 5,
        }
    }

    /// The topic of a rank.
    pub const fn from_rank(rank: u8) -> Option<Topic> {
        match rank {
            0 => Some(Topic::Sync),
            1 => Some(Topic::Inbound),
            2 => Some(Topic::AppEcho),
            3 => Some(Topic::ApiSend),
            4 => Some(Topic::Status),
            5 => Some(Topic::Audit),
            _ => None,
        }
    }

    /// The name without prefix: `sync`, `inbound`, `app-echo`, `api-send`,
    /// `status`, `audit`.
    pub const fn suffix(self) -> &'static str {
        match self {
            Topic::Sync => "sync",
            Topic::Inbound => "inbound",
            Topic::AppEcho => "app-echo",
            Topic::ApiSend => "api-send",
            Topic::Status => "status",
            Topic::Audit => "audit",
        }
    }

    /// The full topic name: `prefix` followed by [`Topic::suffix`].
    pub fn name(self, prefix: &str) -> String {
        format!("{prefix}{}", self.suffix())
    }

    /// The topic whose full name under `prefix` is `name`.
    pub fn parse(name: &str, prefix: &str) -> Option<Topic> {
        let suffix = name.strip_prefix(prefix)?;
        Topic::ALL.into_iter().find(|t| t.suffix() == suffix)
    }
}

/// Displays the suffix (`app-echo`); use [`Topic::name`] for the full name.
impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.suffix())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_ranks_and_parse_round_trip() {
        let names: Vec<String> = Topic::ALL
            .iter()
            .map(|t| t.name(DEFAULT_TOPIC_PREFIX))
            .collect();
        assert_eq!(
            names,
            [
                "twinlog.sync",
                "twinlog.inbound",
                "twinlog.app-echo",
                "twinlog.api-send",
                "twinlog.status",
                "twinlog.audit"
            ]
        );
        for (i, t) in Topic::ALL.into_iter().enumerate() {
            assert_eq!(usize::from(t.rank()), i);
            assert_eq!(Topic::from_rank(t.rank()), Some(t));
            assert_eq!(Topic::parse(&t.name("x-"), "x-"), Some(t));
            assert_eq!(Topic::parse(&t.name("x-"), DEFAULT_TOPIC_PREFIX), None);
        }
        assert_eq!(Topic::from_rank(6), None);
        assert_eq!(Topic::INPUTS, Topic::ALL[..5]);
        assert_eq!(Topic::parse("twinlog.echo", DEFAULT_TOPIC_PREFIX), None);
        assert_eq!(Topic::parse("sync", ""), Some(Topic::Sync));
    }
}
