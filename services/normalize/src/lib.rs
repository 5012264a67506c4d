//! twinlog-normalize owns the step from raw Meta WhatsApp Business webhook bytes
//! (Cloud API and Coexistence: `messages`, `smb_message_echoes`, `history`,
//! `smb_app_state_sync`, `account_update`, and any other field) to twinlog's
//! normalised [`IngestEvent`]s. It is a pure function of the body bytes and an
//! [`IngestContext`]: no I/O, no clock, no signature check (the caller verifies
//! `X-Hub-Signature-256` over the same bytes), no CLI.
//!
//! # What comes out
//! One body becomes one or more events, in body order. Every event carries an
//! [`Envelope`] with the SHA-256 of the exact body and its position
//! (`entry_index`, `change_index`, `item_index`); `item_index` is the ordinal of
//! the event within its change, so the triple is unique within a body (except for
//! the rare `unknown` events about unmodelled keys at the top level or on an entry,
//! which use change 0 and item 0). Every change yields at least one event.
//!
//! Nothing is dropped: keys twinlog does not model go to `extra_json` (a JSON
//! object of just those keys, sorted, numbers as written); when a sub-object that
//! twinlog models (e.g. `image`, `context`, `errors`) carries an unknown key, the
//! whole sub-object goes to `extra_json` under its own key. Where an event kind has
//! no `extra_json` (history chunks, declined history, value-level errors, value /
//! entry / top-level keys, `contacts[]` entries), an additional `unknown` event with
//! reason `unmodelled keys at <path>` carries them; a `contacts[]` entry that no
//! item matched becomes an `unknown` event too. `messaging_product` is read as
//! known and not kept. All JSON kept as text (`extra_json`, `raw_json`,
//! `value_json`) is canonical: no whitespace, keys sorted, numbers exactly as sent.
//!
//! # Errors versus `unknown`
//! The whole body is refused (a [`NormalizeError`] naming the path) when:
//! it is empty, larger than [`WEBHOOK_BODY_BYTES_MAX`], not UTF-8, not one JSON
//! value, nested deeper than [`JSON_DEPTH_MAX`]; the top level is not an object,
//! `object` is not `"whatsapp_business_account"`, `entry` is missing or not an
//! array, an entry has no string `id` or no `changes` array, a change has no string
//! `field` or no `value`; for the fields twinlog knows, the value is not an object,
//! an item array is not an array of objects, a message/echo lacks `id`, `type` or
//! `timestamp` (a status: `id`, `status`, `timestamp`); any key that twinlog reads
//! has the wrong JSON type (`null` counts as absent); a timestamp, count or error
//! code is not an integer (JSON integer or string of digits; `1.5`, `"1e3"`,
//! `true` are refused).
//!
//! Kept as `unknown` instead: an unknown `field` (e.g. `user_preferences`,
//! `message_template_status_update`), a known field whose value holds no item
//! twinlog models, unmodelled keys as described above. An unknown message `type`
//! becomes [`OtherContent`] inside a normal message event.

mod country;
mod error;
mod json;

pub use country::{country_of, load_country_metadata};
pub use error::NormalizeError;

use json::{canonical_object, Json, Seg};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use twinlog_proto::v1::{
    ingest_event::Kind, message::Content, AccountUpdate, Button, ContactCard, ContactCards,
    ContactEmail, ContactPhone, ContactSync, ContactUrl, Context, Conversation, Edit, Envelope,
    HistoryChunk, HistoryDeclined, Identity, IngestEvent, Interactive, Location, Media,
    MediaPlaceholder, Message, MessageStatus, MetaError, Order, OtherContent, Pricing, ProductItem,
    Reaction, Referral, Revoke, System, Text, Unknown, Unsupported, WebhookErrors,
};

/// What the caller knows about the delivery that the body does not say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngestContext {
    /// When twinlog received the body, unix milliseconds.
    pub ingest_time_ms: i64,
}

/// Largest body accepted: Meta documents webhook payloads of up to 3 MB.
pub const WEBHOOK_BODY_BYTES_MAX: usize = 3 * 1024 * 1024;

/// Deepest nesting of arrays/objects accepted (the top-level value is depth 1).
/// Real webhooks nest about 14 deep (an edit inside a history thread).
pub const JSON_DEPTH_MAX: usize = 64;

type R<T> = Result<T, NormalizeError>;

/// Turns one webhook body into normalised ingest events. See the crate docs for
/// what becomes what and which shapes are refused. Never panics.
pub fn normalize(body: &[u8], ctx: &IngestContext) -> R<Vec<IngestEvent>> {
    if body.len() > WEBHOOK_BODY_BYTES_MAX {
        return Err(NormalizeError::TooLarge {
            len: body.len(),
            max: WEBHOOK_BODY_BYTES_MAX,
        });
    }
    if body.is_empty() {
        return Err(NormalizeError::Empty);
    }
    let text = std::str::from_utf8(body).map_err(|e| {
        let offset = e.valid_up_to();
        let (line, column) = line_column(body, offset);
        NormalizeError::NotUtf8 {
            offset,
            line,
            column,
        }
    })?;
    let root = json::parse(text, JSON_DEPTH_MAX).map_err(|e| match e {
        json::ParseError::Syntax { offset, msg } => {
            let (line, column) = line_column(body, offset);
            NormalizeError::InvalidJson { line, column, msg }
        }
        json::ParseError::TooDeep { path } => NormalizeError::TooDeep {
            max: JSON_DEPTH_MAX,
            path,
        },
    })?;
    let sha: Vec<u8> = Sha256::digest(body).to_vec();
    let mut out = Vec::new();
    Walker {
        sha: &sha,
        ingest_time_ms: ctx.ingest_time_ms,
        out: &mut out,
    }
    .body(&root)?;
    Ok(out)
}

fn line_column(body: &[u8], offset: usize) -> (usize, usize) {
    let before = &body[..offset.min(body.len())];
    let line = 1 + before.iter().filter(|&&b| b == b'\n').count();
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    (line, offset - line_start + 1)
}

// ---------------------------------------------------------------------------
// Paths: a chain of borrowed segments, formatted only when an error needs it.

#[derive(Clone, Copy)]
enum PSeg<'a> {
    Root,
    Key(&'a str),
    Index(usize),
}

#[derive(Clone, Copy)]
struct Path<'a> {
    parent: Option<&'a Path<'a>>,
    seg: PSeg<'a>,
}

const ROOT: Path<'static> = Path {
    parent: None,
    seg: PSeg::Root,
};

