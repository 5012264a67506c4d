//! Cloud API send bodies (`POST /{version}/{phone_number_id}/messages`):
//! their validation, shared by the gateway and the simulator, and the
//! [`Message`] a send records.
//!
//! The gateway checks the envelope (`messaging_product`, a recipient, a
//! `type` with its object) and forwards types it does not know, so that
//! Meta decides about them; the simulator also refuses types Meta does not
//! document, and text bodies over [`TEXT_BODY_CHARS_MAX`], as Meta does.

use serde_json::Value;
use twinlog_proto::v1::{
    message::Content, ContactCard, ContactCards, ContactEmail, ContactPhone, ContactUrl, Context,
    Interactive, Location, Media, Message, OtherContent, Reaction, Template, Text,
};

/// Largest send body accepted. Meta's largest bodies (interactive lists,
/// templates with many components) stay far below it.
pub const SEND_BODY_BYTES_MAX: usize = 256 * 1024;

/// Longest `text.body` Meta accepts, in characters.
pub const TEXT_BODY_CHARS_MAX: usize = 4096;

/// Deepest JSON nesting accepted in a send body (serde_json's own limit is
/// 128; real bodies nest about 8 deep).
pub const SEND_JSON_DEPTH_MAX: usize = 32;

/// The message types the Cloud API documents for sends.
pub const KNOWN_TYPES: &[&str] = &[
    "audio",
    "contacts",
    "document",
    "image",
    "interactive",
    "location",
    "reaction",
    "sticker",
    "template",
    "text",
    "video",
];

const MEDIA_TYPES: &[&str] = &["image", "video", "audio", "document", "sticker"];

/// Keys of a send body that [`to_message`] models (the content object,
/// named by `type`, is modelled too).
const ENVELOPE_KEYS: &[&str] = &[
    "messaging_product",
    "recipient_type",
    "to",
    "recipient",
    "type",
    "context",
];

/// How strictly a send body is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strictness {
    /// The envelope only: unknown types pass (the gateway; Meta decides).
    Envelope,
    /// As Meta: unknown types and over-long text are refused (the simulator).
    Meta,
}

/// Why a send body is refused. The `Display` says what is wrong, for the
/// client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidSend {
    #[error("send body is not valid JSON: {detail}")]
    NotJson { detail: String },
    #[error("send body nests deeper than {max} levels")]
    TooDeep { max: usize },
    #[error("send body is not a JSON object")]
    NotObject,
    #[error("messaging_product must be \"whatsapp\"")]
    MessagingProduct,
    #[error("the send names no recipient: `to` or `recipient` is required")]
    NoRecipient,
    #[error("`{key}` must be {expected}")]
    WrongType { key: String, expected: &'static str },
    #[error("`{key}` is required")]
    Missing { key: String },
    #[error("param type must be one of {{{}}}, not `{ty}`", KNOWN_TYPES.join(", "))]
    UnknownType { ty: String },
    #[error("text.body is {chars} characters, over the limit of {max}")]
    TextTooLong { chars: usize, max: usize },
}

/// A validated send: what routing and limits need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendRequest {
    /// `to`: the customer's phone number or wa_id; may be "".
    pub to: String,
    /// `recipient`: the customer's BSUID; may be "".
    pub recipient: String,
    /// `type`; Meta's default `text` when absent.
    pub message_type: String,
    /// `template.name` for template sends, else "".
    pub template_name: String,
}

impl SendRequest {
    /// The customer the send goes to: `to` when given, else `recipient`.
    /// Keys the pair rate and the customer-service window.
    pub fn customer(&self) -> &str {
        if self.to.is_empty() {
            &self.recipient
        } else {
            &self.to
        }
    }

    pub fn is_template(&self) -> bool {
        self.message_type == "template"
    }
}

/// Parses and validates a send body.
pub fn parse_send(
    body: &[u8],
    strictness: Strictness,
) -> Result<(Value, SendRequest), InvalidSend> {
    let root: Value = serde_json::from_slice(body).map_err(|e| InvalidSend::NotJson {
        detail: e.to_string(),
    })?;
    if depth(&root) > SEND_JSON_DEPTH_MAX {
        return Err(InvalidSend::TooDeep {
            max: SEND_JSON_DEPTH_MAX,
        });
    }
    let send = validate(&root, strictness)?;
    Ok((root, send))
}

fn depth(v: &Value) -> usize {
    match v {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 1,
    }
}

