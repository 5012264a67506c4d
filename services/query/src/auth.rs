//! Bearer tokens: who may read, and which numbers' rows.

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};

/// One API token from the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    /// The secret the client sends as `Authorization: Bearer <secret>`.
    pub secret: String,
    /// The `phone_number_id`s whose rows it may read; `None`: every number.
    pub numbers: Option<BTreeSet<String>>,
}

/// What a request may see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    All,
    Numbers(BTreeSet<String>),
}

impl Scope {
    /// Whether rows of business number `number` are visible.
    pub fn sees(&self, number: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Numbers(n) => n.contains(number),
        }
    }

    pub(crate) fn is_all(&self) -> bool {
        matches!(self, Scope::All)
    }
}

/// The configured tokens, kept as SHA-256 digests: a lookup compares
/// digests, so its time says nothing about the secrets.
#[derive(Clone, Debug, Default)]
pub struct Auth {
    tokens: BTreeMap<[u8; 32], Scope>,
}

impl Auth {
    /// An empty list refuses every request.
    pub fn new(tokens: Vec<Token>) -> Auth {
        let tokens = tokens
            .into_iter()
            .filter(|t| !t.secret.is_empty())
            .map(|t| {
                let scope = t.numbers.map_or(Scope::All, Scope::Numbers);
                (digest(&t.secret), scope)
            })
            .collect();
        Auth { tokens }
    }

    /// The scope of an `Authorization` header value, if it names a token.
    pub fn check(&self, authorization: Option<&str>) -> Option<&Scope> {
        let value = authorization?;
        let (scheme, secret) = value.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let secret = secret.trim();
        if secret.is_empty() {
            return None;
        }
        self.tokens.get(&digest(secret))
    }
}

fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_scopes() {
        let auth = Auth::new(vec![
            Token {
                secret: "all".into(),
                numbers: None,
            },
            Token {
                secret: "one".into(),
                numbers: Some(["PN1".to_string()].into()),
            },
            Token {
                secret: String::new(),
                numbers: None,
            },
        ]);
        assert_eq!(auth.check(Some("Bearer all")), Some(&Scope::All));
        assert_eq!(auth.check(Some("bearer  all")), Some(&Scope::All));
        let one = auth.check(Some("Bearer one")).cloned();
        assert!(one
            .as_ref()
            .is_some_and(|s| s.sees("PN1") && !s.sees("PN2")));
        assert_eq!(auth.check(Some("Bearer ")), None);
        assert_eq!(auth.check(Some("Basic all")), None);
        assert_eq!(auth.check(Some("Bearer nope")), None);
        assert_eq!(auth.check(None), None);
    }
}