impl<'a> Path<'a> {
    fn key<'b>(&'b self, k: &'b str) -> Path<'b> {
        Path {
            parent: Some(self),
            seg: PSeg::Key(k),
        }
    }
    fn index(&'a self, i: usize) -> Path<'a> {
        Path {
            parent: Some(self),
            seg: PSeg::Index(i),
        }
    }
    fn render(&self) -> String {
        let mut segs = Vec::new();
        let mut cur = Some(self);
        while let Some(p) = cur {
            match p.seg {
                PSeg::Root => {}
                PSeg::Key(k) => segs.push(Seg::Key(k.to_owned())),
                PSeg::Index(i) => segs.push(Seg::Index(i)),
            }
            cur = p.parent;
        }
        segs.reverse();
        json::format_path(&segs)
    }
}

// ---------------------------------------------------------------------------
// Typed accessors. `null` counts as absent for optional keys.

fn wrong(v: &Json, path: &Path, expected: &'static str) -> NormalizeError {
    NormalizeError::WrongType {
        path: path.render(),
        expected,
        found: v.type_name(),
    }
}

fn short(v: &Json) -> String {
    let text = v.to_canonical();
    if text.chars().count() > 64 {
        let cut: String = text.chars().take(61).collect();
        format!("{cut}...")
    } else {
        text
    }
}

fn present<'j>(obj: &'j Json, key: &str) -> Option<&'j Json> {
    obj.get(key).filter(|v| !matches!(v, Json::Null))
}

fn opt_str<'j>(obj: &'j Json, key: &str, path: &Path) -> R<Option<&'j str>> {
    match present(obj, key) {
        None => Ok(None),
        Some(Json::Str(s)) => Ok(Some(s)),
        Some(v) => Err(wrong(v, &path.key(key), "string")),
    }
}

fn s(obj: &Json, key: &str, path: &Path) -> R<String> {
    Ok(opt_str(obj, key, path)?.unwrap_or_default().to_owned())
}

fn req_str<'j>(obj: &'j Json, key: &str, path: &Path) -> R<&'j str> {
    opt_str(obj, key, path)?.ok_or_else(|| NormalizeError::Missing {
        path: path.key(key).render(),
    })
}

fn opt_bool(obj: &Json, key: &str, path: &Path) -> R<Option<bool>> {
    match present(obj, key) {
        None => Ok(None),
        Some(Json::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(wrong(v, &path.key(key), "boolean")),
    }
}

fn opt_obj<'j>(obj: &'j Json, key: &str, path: &Path) -> R<Option<&'j Json>> {
    match present(obj, key) {
        None => Ok(None),
        Some(v @ Json::Obj(_)) => Ok(Some(v)),
        Some(v) => Err(wrong(v, &path.key(key), "object")),
    }
}

/// An array (absent → empty).
fn arr<'j>(obj: &'j Json, key: &str, path: &Path) -> R<&'j [Json]> {
    match present(obj, key) {
        None => Ok(&[]),
        Some(Json::Arr(items)) => Ok(items),
        Some(v) => Err(wrong(v, &path.key(key), "array")),
    }
}

fn expect_obj(v: &Json, path: &Path) -> R<()> {
    match v {
        Json::Obj(_) => Ok(()),
        _ => Err(wrong(v, path, "object")),
    }
}

/// A whole number from a JSON integer or a string of decimal digits (optional `-`).
fn int_value(v: &Json, path: &Path) -> R<i64> {
    let text = match v {
        Json::Num(t) | Json::Str(t) => t.as_str(),
        _ => "",
    };
    let digits = text.strip_prefix('-').unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(n) = text.parse::<i64>() {
            return Ok(n);
        }
    }
    Err(NormalizeError::NotAnInteger {
        path: path.render(),
        found: short(v),
    })
}

fn opt_int(obj: &Json, key: &str, path: &Path) -> R<Option<i64>> {
    match present(obj, key) {
        None => Ok(None),
        Some(v) => int_value(v, &path.key(key)).map(Some),
    }
}

fn req_int(obj: &Json, key: &str, path: &Path) -> R<i64> {
    opt_int(obj, key, path)?.ok_or_else(|| NormalizeError::Missing {
        path: path.key(key).render(),
    })
}

fn members(obj: &Json) -> &[(String, Json)] {
    match obj {
        Json::Obj(m) => m,
        _ => &[],
    }
}

/// Members of `obj` whose key is not in `known` (nor `also`).
fn leftover<'j>(obj: &'j Json, known: &[&str], also: Option<&str>) -> Vec<(&'j str, &'j Json)> {
    members(obj)
        .iter()
        .filter(|(k, _)| !known.contains(&k.as_str()) && also != Some(k.as_str()))
        .map(|(k, v)| (k.as_str(), v))
        .collect()
}

fn has_leftover(obj: &Json, known: &[&str]) -> bool {
    members(obj)
        .iter()
        .any(|(k, _)| !known.contains(&k.as_str()))
}

/// Collects what goes into an `extra_json`.
#[derive(Default)]
struct Extra<'j> {
    /// Whole modelled sub-objects (few, deduplicated).
    subs: Vec<(&'j str, &'j Json)>,
    /// Unmodelled keys (may be many; never collide with modelled ones).
    rest: Vec<(&'j str, &'j Json)>,
}

impl<'j> Extra<'j> {
    /// Keeps a modelled sub-object whole (once).
    fn add(&mut self, key: &'j str, value: &'j Json) {
        if !self.subs.iter().any(|(k, _)| *k == key) {
            self.subs.push((key, value));
        }
    }
    /// Keeps the unmodelled members of `obj` (everything not in `known`/`also`).
    fn rest(&mut self, obj: &'j Json, known: &[&str], also: Option<&str>) {
        self.rest.extend(leftover(obj, known, also));
    }
    /// Keeps the sub-object `key` of `parent` whole when it has keys beyond `known`.
    fn sub(&mut self, parent: &'j Json, key: &'j str, known: &[&str]) {
        if let Some(v) = present(parent, key) {
            if has_leftover(v, known) {
                self.add(key, v);
            }
        }
    }
    fn into_json(self) -> String {
        if self.subs.is_empty() && self.rest.is_empty() {
            String::new()
        } else {
            canonical_object(self.subs.into_iter().chain(self.rest))
        }
    }
}

// ---------------------------------------------------------------------------
// Identity from value.contacts[].

struct ContactInfo<'j> {
    wa_id: &'j str,
    user_id: &'j str,
    parent_user_id: &'j str,
    name: &'j str,
    username: &'j str,
    country_code: &'j str,
}

const CONTACT_KEYS: &[&str] = &["profile", "wa_id", "user_id", "parent_user_id"];
const PROFILE_KEYS: &[&str] = &["name", "username", "country_code"];

/// `value.contacts[]`, indexed by `wa_id` and `user_id` (first entry wins; empty
/// ids are not indexed).
struct Book<'j> {
    list: Vec<ContactInfo<'j>>,
    by_wa_id: HashMap<&'j str, usize>,
    by_user_id: HashMap<&'j str, usize>,
}

