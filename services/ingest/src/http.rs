//! The HTTP edge: `GET /webhook` (Meta's verification handshake) and
//! `POST /webhook` (deliveries). Every refusal is counted in
//! `twinlog_ingest_rejected_total{reason}` and logged with its reason.

use std::collections::HashMap;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, HttpBody};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use twinlog_bus::Bus;

use crate::metrics::{Outcome, Reject};
use crate::{now_ms, Delivered, Ingestor, BODY_READ_MS_MAX, CHALLENGE_BYTES_MAX};

/// The signature header Meta sends with every delivery.
pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";
/// Bytes of the body buffer reserved up front, whatever `Content-Length`
/// claims; it grows as bytes actually arrive.
const BODY_PREALLOCATE_BYTES_MAX: usize = 64 * 1024;

pub(crate) fn router<B: Bus>(ingestor: Arc<Ingestor<B>>) -> Router {
    Router::new()
        .route("/webhook", get(handshake::<B>).post(deliver::<B>))
        .with_state(ingestor)
}

async fn handshake<B: Bus>(
    State(ingestor): State<Arc<Ingestor<B>>>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    let Ok(Query(params)) = query else {
        return ingestor.refuse(Reject::HandshakeMalformed, StatusCode::FORBIDDEN);
    };
    let (Some(mode), Some(token), Some(challenge)) = (
        params.get("hub.mode"),
        params.get("hub.verify_token"),
        params.get("hub.challenge"),
    ) else {
        return ingestor.refuse(Reject::HandshakeMalformed, StatusCode::FORBIDDEN);
    };
    if mode != "subscribe" || challenge.len() > CHALLENGE_BYTES_MAX {
        return ingestor.refuse(Reject::HandshakeMalformed, StatusCode::FORBIDDEN);
    }
    // Compare digests, so the time taken says nothing about the token.
    if Sha256::digest(token.as_bytes()) != Sha256::digest(&ingestor.verify_token[..]) {
        return ingestor.refuse(Reject::VerifyTokenMismatch, StatusCode::FORBIDDEN);
    }
    ingestor.metrics.outcome(Outcome::Verified);
    tracing::info!(message = "webhook handshake verified");
    (
        StatusCode::OK,
        [(CONTENT_TYPE, HeaderValue::from_static("text/plain"))],
        challenge.clone(),
    )
        .into_response()
}

