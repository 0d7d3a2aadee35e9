//! `POST /webhooks/github`: verify, persist, acknowledge; handling happens in the background.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::json;

use crate::github::webhook::{MAX_PAYLOAD_BYTES, signature_is_valid};
use crate::http::{ApiError, AppState};
use crate::store::DeliveryRecord;

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Whether a header could be a signature at all: `sha256=` and 64 hex digits.
fn signature_shaped(value: &str) -> bool {
    value
        .trim()
        .strip_prefix("sha256=")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Receives a GitHub webhook delivery.
///
/// A request without a signature (or when no secret is configured, so none can match) is
/// refused before a byte of its body is read; otherwise the signature is checked over the raw
/// bytes before anything is parsed. A delivery is stored before it is answered, and a
/// redelivery (same `X-GitHub-Delivery`) changes nothing. GitHub gives up after 10 s, so the
/// answer never waits for the handling.
pub async fn receive(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let bad_signature = || {
        ApiError::BadSignature(
            "the X-Hub-Signature-256 header is missing or does not match the payload".into(),
        )
    };
    if state.webhook_secrets.is_empty()
        || !header(&headers, "x-hub-signature-256").is_some_and(signature_shaped)
    {
        return Err(bad_signature());
    }
    if header(&headers, "content-length")
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > MAX_PAYLOAD_BYTES as u64)
    {
        return Err(ApiError::PayloadTooLarge {
            limit: MAX_PAYLOAD_BYTES,
        });
    }
    let bytes = axum::body::to_bytes(body, MAX_PAYLOAD_BYTES)
        .await
        .map_err(|_| ApiError::PayloadTooLarge {
            limit: MAX_PAYLOAD_BYTES,
        })?;
    if !signature_is_valid(
        &state.webhook_secrets,
        &bytes,
        header(&headers, "x-hub-signature-256"),
    ) {
        return Err(bad_signature());
    }
    let event = header(&headers, "x-github-event")
        .filter(|e| !e.is_empty())
        .ok_or_else(|| ApiError::BadRequest("the X-GitHub-Event header is missing".into()))?;
    let delivery_id = header(&headers, "x-github-delivery")
        .filter(|d| !d.is_empty() && d.len() <= 128)
        .ok_or_else(|| {
            ApiError::BadRequest("the X-GitHub-Delivery header is missing or invalid".into())
        })?;
    let payload: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::BadRequest(format!("the payload is not JSON: {e}")))?;
    let delivery = DeliveryRecord {
        delivery_id: delivery_id.to_string(),
        event: event.to_string(),
        action: payload
            .get("action")
            .and_then(|a| a.as_str())
            .map(String::from),
        payload: String::from_utf8_lossy(&bytes).into_owned(),
    };
    if !state.store().record_delivery(&delivery).await? {
        return Ok((
            StatusCode::OK,
            Json(json!({"message": "delivery already received; ignored"})),
        ));
    }
    state.intake.notify();
    if event == "ping" {
        return Ok((StatusCode::OK, Json(json!({"message": "pong"}))));
    }
    Ok((StatusCode::ACCEPTED, Json(json!({"message": "accepted"}))))
}