fn contacts<'j>(value: &'j Json, path: &Path) -> R<Book<'j>> {
    let p = path.key("contacts");
    let mut out = Vec::new();
    for (i, c) in arr(value, "contacts", path)?.iter().enumerate() {
        let cp = p.index(i);
        expect_obj(c, &cp)?;
        let (mut name, mut username, mut country_code) = ("", "", "");
        if let Some(profile) = opt_obj(c, "profile", &cp)? {
            let pp = cp.key("profile");
            name = opt_str(profile, "name", &pp)?.unwrap_or("");
            username = opt_str(profile, "username", &pp)?.unwrap_or("");
            country_code = opt_str(profile, "country_code", &pp)?.unwrap_or("");
        }
        out.push(ContactInfo {
            wa_id: opt_str(c, "wa_id", &cp)?.unwrap_or(""),
            user_id: opt_str(c, "user_id", &cp)?.unwrap_or(""),
            parent_user_id: opt_str(c, "parent_user_id", &cp)?.unwrap_or(""),
            name,
            username,
            country_code,
        });
    }
    let mut by_wa_id = HashMap::new();
    let mut by_user_id = HashMap::new();
    for (i, c) in out.iter().enumerate() {
        if !c.wa_id.is_empty() {
            by_wa_id.entry(c.wa_id).or_insert(i);
        }
        if !c.user_id.is_empty() {
            by_user_id.entry(c.user_id).or_insert(i);
        }
    }
    Ok(Book {
        list: out,
        by_wa_id,
        by_user_id,
    })
}

/// Builds the customer identity from an item's own keys, completed by the first
/// `contacts[]` entry whose `wa_id` or `user_id` matches (marked as used).
fn identity(
    phone: &str,
    bsuid: &str,
    parent: &str,
    contacts: &Book,
    used: &mut [bool],
) -> Identity {
    let mut id = Identity {
        phone: phone.to_owned(),
        bsuid: bsuid.to_owned(),
        parent_bsuid: parent.to_owned(),
        ..Identity::default()
    };
    let by_phone = contacts.by_wa_id.get(phone).copied();
    let by_bsuid = contacts.by_user_id.get(bsuid).copied();
    let found = match (by_phone, by_bsuid) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    if let Some(c) = found.and_then(|i| contacts.list.get(i).map(|c| (i, c))) {
        let (i, c) = c;
        if let Some(u) = used.get_mut(i) {
            *u = true;
        }
        fill(&mut id.phone, c.wa_id);
        fill(&mut id.bsuid, c.user_id);
        fill(&mut id.parent_bsuid, c.parent_user_id);
        fill(&mut id.username, c.username);
        fill(&mut id.country_code, c.country_code);
        fill(&mut id.profile_name, c.name);
    }
    id.country = country_of(&id.phone, &id.bsuid);
    id
}

fn fill(slot: &mut String, v: &str) {
    if slot.is_empty() {
        v.clone_into(slot);
    }
}

// ---------------------------------------------------------------------------
// Message parsing (inbound, echo, history, history media, nested edit).

const MESSAGE_KEYS: &[&str] = &[
    "id",
    "type",
    "timestamp",
    "from",
    "to",
    "from_user_id",
    "to_user_id",
    "context",
    "referral",
    "errors",
    "group_id",
    "history_context",
    "message_creation_type",
];
const CONTEXT_KEYS: &[&str] = &[
    "from",
    "id",
    "forwarded",
    "frequently_forwarded",
    "referred_product",
];
const REFERRED_PRODUCT_KEYS: &[&str] = &["catalog_id", "product_retailer_id"];
const REFERRAL_KEYS: &[&str] = &[
    "source_url",
    "source_id",
    "source_type",
    "body",
    "headline",
    "media_type",
    "image_url",
    "video_url",
    "thumbnail_url",
    "ctwa_clid",
    "welcome_message",
];
const ERROR_KEYS: &[&str] = &["code", "title", "message", "error_data", "href"];
const ERROR_DATA_KEYS: &[&str] = &["details"];
const MEDIA_KEYS: &[&str] = &[
    "id",
    "mime_type",
    "sha256",
    "caption",
    "filename",
    "voice",
    "animated",
    "url",
    "link",
];

/// Parses `errors[]`; returns whether any error object has keys twinlog does not model.
fn meta_errors(list: &[Json], path: &Path) -> R<(Vec<MetaError>, bool)> {
    let mut out = Vec::with_capacity(list.len());
    let mut unmodelled = false;
    for (i, e) in list.iter().enumerate() {
        let ep = path.index(i);
        expect_obj(e, &ep)?;
        unmodelled |= has_leftover(e, ERROR_KEYS);
        let mut details = String::new();
        if let Some(data) = opt_obj(e, "error_data", &ep)? {
            unmodelled |= has_leftover(data, ERROR_DATA_KEYS);
            details = s(data, "details", &ep.key("error_data"))?;
        }
        out.push(MetaError {
            code: opt_int(e, "code", &ep)?.unwrap_or(0),
            title: s(e, "title", &ep)?,
            message: s(e, "message", &ep)?,
            details,
            href: s(e, "href", &ep)?,
        });
    }
    Ok((out, unmodelled))
}

/// The identity keys of a message, for the envelope.
struct Sides<'j> {
    from: &'j str,
    to: &'j str,
    from_user_id: &'j str,
    to_user_id: &'j str,
    from_parent: &'j str,
    to_parent: &'j str,
}