async fn deliver<B: Bus>(
    State(ingestor): State<Arc<Ingestor<B>>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Ok(_permit) = ingestor.in_flight.clone().try_acquire_owned() else {
        return ingestor.refuse(Reject::Busy, StatusCode::SERVICE_UNAVAILABLE);
    };
    let max = ingestor.body_bytes_max;
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(declared) = declared {
        if usize::try_from(declared).map_or(true, |d| d > max) {
            return ingestor.refuse(Reject::BodyTooLarge, StatusCode::PAYLOAD_TOO_LARGE);
        }
    }
    let Some(signature) = headers.get(SIGNATURE_HEADER) else {
        return ingestor.refuse(Reject::SignatureMissing, StatusCode::UNAUTHORIZED);
    };
    let Some(signature) = parse_signature(signature) else {
        return ingestor.refuse(Reject::SignatureMalformed, StatusCode::UNAUTHORIZED);
    };
    let hint = declared
        .and_then(|d| usize::try_from(d).ok())
        .unwrap_or(0)
        .min(BODY_PREALLOCATE_BYTES_MAX);
    let read = tokio::time::timeout(
        Duration::from_millis(BODY_READ_MS_MAX),
        read_body(body, max, hint),
    )
    .await;
    let bytes = match read {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(ReadFailure::TooLarge)) => {
            return ingestor.refuse(Reject::BodyTooLarge, StatusCode::PAYLOAD_TOO_LARGE)
        }
        Ok(Err(ReadFailure::Stream)) => {
            return ingestor.refuse(Reject::BodyReadFailed, StatusCode::BAD_REQUEST)
        }
        Err(_elapsed) => {
            return ingestor.refuse(Reject::BodyReadTimeout, StatusCode::REQUEST_TIMEOUT)
        }
    };
    let receive_time_ms = now_ms();
    let checked = if bytes.len() <= crate::INLINE_BODY_BYTES_MAX {
        let authentic = ingestor.is_authentic(&bytes, &signature);
        Ok((authentic, bytes))
    } else {
        let verifier = ingestor.clone();
        tokio::task::spawn_blocking(move || {
            let authentic = verifier.is_authentic(&bytes, &signature);
            (authentic, bytes)
        })
        .await
    };
    let bytes = match checked {
        Ok((true, bytes)) => bytes,
        Ok((false, _)) => {
            return ingestor.refuse(Reject::SignatureMismatch, StatusCode::UNAUTHORIZED)
        }
        Err(error) => {
            tracing::error!(message = "signature check failed", %error);
            ingestor.metrics.outcome(Outcome::StoreFailed);
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    match ingestor.deliver(bytes, receive_time_ms).await {
        Delivered::Published => {
            ingestor.metrics.outcome(Outcome::Published);
            StatusCode::OK.into_response()
        }
        Delivered::DeadLettered => {
            ingestor.metrics.outcome(Outcome::DeadLettered);
            StatusCode::OK.into_response()
        }
        Delivered::BusOverloaded => {
            ingestor.metrics.outcome(Outcome::BusOverloaded);
            ingestor.unavailable()
        }
        Delivered::BusFailed => {
            ingestor.metrics.outcome(Outcome::BusFailed);
            ingestor.unavailable()
        }
        Delivered::StoreFailed => {
            ingestor.metrics.outcome(Outcome::StoreFailed);
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

impl<B: Bus> Ingestor<B> {
    /// Counts, logs and answers a refusal.
    fn refuse(&self, reason: Reject, status: StatusCode) -> Response {
        self.metrics.reject(reason);
        tracing::warn!(
            message = "webhook request rejected",
            reason = reason.as_str(),
            status = status.as_u16()
        );
        if status == StatusCode::SERVICE_UNAVAILABLE {
            return self.unavailable();
        }
        status.into_response()
    }

    /// 503 with `Retry-After`.
    fn unavailable(&self) -> Response {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(RETRY_AFTER, HeaderValue::from(self.retry_after_s))],
        )
            .into_response()
    }

    /// True if `signature` is the HMAC-SHA256 of `body` under any
    /// configured app secret. Each comparison is constant-time.
    fn is_authentic(&self, body: &[u8], signature: &[u8; 32]) -> bool {
        self.secrets.iter().any(|secret| {
            <Hmac<Sha256> as Mac>::new_from_slice(secret)
                .map(|mut mac| {
                    mac.update(body);
                    mac.verify_slice(signature).is_ok()
                })
                .unwrap_or(false)
        })
    }
}

/// `sha256=<64 hex digits>` (either case) → the 32 bytes.
fn parse_signature(value: &HeaderValue) -> Option<[u8; 32]> {
    let text = value.to_str().ok()?.trim();
    let hex_digits = text.strip_prefix("sha256=")?;
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_digits, &mut out).ok()?;
    Some(out)
}

enum ReadFailure {
    TooLarge,
    Stream,
}

/// Reads the body as it streams, refusing it as soon as it passes `max`.
async fn read_body(mut body: Body, max: usize, hint: usize) -> Result<Vec<u8>, ReadFailure> {
    let mut out = Vec::with_capacity(hint);
    while let Some(frame) = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let frame = frame.map_err(|_| ReadFailure::Stream)?;
        if let Ok(data) = frame.into_data() {
            if out.len().saturating_add(data.len()) > max {
                return Err(ReadFailure::TooLarge);
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_parse_strictly() {
        let hex64 = "ab".repeat(32);
        let ok = HeaderValue::from_str(&format!("sha256={hex64}")).expect("header");
        assert_eq!(parse_signature(&ok), Some([0xab; 32]));
        let upper = HeaderValue::from_str(&format!("sha256={}", hex64.to_uppercase())).expect("h");
        assert_eq!(parse_signature(&upper), Some([0xab; 32]));
        for bad in [
            hex64.clone(),
            format!("sha1={hex64}"),
            format!("sha256={}", &hex64[..62]),
            format!("sha256={hex64}00"),
            "sha256=zz".to_owned(),
            String::new(),
        ] {
            let value = HeaderValue::from_str(&bad).expect("header");
            assert_eq!(parse_signature(&value), None, "{bad}");
        }
    }
}
