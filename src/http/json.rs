//! The JSON request body extractor: content type, size limit, and errors that name the field.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::header;
use serde::de::DeserializeOwned;

use super::ApiError;

/// Largest request body accepted (413 above).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// A JSON body, parsed with errors a caller can act on: 415 for another content type, 413
/// for a body over [`MAX_BODY_BYTES`], 400 naming the field for anything malformed, missing,
/// mistyped or unknown.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        parse(&read(req).await?).map(JsonBody)
    }
}

/// The body's bytes, once its content type and size are found acceptable.
async fn read(req: Request) -> Result<Bytes, ApiError> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence != "application/json" {
        return Err(ApiError::UnsupportedMediaType(if content_type.is_empty() {
            "the request body must be JSON: send `Content-Type: application/json`".into()
        } else {
            format!("the request body must be `application/json`, not `{content_type}`")
        }));
    }
    let too_large = ApiError::PayloadTooLarge {
        limit: MAX_BODY_BYTES,
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(too_large);
    }
    axum::body::to_bytes(req.into_body(), MAX_BODY_BYTES)
        .await
        .map_err(|e| {
            if std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
            {
                too_large
            } else {
                ApiError::BadRequest(format!("the request body could not be read: {e}"))
            }
        })
}

/// A JSON body that may also be absent: no body, an empty one, or JSON's `null` reads as
/// `T::default()` (the API's description gives the body as optional, and as the object or
/// `null`). A body that is there follows the same rules as [`JsonBody`].
pub struct OptionalJsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalJsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        let declared_empty = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() == "0");
        let chunked = req.headers().contains_key(header::TRANSFER_ENCODING);
        if declared_empty || (!chunked && !req.headers().contains_key(header::CONTENT_LENGTH)) {
            return Ok(OptionalJsonBody(T::default()));
        }
        let bytes = read(req).await?;
        if bytes.trim_ascii().is_empty() || bytes.trim_ascii() == b"null" {
            return Ok(OptionalJsonBody(T::default()));
        }
        parse(&bytes).map(OptionalJsonBody)
    }
}

/// Parses a JSON document into `T`, turning serde's errors into sentences that name the
/// field (`repository.org`, `labels[2]`) without serde's line and column noise.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        None => {
            return Err(ApiError::BadRequest(
                "the request body is empty: send a JSON object".into(),
            ));
        }
        // serde would also read a struct from an array; the API takes objects only.
        Some(b'{') => {}
        Some(_) => {
            return Err(ApiError::BadRequest(
                "the request body must be a JSON object".into(),
            ));
        }
    }
    // Syntax first, then shape: reading `T` straight from the bytes would report some type
    // errors (an integer where an enum's string belongs) as syntax errors without the field.
    let document: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::BadRequest(format!("the request body is not valid JSON: {e}")))?;
    let value = serde_path_to_error::deserialize(document).map_err(|e| {
        let path = e.path().to_string();
        ApiError::BadRequest(describe(&path, &e.into_inner().to_string()))
    })?;
    Ok(value)
}

fn describe(path: &str, message: &str) -> String {
    // serde_json appends " at line L column C"; the field name says more.
    let message = match message.rfind(" at line ") {
        Some(i) => &message[..i],
        None => message,
    };
    let join = |field: &str| {
        if path == "." || path.is_empty() {
            field.to_string()
        } else {
            format!("{path}.{field}")
        }
    };
    let quoted = |prefix: &str| {
        message
            .strip_prefix(prefix)
            .and_then(|rest| rest.split('`').next())
            .map(join)
    };
    if let Some(field) = quoted("missing field `") {
        format!("`{field}` is required")
    } else if message.starts_with("unknown field `") {
        // The path already ends with the unknown field's name.
        let expected = message
            .split_once(", expected ")
            .map(|(_, e)| format!("; expected {e}"))
            .unwrap_or_default();
        format!("`{path}` is not a known field{expected}")
    } else if path == "." || path.is_empty() {
        format!("the request body is invalid: {message}")
    } else {
        format!("`{path}` is invalid: {message}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        inner: Inner,
        flag: Option<bool>,
        list: Option<Vec<String>>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        name: String,
    }

    fn message(body: &str) -> String {
        match parse::<Outer>(body.as_bytes()) {
            Err(ApiError::BadRequest(m)) => m,
            other => panic!("expected a 400, got {other:?}"),
        }
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(message(r#"{"flag": true}"#), "`inner` is required");
        assert_eq!(message(r#"{"inner": {}}"#), "`inner.name` is required");
        assert!(
            message(r#"{"inner": {"name": "x"}, "flag": "yes"}"#).starts_with("`flag` is invalid")
        );
        assert!(
            message(r#"{"inner": {"name": "x"}, "list": ["a", 3]}"#)
                .starts_with("`list[1]` is invalid")
        );
        let m = message(r#"{"inner": {"name": "x"}, "bogus": 1}"#);
        assert!(m.starts_with("`bogus` is not a known field"), "{m}");
        assert!(message(r#"{"inner": "#).starts_with("the request body is not valid JSON"));
        assert!(message("[1]").starts_with("the request body must be a JSON object"));
        assert!(message("  ").contains("empty"));
    }
}