fn parse_message<'j>(m: &'j Json, path: &Path, nested: bool) -> R<(Message, Sides<'j>)> {
    expect_obj(m, path)?;
    let (wamid, timestamp) = if nested {
        (
            s(m, "id", path)?,
            opt_int(m, "timestamp", path)?.unwrap_or(0),
        )
    } else {
        (
            req_str(m, "id", path)?.to_owned(),
            req_int(m, "timestamp", path)?,
        )
    };
    let ty = req_str(m, "type", path)?;
    let mut extra = Extra::default();

    let context = match opt_obj(m, "context", path)? {
        None => None,
        Some(c) => {
            let cp = path.key("context");
            extra.sub(m, "context", CONTEXT_KEYS);
            let mut ctx = Context {
                from: s(c, "from", &cp)?,
                id: s(c, "id", &cp)?,
                forwarded: opt_bool(c, "forwarded", &cp)?.unwrap_or(false),
                frequently_forwarded: opt_bool(c, "frequently_forwarded", &cp)?.unwrap_or(false),
                ..Context::default()
            };
            if let Some(rp) = opt_obj(c, "referred_product", &cp)? {
                let rpp = cp.key("referred_product");
                if has_leftover(rp, REFERRED_PRODUCT_KEYS) {
                    extra.add("context", c);
                }
                ctx.referred_product_catalog_id = s(rp, "catalog_id", &rpp)?;
                ctx.referred_product_retailer_id = s(rp, "product_retailer_id", &rpp)?;
            }
            Some(ctx)
        }
    };

    let referral = match opt_obj(m, "referral", path)? {
        None => None,
        Some(r) => {
            let rp = path.key("referral");
            extra.sub(m, "referral", REFERRAL_KEYS);
            let mut welcome = String::new();
            if let Some(w) = opt_obj(r, "welcome_message", &rp)? {
                if has_leftover(w, &["text"]) {
                    extra.add("referral", r);
                }
                welcome = s(w, "text", &rp.key("welcome_message"))?;
            }
            Some(Referral {
                source_url: s(r, "source_url", &rp)?,
                source_id: s(r, "source_id", &rp)?,
                source_type: s(r, "source_type", &rp)?,
                body: s(r, "body", &rp)?,
                headline: s(r, "headline", &rp)?,
                media_type: s(r, "media_type", &rp)?,
                image_url: s(r, "image_url", &rp)?,
                video_url: s(r, "video_url", &rp)?,
                thumbnail_url: s(r, "thumbnail_url", &rp)?,
                ctwa_clid: s(r, "ctwa_clid", &rp)?,
                welcome_message_text: welcome,
            })
        }
    };

    let (errors, errors_unmodelled) = meta_errors(arr(m, "errors", path)?, &path.key("errors"))?;
    if errors_unmodelled {
        if let Some(v) = present(m, "errors") {
            extra.add("errors", v);
        }
    }

    let mut history_status = String::new();
    if let Some(h) = opt_obj(m, "history_context", path)? {
        history_status = s(h, "status", &path.key("history_context"))?;
        extra.sub(m, "history_context", &["status"]);
    }

    let (content, content_key_modelled) = content(m, ty, path, &mut extra)?;

    let also = if content_key_modelled { Some(ty) } else { None };
    extra.rest(m, MESSAGE_KEYS, also);

    let sides = Sides {
        from: opt_str(m, "from", path)?.unwrap_or(""),
        to: opt_str(m, "to", path)?.unwrap_or(""),
        from_user_id: opt_str(m, "from_user_id", path)?.unwrap_or(""),
        to_user_id: opt_str(m, "to_user_id", path)?.unwrap_or(""),
        from_parent: opt_str(m, "from_parent_user_id", path)?.unwrap_or(""),
        to_parent: opt_str(m, "to_parent_user_id", path)?.unwrap_or(""),
    };
    let msg = Message {
        wamid,
        r#type: ty.to_owned(),
        timestamp,
        from: sides.from.to_owned(),
        to: sides.to.to_owned(),
        from_user_id: sides.from_user_id.to_owned(),
        to_user_id: sides.to_user_id.to_owned(),
        context,
        referral,
        errors,
        group_id: s(m, "group_id", path)?,
        history_status,
        message_creation_type: s(m, "message_creation_type", path)?,
        extra_json: extra.into_json(),
        content,
    };
    Ok((msg, sides))
}

/// The content named by `type`. Returns whether the content key is fully modelled
/// (otherwise it stays in `extra_json` if present).
fn content<'j>(
    m: &'j Json,
    ty: &'j str,
    path: &Path,
    extra: &mut Extra<'j>,
) -> R<(Option<Content>, bool)> {
    // The content object for types that must have one.
    let required = |key: &str| -> R<&'j Json> {
        opt_obj(m, key, path)?.ok_or_else(|| NormalizeError::Missing {
            path: path.key(key).render(),
        })
    };
    let cp = path.key(ty);
    let c = match ty {
        "text" => {
            let o = required("text")?;
            extra.sub(m, "text", &["body", "preview_url"]);
            Content::Text(Text {
                body: s(o, "body", &cp)?,
                preview_url: opt_bool(o, "preview_url", &cp)?.unwrap_or(false),
            })
        }
        "image" | "video" | "audio" | "document" | "sticker" => {
            let o = required(ty)?;
            extra.sub(m, ty, MEDIA_KEYS);
            Content::Media(Media {
                kind: ty.to_owned(),
                id: s(o, "id", &cp)?,
                mime_type: s(o, "mime_type", &cp)?,
                sha256: s(o, "sha256", &cp)?,
                caption: s(o, "caption", &cp)?,
                filename: s(o, "filename", &cp)?,
                voice: opt_bool(o, "voice", &cp)?.unwrap_or(false),
                animated: opt_bool(o, "animated", &cp)?.unwrap_or(false),
                url: s(o, "url", &cp)?,
                link: s(o, "link", &cp)?,
            })
        }
        "location" => {
            let o = required("location")?;
            extra.sub(
                m,
                "location",
                &["latitude", "longitude", "name", "address", "url"],
            );
            Content::Location(Location {
                latitude: opt_f64(o, "latitude", &cp)?,
                longitude: opt_f64(o, "longitude", &cp)?,
                name: s(o, "name", &cp)?,
                address: s(o, "address", &cp)?,
                url: s(o, "url", &cp)?,
            })
        }
        "contacts" => {
            let list = match present(m, "contacts") {
                Some(Json::Arr(items)) => items.as_slice(),
                Some(v) => return Err(wrong(v, &cp, "array")),
                None => {
                    return Err(NormalizeError::Missing { path: cp.render() });
                }
            };
            let (cards, unmodelled) = contact_cards(list, &cp)?;
            if unmodelled {
                if let Some(v) = present(m, "contacts") {
                    extra.add("contacts", v);
                }
            }
            Content::Contacts(ContactCards { cards })
        }
        "interactive" => {
            let o = required("interactive")?;
            let kind = s(o, "type", &cp)?;
            let mut it = Interactive {
                raw_json: o.to_canonical(),
                ..Interactive::default()
            };
            match kind.as_str() {
                "button_reply" | "list_reply" => {
                    if let Some(r) = opt_obj(o, &kind, &cp)? {
                        let rp = cp.key(&kind);
                        it.reply_id = s(r, "id", &rp)?;
                        it.title = s(r, "title", &rp)?;
                        it.description = s(r, "description", &rp)?;
                    }
                }
                "nfm_reply" => {
                    if let Some(r) = opt_obj(o, "nfm_reply", &cp)? {
                        let rp = cp.key("nfm_reply");
                        it.nfm_name = s(r, "name", &rp)?;
                        it.nfm_body = s(r, "body", &rp)?;
                        it.nfm_response_json = s(r, "response_json", &rp)?;
                    }
                }
                _ => {}
            }
            it.r#type = kind;
            Content::Interactive(it)
        }
        "button" => {
            let o = required("button")?;
            extra.sub(m, "button", &["payload", "text"]);
            Content::Button(Button {
                payload: s(o, "payload", &cp)?,
                text: s(o, "text", &cp)?,
            })
        }
        "reaction" => {
            let o = required("reaction")?;
            extra.sub(m, "reaction", &["message_id", "emoji"]);
            Content::Reaction(Reaction {
                message_id: s(o, "message_id", &cp)?,
                emoji: s(o, "emoji", &cp)?,
            })
        }
        "order" => {
            let o = required("order")?;
            extra.sub(m, "order", &["catalog_id", "text", "product_items"]);
            let ip = cp.key("product_items");
            let mut items = Vec::new();
            for (i, it) in arr(o, "product_items", &cp)?.iter().enumerate() {
                let pp = ip.index(i);
                expect_obj(it, &pp)?;
                if has_leftover(
                    it,
                    &["product_retailer_id", "quantity", "item_price", "currency"],
                ) {
                    extra.add("order", o);
                }
                let item_price = match present(it, "item_price") {
                    None => String::new(),
                    Some(Json::Str(t) | Json::Num(t)) => t.clone(),
                    Some(v) => return Err(wrong(v, &pp.key("item_price"), "string or number")),
                };
                items.push(ProductItem {
                    product_retailer_id: s(it, "product_retailer_id", &pp)?,
                    quantity: opt_int(it, "quantity", &pp)?.unwrap_or(0),
                    item_price,
                    currency: s(it, "currency", &pp)?,
                });
            }
            Content::Order(Order {
                catalog_id: s(o, "catalog_id", &cp)?,
                text: s(o, "text", &cp)?,
                product_items: items,
            })
        }
        "system" => {
            let o = required("system")?;
            extra.sub(
                m,
                "system",
                &[
                    "type",
                    "body",
                    "wa_id",
                    "user_id",
                    "previous_user_id",
                    "identity",
                    "customer",
                ],
            );
            Content::System(System {
                r#type: s(o, "type", &cp)?,
                body: s(o, "body", &cp)?,
                wa_id: s(o, "wa_id", &cp)?,
                user_id: s(o, "user_id", &cp)?,
                previous_user_id: s(o, "previous_user_id", &cp)?,
                identity: s(o, "identity", &cp)?,
                customer: s(o, "customer", &cp)?,
            })
        }
        "unsupported" => {
            // Older payloads carry only `errors`; the object is optional.
            let mut u = Unsupported::default();
            if let Some(o) = opt_obj(m, "unsupported", path)? {
                extra.sub(m, "unsupported", &["type"]);
                u.r#type = s(o, "type", &cp)?;
            }
            Content::Unsupported(u)
        }
        "edit" => {
            let o = required("edit")?;
            extra.sub(m, "edit", &["original_message_id", "message"]);
            let inner = match opt_obj(o, "message", &cp)? {
                Some(inner) => Some(Box::new(parse_message(inner, &cp.key("message"), true)?.0)),
                None => None,
            };
            Content::Edit(Box::new(Edit {
                original_wamid: s(o, "original_message_id", &cp)?,
                message: inner,
            }))
        }
        "revoke" => {
            let o = required("revoke")?;
            extra.sub(m, "revoke", &["original_message_id"]);
            Content::Revoke(Revoke {
                original_wamid: s(o, "original_message_id", &cp)?,
            })
        }
        "media_placeholder" => {
            // No content object is documented; if one appears it stays in extra_json.
            return Ok((Some(Content::MediaPlaceholder(MediaPlaceholder {})), false));
        }
        _ => Content::Other(OtherContent {
            r#type: ty.to_owned(),
            raw_json: present(m, ty).map(Json::to_canonical).unwrap_or_default(),
        }),
    };
    Ok((Some(c), true))
}