fn opt_str<'v>(obj: &'v Value, key: &str, path: &str) -> Result<Option<&'v str>, InvalidSend> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(InvalidSend::WrongType {
            key: join(path, key),
            expected: "a string",
        }),
    }
}

fn req_str<'v>(obj: &'v Value, key: &str, path: &str) -> Result<&'v str, InvalidSend> {
    match opt_str(obj, key, path)? {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(InvalidSend::Missing {
            key: join(path, key),
        }),
    }
}

fn req_obj<'v>(obj: &'v Value, key: &str, path: &str) -> Result<&'v Value, InvalidSend> {
    match obj.get(key) {
        None | Some(Value::Null) => Err(InvalidSend::Missing {
            key: join(path, key),
        }),
        Some(v @ Value::Object(_)) => Ok(v),
        Some(_) => Err(InvalidSend::WrongType {
            key: join(path, key),
            expected: "an object",
        }),
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn validate(root: &Value, strictness: Strictness) -> Result<SendRequest, InvalidSend> {
    if !root.is_object() {
        return Err(InvalidSend::NotObject);
    }
    if opt_str(root, "messaging_product", "")? != Some("whatsapp") {
        return Err(InvalidSend::MessagingProduct);
    }
    let to = opt_str(root, "to", "")?.unwrap_or("").to_owned();
    let recipient = opt_str(root, "recipient", "")?.unwrap_or("").to_owned();
    if to.is_empty() && recipient.is_empty() {
        return Err(InvalidSend::NoRecipient);
    }
    let ty = opt_str(root, "type", "")?.unwrap_or("text").to_owned();
    if ty.is_empty() {
        return Err(InvalidSend::Missing { key: "type".into() });
    }
    if let Some(c) = root.get("context") {
        if !c.is_null() {
            if !c.is_object() {
                return Err(InvalidSend::WrongType {
                    key: "context".into(),
                    expected: "an object",
                });
            }
            req_str(c, "message_id", "context")?;
        }
    }
    let known = KNOWN_TYPES.contains(&ty.as_str());
    if !known && strictness == Strictness::Meta {
        return Err(InvalidSend::UnknownType { ty });
    }
    let mut template_name = String::new();
    match ty.as_str() {
        "text" => {
            let o = req_obj(root, "text", "")?;
            let body = req_str(o, "body", "text")?;
            let chars = body.chars().count();
            if strictness == Strictness::Meta && chars > TEXT_BODY_CHARS_MAX {
                return Err(InvalidSend::TextTooLong {
                    chars,
                    max: TEXT_BODY_CHARS_MAX,
                });
            }
        }
        t if MEDIA_TYPES.contains(&t) => {
            let o = req_obj(root, t, "")?;
            let id = opt_str(o, "id", t)?.unwrap_or("");
            let link = opt_str(o, "link", t)?.unwrap_or("");
            if id.is_empty() && link.is_empty() {
                return Err(InvalidSend::Missing {
                    key: format!("{t}.id or {t}.link"),
                });
            }
        }
        "location" => {
            let o = req_obj(root, "location", "")?;
            for key in ["latitude", "longitude"] {
                match o.get(key) {
                    Some(Value::Number(_)) => {}
                    // Meta accepts coordinates as strings too.
                    Some(Value::String(s)) if s.trim().parse::<f64>().is_ok() => {}
                    None | Some(Value::Null) => {
                        return Err(InvalidSend::Missing {
                            key: join("location", key),
                        })
                    }
                    Some(_) => {
                        return Err(InvalidSend::WrongType {
                            key: join("location", key),
                            expected: "a number",
                        })
                    }
                }
            }
        }
        "contacts" => match root.get("contacts") {
            Some(Value::Array(cards)) if !cards.is_empty() => {
                if !cards.iter().all(Value::is_object) {
                    return Err(InvalidSend::WrongType {
                        key: "contacts".into(),
                        expected: "an array of objects",
                    });
                }
            }
            Some(Value::Array(_)) | None | Some(Value::Null) => {
                return Err(InvalidSend::Missing {
                    key: "contacts".into(),
                })
            }
            Some(_) => {
                return Err(InvalidSend::WrongType {
                    key: "contacts".into(),
                    expected: "an array of objects",
                })
            }
        },
        "interactive" => {
            let o = req_obj(root, "interactive", "")?;
            req_str(o, "type", "interactive")?;
            req_obj(o, "action", "interactive")?;
        }
        "reaction" => {
            let o = req_obj(root, "reaction", "")?;
            req_str(o, "message_id", "reaction")?;
            // "" removes a reaction, so only the type is checked.
            opt_str(o, "emoji", "reaction")?.ok_or_else(|| InvalidSend::Missing {
                key: "reaction.emoji".into(),
            })?;
        }
        "template" => {
            let o = req_obj(root, "template", "")?;
            template_name = req_str(o, "name", "template")?.to_owned();
            let language = req_obj(o, "language", "template")?;
            req_str(language, "code", "template.language")?;
            if let Some(c) = o.get("components") {
                if !c.is_array() && !c.is_null() {
                    return Err(InvalidSend::WrongType {
                        key: "template.components".into(),
                        expected: "an array",
                    });
                }
            }
        }
        // An undocumented type (Envelope strictness only): its object must exist.
        other => {
            if root.get(other).is_none() {
                return Err(InvalidSend::Missing {
                    key: other.to_owned(),
                });
            }
        }
    }
    Ok(SendRequest {
        to,
        recipient,
        message_type: ty,
        template_name,
    })
}

/// Serialises JSON canonically: no whitespace, object keys sorted
/// (whatever map order serde_json was built with).
pub fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String((*k).clone()).to_string());
                out.push(':');
                if let Some(item) = map.get(*k) {
                    write_canonical(item, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

fn s(obj: &Value, key: &str) -> String {
    obj.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn b(obj: &Value, key: &str) -> bool {
    obj.get(key).and_then(Value::as_bool).unwrap_or(false)
}

fn f(obj: &Value, key: &str) -> f64 {
    match obj.get(key) {
        Some(Value::Number(n)) => n.as_f64().unwrap_or(0.0),
        Some(Value::String(t)) => t.trim().parse().unwrap_or(0.0),
        _ => 0.0,
    }
}

fn list<'v>(obj: &'v Value, key: &str) -> &'v [Value] {
    obj.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

fn json_or_empty(obj: &Value, key: &str) -> String {
    match obj.get(key) {
        None | Some(Value::Null) => String::new(),
        Some(v) => canonical_json(v),
    }
}

/// The [`Message`] a validated send records: the full content the Graph
/// API was asked to send, with the wamid it answered and the time of the
/// send (unix seconds). Keys of the body that the proto does not model
/// (e.g. `biz_opaque_callback_data`) go to `extra_json`, as the normaliser
/// does for webhooks; `request_json` of the event keeps the exact body.
pub fn to_message(body: &Value, send: &SendRequest, wamid: &str, sent_at_s: i64) -> Message {
    let ty = send.message_type.as_str();
    let object = body.get(ty).unwrap_or(&Value::Null);
    let content = match ty {
        "text" => Content::Text(Text {
            body: s(object, "body"),
            preview_url: b(object, "preview_url"),
        }),
        t if MEDIA_TYPES.contains(&t) => Content::Media(Media {
            kind: t.to_owned(),
            id: s(object, "id"),
            caption: s(object, "caption"),
            filename: s(object, "filename"),
            link: s(object, "link"),
            ..Media::default()
        }),
        "location" => Content::Location(Location {
            latitude: f(object, "latitude"),
            longitude: f(object, "longitude"),
            name: s(object, "name"),
            address: s(object, "address"),
            url: s(object, "url"),
        }),
        "contacts" => Content::Contacts(ContactCards {
            cards: list(body, "contacts").iter().map(contact_card).collect(),
        }),
        "interactive" => Content::Interactive(Interactive {
            r#type: s(object, "type"),
            raw_json: canonical_json(object),
            ..Interactive::default()
        }),
        "reaction" => Content::Reaction(Reaction {
            message_id: s(object, "message_id"),
            emoji: s(object, "emoji"),
        }),
        "template" => Content::Template(Template {
            name: s(object, "name"),
            language: object
                .get("language")
                .map(|l| s(l, "code"))
                .unwrap_or_default(),
            components_json: json_or_empty(object, "components"),
            category: String::new(),
        }),
        other => Content::Other(OtherContent {
            r#type: other.to_owned(),
            raw_json: canonical_json(object),
        }),
    };
    let context = body
        .get("context")
        .filter(|c| c.is_object())
        .map(|c| Context {
            id: s(c, "message_id"),
            ..Context::default()
        });
    let extra: serde_json::Map<String, Value> = body
        .as_object()
        .map(|map| {
            map.iter()
                .filter(|(k, _)| !ENVELOPE_KEYS.contains(&k.as_str()) && k.as_str() != ty)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default();
    let extra_json = if extra.is_empty() {
        String::new()
    } else {
        canonical_json(&Value::Object(extra))
    };
    Message {
        wamid: wamid.to_owned(),
        r#type: ty.to_owned(),
        timestamp: sent_at_s,
        to: send.to.clone(),
        to_user_id: send.recipient.clone(),
        context,
        extra_json,
        content: Some(content),
        ..Message::default()
    }
}

fn contact_card(c: &Value) -> ContactCard {
    let name = c.get("name").unwrap_or(&Value::Null);
    ContactCard {
        formatted_name: s(name, "formatted_name"),
        first_name: s(name, "first_name"),
        last_name: s(name, "last_name"),
        middle_name: s(name, "middle_name"),
        name_prefix: s(name, "prefix"),
        name_suffix: s(name, "suffix"),
        phones: list(c, "phones")
            .iter()
            .map(|p| ContactPhone {
                phone: s(p, "phone"),
                wa_id: s(p, "wa_id"),
                r#type: s(p, "type"),
            })
            .collect(),
        emails: list(c, "emails")
            .iter()
            .map(|e| ContactEmail {
                email: s(e, "email"),
                r#type: s(e, "type"),
            })
            .collect(),
        organization_json: json_or_empty(c, "org"),
        urls: list(c, "urls")
            .iter()
            .map(|u| ContactUrl {
                url: s(u, "url"),
                r#type: s(u, "type"),
            })
            .collect(),
        addresses_json: json_or_empty(c, "addresses"),
        birthday: s(c, "birthday"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let v: Value =
            serde_json::from_str(r#"{"b":{"z":1,"a":[{"y":2,"x":"é"}]},"a":true}"#).expect("json");
        assert_eq!(
            canonical_json(&v),
            r#"{"a":true,"b":{"a":[{"x":"é","y":2}],"z":1}}"#
        );
    }

    #[test]
    fn a_send_to_a_bsuid_keys_the_customer_by_it_and_keeps_unmodelled_keys() {
        let body = br#"{"messaging_product":"whatsapp","recipient":"US.13491208655302741918",
            "type":"text","text":{"body":"hi","preview_url":true},"biz_opaque_callback_data":"t-1"}"#;
        let (parsed, send) = parse_send(body, Strictness::Envelope).expect("valid");
        assert_eq!(send.customer(), "US.13491208655302741918");
        let m = to_message(&parsed, &send, "wamid.X", 1_750_000_000);
        assert_eq!(
            (m.to.as_str(), m.to_user_id.as_str()),
            ("", "US.13491208655302741918")
        );
        assert_eq!(m.extra_json, r#"{"biz_opaque_callback_data":"t-1"}"#);
        assert_eq!(
            m.content,
            Some(Content::Text(Text {
                body: "hi".into(),
                preview_url: true
            }))
        );
    }

    #[test]
    fn unknown_types_pass_the_gateway_but_not_meta() {
        let body = br#"{"messaging_product":"whatsapp","to":"1","type":"poll","poll":{"q":"?"}}"#;
        let (parsed, send) = parse_send(body, Strictness::Envelope).expect("envelope is valid");
        let m = to_message(&parsed, &send, "wamid.X", 0);
        assert_eq!(
            m.content,
            Some(Content::Other(OtherContent {
                r#type: "poll".into(),
                raw_json: r#"{"q":"?"}"#.into()
            }))
        );
        assert_eq!(
            parse_send(body, Strictness::Meta).map(|_| ()),
            Err(InvalidSend::UnknownType { ty: "poll".into() })
        );
    }

    #[test]
    fn over_deep_bodies_are_refused() {
        let mut deep = String::from(r#"{"messaging_product":"whatsapp","to":"1","type":"x","x":"#);
        deep.push_str(&"[".repeat(SEND_JSON_DEPTH_MAX));
        deep.push_str(&"]".repeat(SEND_JSON_DEPTH_MAX));
        deep.push('}');
        assert_eq!(
            parse_send(deep.as_bytes(), Strictness::Envelope).map(|_| ()),
            Err(InvalidSend::TooDeep {
                max: SEND_JSON_DEPTH_MAX
            })
        );
    }
}