fn opt_f64(obj: &Json, key: &str, path: &Path) -> R<f64> {
    match present(obj, key) {
        None => Ok(0.0),
        Some(Json::Num(t)) => Ok(t.parse::<f64>().unwrap_or(0.0)),
        Some(v) => Err(wrong(v, &path.key(key), "number")),
    }
}

const CARD_KEYS: &[&str] = &[
    "name",
    "phones",
    "emails",
    "org",
    "urls",
    "addresses",
    "birthday",
];
const NAME_KEYS: &[&str] = &[
    "formatted_name",
    "first_name",
    "last_name",
    "middle_name",
    "prefix",
    "suffix",
];

fn contact_cards(list: &[Json], path: &Path) -> R<(Vec<ContactCard>, bool)> {
    let mut cards = Vec::with_capacity(list.len());
    let mut unmodelled = false;
    for (i, c) in list.iter().enumerate() {
        let cp = path.index(i);
        expect_obj(c, &cp)?;
        unmodelled |= has_leftover(c, CARD_KEYS);
        let mut card = ContactCard {
            birthday: s(c, "birthday", &cp)?,
            organization_json: present(c, "org")
                .map(Json::to_canonical)
                .unwrap_or_default(),
            addresses_json: present(c, "addresses")
                .map(Json::to_canonical)
                .unwrap_or_default(),
            ..ContactCard::default()
        };
        if let Some(n) = opt_obj(c, "name", &cp)? {
            let np = cp.key("name");
            unmodelled |= has_leftover(n, NAME_KEYS);
            card.formatted_name = s(n, "formatted_name", &np)?;
            card.first_name = s(n, "first_name", &np)?;
            card.last_name = s(n, "last_name", &np)?;
            card.middle_name = s(n, "middle_name", &np)?;
            card.name_prefix = s(n, "prefix", &np)?;
            card.name_suffix = s(n, "suffix", &np)?;
        }
        let pp = cp.key("phones");
        for (j, p) in arr(c, "phones", &cp)?.iter().enumerate() {
            let ip = pp.index(j);
            expect_obj(p, &ip)?;
            unmodelled |= has_leftover(p, &["phone", "wa_id", "type"]);
            card.phones.push(ContactPhone {
                phone: s(p, "phone", &ip)?,
                wa_id: s(p, "wa_id", &ip)?,
                r#type: s(p, "type", &ip)?,
            });
        }
        let ep = cp.key("emails");
        for (j, e) in arr(c, "emails", &cp)?.iter().enumerate() {
            let ip = ep.index(j);
            expect_obj(e, &ip)?;
            unmodelled |= has_leftover(e, &["email", "type"]);
            card.emails.push(ContactEmail {
                email: s(e, "email", &ip)?,
                r#type: s(e, "type", &ip)?,
            });
        }
        let up = cp.key("urls");
        for (j, u) in arr(c, "urls", &cp)?.iter().enumerate() {
            let ip = up.index(j);
            expect_obj(u, &ip)?;
            unmodelled |= has_leftover(u, &["url", "type"]);
            card.urls.push(ContactUrl {
                url: s(u, "url", &ip)?,
                r#type: s(u, "type", &ip)?,
            });
        }
        cards.push(card);
    }
    Ok((cards, unmodelled))
}

// ---------------------------------------------------------------------------
// Statuses.

const STATUS_KEYS: &[&str] = &[
    "id",
    "status",
    "timestamp",
    "recipient_id",
    "recipient_user_id",
    "recipient_type",
    "recipient_participant_id",
    "biz_opaque_callback_data",
    "conversation",
    "pricing",
    "errors",
];

fn parse_status(st: &Json, path: &Path) -> R<MessageStatus> {
    expect_obj(st, path)?;
    let mut extra = Extra::default();
    let conversation = match opt_obj(st, "conversation", path)? {
        None => None,
        Some(c) => {
            let cp = path.key("conversation");
            extra.sub(
                st,
                "conversation",
                &["id", "expiration_timestamp", "origin"],
            );
            let mut origin_type = String::new();
            if let Some(o) = opt_obj(c, "origin", &cp)? {
                if has_leftover(o, &["type"]) {
                    extra.add("conversation", c);
                }
                origin_type = s(o, "type", &cp.key("origin"))?;
            }
            Some(Conversation {
                id: s(c, "id", &cp)?,
                expiration_timestamp: opt_int(c, "expiration_timestamp", &cp)?.unwrap_or(0),
                origin_type,
            })
        }
    };
    let pricing = match opt_obj(st, "pricing", path)? {
        None => None,
        Some(p) => {
            let pp = path.key("pricing");
            extra.sub(
                st,
                "pricing",
                &["billable", "pricing_model", "type", "category"],
            );
            Some(Pricing {
                billable: opt_bool(p, "billable", &pp)?,
                pricing_model: s(p, "pricing_model", &pp)?,
                r#type: s(p, "type", &pp)?,
                category: s(p, "category", &pp)?,
            })
        }
    };
    let (errors, unmodelled) = meta_errors(arr(st, "errors", path)?, &path.key("errors"))?;
    if unmodelled {
        if let Some(v) = present(st, "errors") {
            extra.add("errors", v);
        }
    }
    extra.rest(st, STATUS_KEYS, None);
    Ok(MessageStatus {
        wamid: req_str(st, "id", path)?.to_owned(),
        status: req_str(st, "status", path)?.to_owned(),
        timestamp: req_int(st, "timestamp", path)?,
        recipient_id: s(st, "recipient_id", path)?,
        recipient_user_id: s(st, "recipient_user_id", path)?,
        recipient_type: s(st, "recipient_type", path)?,
        recipient_participant_id: s(st, "recipient_participant_id", path)?,
        biz_opaque_callback_data: s(st, "biz_opaque_callback_data", path)?,
        conversation,
        pricing,
        errors,
        extra_json: extra.into_json(),
    })
}

// ---------------------------------------------------------------------------
// Walking the body.

struct Walker<'o> {
    sha: &'o [u8],
    ingest_time_ms: i64,
    out: &'o mut Vec<IngestEvent>,
}

/// Where the events of one change go, and what their envelopes share.
struct Change<'a> {
    field: &'a str,
    entry_index: u32,
    change_index: u32,
    waba_id: String,
    phone_number_id: String,
    display_phone_number: String,
    entry_time: i64,
    next_item: u32,
}

fn idx(i: usize) -> u32 {
    u32::try_from(i).unwrap_or(u32::MAX)
}

impl Walker<'_> {
    fn emit(&mut self, ch: &mut Change, customer: Option<Identity>, ts: i64, kind: Kind) {
        let envelope = Envelope {
            phone_number_id: ch.phone_number_id.clone(),
            display_phone_number: ch.display_phone_number.clone(),
            waba_id: ch.waba_id.clone(),
            customer,
            meta_timestamp: ts,
            ingest_time_ms: self.ingest_time_ms,
            body_sha256: self.sha.to_vec(),
            field: ch.field.to_owned(),
            entry_index: ch.entry_index,
            change_index: ch.change_index,
            item_index: ch.next_item,
        };
        ch.next_item = ch.next_item.saturating_add(1);
        self.out.push(IngestEvent {
            envelope: Some(envelope),
            kind: Some(kind),
        });
    }

    fn unknown(&mut self, ch: &mut Change, reason: String, raw_json: String) {
        let ts = ch.entry_time;
        let field = ch.field.to_owned();
        self.emit(
            ch,
            None,
            ts,
            Kind::Unknown(Unknown {
                field,
                reason,
                raw_json,
            }),
        );
    }

    fn unmodelled(&mut self, ch: &mut Change, obj: &Json, known: &[&str], path: &Path) {
        let rest = leftover(obj, known, None);
        if !rest.is_empty() {
            let raw = canonical_object(rest.into_iter());
            self.unknown(ch, format!("unmodelled keys at {}", path.render()), raw);
        }
    }

    fn body(&mut self, root: &Json) -> R<()> {
        expect_obj(root, &ROOT)?;
        match present(root, "object") {
            None => {
                return Err(NormalizeError::Missing {
                    path: ROOT.key("object").render(),
                })
            }
            Some(Json::Str(o)) if o == "whatsapp_business_account" => {}
            Some(v) => return Err(NormalizeError::NotWhatsApp { found: short(v) }),
        }
        let entries = match present(root, "entry") {
            Some(Json::Arr(items)) => items,
            Some(v) => return Err(wrong(v, &ROOT.key("entry"), "array")),
            None => {
                return Err(NormalizeError::Missing {
                    path: ROOT.key("entry").render(),
                })
            }
        };
        let mut top = Change {
            field: "",
            entry_index: 0,
            change_index: 0,
            waba_id: String::new(),
            phone_number_id: String::new(),
            display_phone_number: String::new(),
            entry_time: 0,
            next_item: 0,
        };
        self.unmodelled(&mut top, root, &["object", "entry"], &ROOT);
        let ep = ROOT.key("entry");
        for (ei, entry) in entries.iter().enumerate() {
            self.entry(entry, ei, &ep.index(ei))?;
        }
        Ok(())
    }

    fn entry(&mut self, entry: &Json, ei: usize, path: &Path) -> R<()> {
        expect_obj(entry, path)?;
        let waba_id = req_str(entry, "id", path)?;
        let entry_time = opt_int(entry, "time", path)?.unwrap_or(0);
        let changes = match present(entry, "changes") {
            Some(Json::Arr(items)) => items,
            Some(v) => return Err(wrong(v, &path.key("changes"), "array")),
            None => {
                return Err(NormalizeError::Missing {
                    path: path.key("changes").render(),
                })
            }
        };
        let mut top = Change {
            field: "",
            entry_index: idx(ei),
            change_index: 0,
            waba_id: waba_id.to_owned(),
            phone_number_id: String::new(),
            display_phone_number: String::new(),
            entry_time,
            next_item: 0,
        };
        self.unmodelled(&mut top, entry, &["id", "time", "changes"], path);
        let cp = path.key("changes");
        for (ci, change) in changes.iter().enumerate() {
            let chp = cp.index(ci);
            expect_obj(change, &chp)?;
            let field = req_str(change, "field", &chp)?;
            let value = present(change, "value").ok_or_else(|| NormalizeError::Missing {
                path: chp.key("value").render(),
            })?;
            let mut ch = Change {
                field,
                entry_index: idx(ei),
                change_index: idx(ci),
                waba_id: waba_id.to_owned(),
                phone_number_id: String::new(),
                display_phone_number: String::new(),
                entry_time,
                next_item: 0,
            };
            self.unmodelled(&mut ch, change, &["field", "value"], &chp);
            let before = ch.next_item;
            let vp = chp.key("value");
            match field {
                "messages" | "smb_message_echoes" | "history" | "smb_app_state_sync" => {
                    self.per_number(&mut ch, value, &vp)?
                }
                "account_update" => self.account_update(&mut ch, value, &vp)?,
                _ => {
                    // Unknown field: read metadata only if it is well-formed.
                    if let Some(Json::Obj(_)) = present(value, "metadata") {
                        let md = value.get("metadata").unwrap_or(&Json::Null);
                        if let Some(Json::Str(id)) = present(md, "phone_number_id") {
                            ch.phone_number_id = id.clone();
                        }
                        if let Some(Json::Str(d)) = present(md, "display_phone_number") {
                            ch.display_phone_number = d.clone();
                        }
                    }
                    self.unknown(&mut ch, "unknown field".into(), value.to_canonical());
                }
            }
            if ch.next_item == before {
                self.unknown(
                    &mut ch,
                    "value has no items twinlog models".into(),
                    value.to_canonical(),
                );
            }
        }
        Ok(())
    }

    /// `messages`, `smb_message_echoes`, `history`, `smb_app_state_sync`.
    fn per_number(&mut self, ch: &mut Change, value: &Json, vp: &Path) -> R<()> {
        expect_obj(value, vp)?;
        if let Some(md) = opt_obj(value, "metadata", vp)? {
            let mp = vp.key("metadata");
            ch.phone_number_id = s(md, "phone_number_id", &mp)?;
            ch.display_phone_number = s(md, "display_phone_number", &mp)?;
            self.unmodelled(ch, md, &["phone_number_id", "display_phone_number"], &mp);
        }
        let contacts = contacts(value, vp)?;
        let mut used = vec![false; contacts.list.len()];

        let known: &[&str] = match ch.field {
            "messages" => &[
                "messaging_product",
                "metadata",
                "contacts",
                "messages",
                "statuses",
                "errors",
            ],
            "smb_message_echoes" => &[
                "messaging_product",
                "metadata",
                "contacts",
                "message_echoes",
                "errors",
            ],
            "history" => &[
                "messaging_product",
                "metadata",
                "contacts",
                "history",
                "messages",
                "message_echoes",
                "errors",
            ],
            _ => &[
                "messaging_product",
                "metadata",
                "contacts",
                "state_sync",
                "errors",
            ],
        };

        if known.contains(&"messages") {
            let mp = vp.key("messages");
            for (i, m) in arr(value, "messages", vp)?.iter().enumerate() {
                let (msg, sd) = parse_message(m, &mp.index(i), false)?;
                let who = identity(
                    sd.from,
                    sd.from_user_id,
                    sd.from_parent,
                    &contacts,
                    &mut used,
                );
                let ts = msg.timestamp;
                let kind = if ch.field == "history" {
                    Kind::HistoryMedia(msg)
                } else {
                    Kind::Inbound(msg)
                };
                self.emit(ch, Some(who), ts, kind);
            }
        }
        if known.contains(&"statuses") {
            let sp = vp.key("statuses");
            for (i, st) in arr(value, "statuses", vp)?.iter().enumerate() {
                let ip = sp.index(i);
                let status = parse_status(st, &ip)?;
                let parent = opt_str(st, "recipient_parent_user_id", &ip)?.unwrap_or("");
                let who = identity(
                    &status.recipient_id,
                    &status.recipient_user_id,
                    parent,
                    &contacts,
                    &mut used,
                );
                let ts = status.timestamp;
                self.emit(ch, Some(who), ts, Kind::Status(status));
            }
        }
        if known.contains(&"message_echoes") {
            let ep = vp.key("message_echoes");
            for (i, m) in arr(value, "message_echoes", vp)?.iter().enumerate() {
                let (msg, sd) = parse_message(m, &ep.index(i), false)?;
                let who = identity(sd.to, sd.to_user_id, sd.to_parent, &contacts, &mut used);
                let ts = msg.timestamp;
                let kind = if ch.field == "history" {
                    Kind::HistoryMedia(msg)
                } else {
                    Kind::Echo(msg)
                };
                self.emit(ch, Some(who), ts, kind);
            }
        }
        if known.contains(&"history") {
            let hp = vp.key("history");
            for (i, item) in arr(value, "history", vp)?.iter().enumerate() {
                self.history_item(ch, item, &hp.index(i), &contacts, &mut used)?;
            }
        }
        if known.contains(&"state_sync") {
            let sp = vp.key("state_sync");
            for (i, item) in arr(value, "state_sync", vp)?.iter().enumerate() {
                self.state_sync_item(ch, item, &sp.index(i), &contacts, &mut used)?;
            }
        }
        let errors = arr(value, "errors", vp)?;
        if !errors.is_empty() {
            let ep = vp.key("errors");
            let (errs, unmodelled) = meta_errors(errors, &ep)?;
            let ts = ch.entry_time;
            self.emit(
                ch,
                None,
                ts,
                Kind::WebhookErrors(WebhookErrors { errors: errs }),
            );
            if unmodelled {
                let raw = present(value, "errors")
                    .map(Json::to_canonical)
                    .unwrap_or_default();
                self.unknown(ch, format!("unmodelled keys at {}", ep.render()), raw);
            }
        }
        // contacts[] entries that no item used, or that carry keys we do not model.
        let cl = arr(value, "contacts", vp)?;
        let cpath = vp.key("contacts");
        for (i, c) in cl.iter().enumerate() {
            let unmatched = !used.get(i).copied().unwrap_or(false);
            let unmodelled = has_leftover(c, CONTACT_KEYS)
                || present(c, "profile").is_some_and(|p| has_leftover(p, PROFILE_KEYS));
            if unmatched || unmodelled {
                let reason = if unmatched {
                    format!("contact matched no item at {}", cpath.index(i).render())
                } else {
                    format!("unmodelled keys at {}", cpath.index(i).render())
                };
                self.unknown(ch, reason, c.to_canonical());
            }
        }
        self.unmodelled(ch, value, known, vp);
        Ok(())
    }

    fn history_item(
        &mut self,
        ch: &mut Change,
        item: &Json,
        path: &Path,
        contacts: &Book,
        used: &mut [bool],
    ) -> R<()> {
        expect_obj(item, path)?;
        let (mut phase, mut chunk_order, mut progress) = (0, 0, 0);
        let md = opt_obj(item, "metadata", path)?;
        if let Some(md) = md {
            let mp = path.key("metadata");
            phase = opt_int(md, "phase", &mp)?.unwrap_or(0);
            chunk_order = opt_int(md, "chunk_order", &mp)?.unwrap_or(0);
            progress = opt_int(md, "progress", &mp)?.unwrap_or(0);
            self.unmodelled(ch, md, &["phase", "chunk_order", "progress"], &mp);
        }
        let threads = arr(item, "threads", path)?;
        let errors = arr(item, "errors", path)?;
        let has_errors = present(item, "errors").is_some();
        if md.is_some() || present(item, "threads").is_some() || !has_errors {
            let ts = ch.entry_time;
            if threads.is_empty() {
                let chunk = HistoryChunk {
                    phase,
                    chunk_order,
                    progress,
                    ..HistoryChunk::default()
                };
                self.emit(ch, None, ts, Kind::HistoryChunk(chunk));
            }
            let tp = path.key("threads");
            for (ti, thread) in threads.iter().enumerate() {
                let thp = tp.index(ti);
                expect_obj(thread, &thp)?;
                let thread_id = s(thread, "id", &thp)?;
                let (mut wa_id, mut user_id, mut parent) = ("", "", "");
                let (mut username, mut country_code) = ("", "");
                if let Some(c) = opt_obj(thread, "context", &thp)? {
                    let cp = thp.key("context");
                    wa_id = opt_str(c, "wa_id", &cp)?.unwrap_or("");
                    user_id = opt_str(c, "user_id", &cp)?.unwrap_or("");
                    parent = opt_str(c, "parent_user_id", &cp)?.unwrap_or("");
                    username = opt_str(c, "username", &cp)?.unwrap_or("");
                    country_code = opt_str(c, "country_code", &cp)?.unwrap_or("");
                    self.unmodelled(
                        ch,
                        c,
                        &[
                            "wa_id",
                            "user_id",
                            "parent_user_id",
                            "username",
                            "country_code",
                        ],
                        &cp,
                    );
                }
                let phone = if wa_id.is_empty() { &thread_id } else { wa_id };
                let mut who = identity(phone, user_id, parent, contacts, used);
                fill(&mut who.username, username);
                fill(&mut who.country_code, country_code);
                let mp = thp.key("messages");
                let mut messages = Vec::new();
                for (mi, m) in arr(thread, "messages", &thp)?.iter().enumerate() {
                    messages.push(parse_message(m, &mp.index(mi), false)?.0);
                }
                self.unmodelled(ch, thread, &["id", "context", "messages"], &thp);
                let chunk = HistoryChunk {
                    phase,
                    chunk_order,
                    progress,
                    thread_index: idx(ti),
                    thread_count: idx(threads.len()),
                    thread_id,
                    messages,
                };
                self.emit(ch, Some(who), ts, Kind::HistoryChunk(chunk));
            }
        }
        if has_errors {
            let ep = path.key("errors");
            let (errs, unmodelled) = meta_errors(errors, &ep)?;
            let ts = ch.entry_time;
            self.emit(
                ch,
                None,
                ts,
                Kind::HistoryDeclined(HistoryDeclined { errors: errs }),
            );
            if unmodelled {
                let raw = present(item, "errors")
                    .map(Json::to_canonical)
                    .unwrap_or_default();
                self.unknown(ch, format!("unmodelled keys at {}", ep.render()), raw);
            }
        }
        self.unmodelled(ch, item, &["metadata", "threads", "errors"], path);
        Ok(())
    }

    fn state_sync_item(
        &mut self,
        ch: &mut Change,
        item: &Json,
        path: &Path,
        contacts: &Book,
        used: &mut [bool],
    ) -> R<()> {
        expect_obj(item, path)?;
        let mut extra = Extra::default();
        let mut sync = ContactSync {
            r#type: s(item, "type", path)?,
            action: s(item, "action", path)?,
            ..ContactSync::default()
        };
        let mut parent = "";
        if let Some(c) = opt_obj(item, "contact", path)? {
            let cp = path.key("contact");
            extra.sub(
                item,
                "contact",
                &[
                    "full_name",
                    "first_name",
                    "phone_number",
                    "user_id",
                    "username",
                    "country_code",
                ],
            );
            sync.full_name = s(c, "full_name", &cp)?;
            sync.first_name = s(c, "first_name", &cp)?;
            sync.phone_number = s(c, "phone_number", &cp)?;
            sync.user_id = s(c, "user_id", &cp)?;
            sync.username = s(c, "username", &cp)?;
            sync.country_code = s(c, "country_code", &cp)?;
            parent = opt_str(c, "parent_user_id", &cp)?.unwrap_or("");
        }
        if let Some(md) = opt_obj(item, "metadata", path)? {
            extra.sub(item, "metadata", &["timestamp"]);
            sync.timestamp = opt_int(md, "timestamp", &path.key("metadata"))?.unwrap_or(0);
        }
        extra.rest(item, &["type", "action", "contact", "metadata"], None);
        sync.extra_json = extra.into_json();
        let mut who = identity(&sync.phone_number, &sync.user_id, parent, contacts, used);
        fill(&mut who.username, &sync.username);
        fill(&mut who.country_code, &sync.country_code);
        let ts = sync.timestamp;
        self.emit(ch, Some(who), ts, Kind::ContactSync(sync));
        Ok(())
    }

    fn account_update(&mut self, ch: &mut Change, value: &Json, vp: &Path) -> R<()> {
        expect_obj(value, vp)?;
        let mut up = AccountUpdate {
            event: s(value, "event", vp)?,
            entry_time: ch.entry_time,
            entry_id: ch.waba_id.to_owned(),
            phone_number: s(value, "phone_number", vp)?,
            value_json: value.to_canonical(),
            ..AccountUpdate::default()
        };
        if let Some(w) = opt_obj(value, "waba_info", vp)? {
            let wp = vp.key("waba_info");
            up.waba_id = s(w, "waba_id", &wp)?;
            up.owner_business_id = s(w, "owner_business_id", &wp)?;
            up.partner_app_id = s(w, "partner_app_id", &wp)?;
            up.solution_id = s(w, "solution_id", &wp)?;
        }
        if let Some(d) = opt_obj(value, "disconnection_info", vp)? {
            let dp = vp.key("disconnection_info");
            up.disconnection_reason = s(d, "reason", &dp)?;
            up.disconnection_initiated_by = s(d, "initiated_by", &dp)?;
        }
        if let Some(b) = opt_obj(value, "ban_info", vp)? {
            let bip = vp.key("ban_info");
            let bp = bip.key("waba_ban_state");
            // A string, or (in some examples) an array of strings: joined with ",".
            up.ban_state = match present(b, "waba_ban_state") {
                None => String::new(),
                Some(Json::Str(st)) => st.clone(),
                Some(Json::Arr(items)) => {
                    let mut parts = Vec::with_capacity(items.len());
                    for (i, it) in items.iter().enumerate() {
                        match it {
                            Json::Str(st) => parts.push(st.as_str()),
                            other => return Err(wrong(other, &bp.index(i), "string")),
                        }
                    }
                    parts.join(",")
                }
                Some(v) => return Err(wrong(v, &bp, "string or array of strings")),
            };
        }
        let ts = ch.entry_time;
        // The envelope's waba_id prefers waba_info.waba_id (partner events).
        let saved = if up.waba_id.is_empty() {
            None
        } else {
            Some(std::mem::replace(&mut ch.waba_id, up.waba_id.clone()))
        };
        self.emit(ch, None, ts, Kind::AccountUpdate(up));
        if let Some(saved) = saved {
            ch.waba_id = saved;
        }
        Ok(())
    }
}
