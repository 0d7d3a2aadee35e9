//! The OpenAPI description's request rules and error answers, built from the code that
//! enforces them, so the description cannot say something the server does not do.
//!
//! Field rules come from [`crate::domain::runbook`]: lengths from its `limits`, patterns from
//! its `patterns` (whose tests prove they accept exactly what the checks accept). utoipa's
//! attributes take only literals, so the fields point here with `schema_with`.
//!
//! Error answers come in groups, one per part of a handler that can fail before the handler's
//! own work: the bearer token ([`TokenErrors`]), the runbook number in the path
//! ([`NumberErrors`], with [`RunbookNumber`] as the parameter) and the JSON body
//! ([`BodyErrors`]). An operation lists the groups of the extractors it uses and the answers
//! of its own work; `tests/it/openapi.rs` sends every described operation the requests that make
//! each answer happen, and fails on an answer not listed or a listed one that never happens.

use std::collections::BTreeMap;

use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{
    ArrayBuilder, KnownFormat, ObjectBuilder, SchemaFormat, SchemaType, Type,
};
use utoipa::openapi::{
    ContentBuilder, HeaderBuilder, Object, RefOr, Required, Response, ResponseBuilder,
};
use utoipa::{IntoParams, IntoResponses, ToSchema};

use super::runbooks::RunbookNumber;
use crate::domain::StepNumber;
use crate::domain::runbook::{limits, patterns};
use crate::http::error::ErrorBody;
use crate::http::json::MAX_BODY_BYTES;

/// A string field: `null` allowed when the field is optional.
fn string(optional: bool, description: &str) -> ObjectBuilder {
    let kind = if optional {
        SchemaType::from_iter([Type::String, Type::Null])
    } else {
        SchemaType::Type(Type::String)
    };
    ObjectBuilder::new()
        .schema_type(kind)
        .description(Some(description))
}

fn example(builder: ObjectBuilder, value: &str) -> ObjectBuilder {
    builder.examples([serde_json::Value::from(value)])
}

pub(crate) fn org() -> Object {
    let schema = string(false, "GitHub organisation (or user) name.")
        .min_length(Some(1))
        .max_length(Some(limits::ORG_CHARS))
        .pattern(Some(patterns::org()));
    example(schema, "acme-corp").build()
}

pub(crate) fn repo() -> Object {
    let schema = string(false, "Repository name.")
        .min_length(Some(1))
        .max_length(Some(limits::REPO_CHARS))
        .pattern(Some(patterns::repo()));
    example(schema, "backend").build()
}

fn prompt(description: &str, example_text: &str) -> Object {
    let schema = string(false, description)
        .min_length(Some(1))
        .max_length(Some(limits::PROMPT_CHARS))
        .pattern(Some(patterns::not_blank()));
    example(schema, example_text).build()
}

pub(crate) fn create_prompt() -> Object {
    prompt(
        "Task description for the runbook; not blank.",
        "Upgrade all React dependencies to v19",
    )
}

pub(crate) fn follow_up_prompt() -> Object {
    prompt(
        "The follow-up instruction, run as new steps on the same branch and PRs; not blank.",
        "Also update the lock file",
    )
}

pub(crate) fn title() -> Object {
    let schema = string(
        true,
        "Title: one line, not blank; generated from the prompt when missing.",
    )
    .min_length(Some(1))
    .max_length(Some(limits::TITLE_CHARS))
    .pattern(Some(patterns::title()));
    example(schema, "React v19 upgrade").build()
}

pub(crate) fn target_branch() -> Object {
    let schema = string(
        true,
        "Base branch, a name git accepts (default: the repository's default branch).",
    )
    .min_length(Some(1))
    .max_length(Some(limits::BRANCH_CHARS))
    .pattern(Some(patterns::branch()));
    example(schema, "develop").build()
}

fn description_field(description: &str) -> Object {
    string(true, description)
        .max_length(Some(limits::DESCRIPTION_CHARS))
        .build()
}

pub(crate) fn create_description() -> Object {
    description_field("Text put first in the body of every PR the runbook opens (empty: none).")
}

pub(crate) fn follow_up_description() -> Object {
    description_field("Replaces the text put first in PR bodies (empty: none).")
}

fn labels(description: &str) -> utoipa::openapi::Array {
    let label = ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(
            "A label name: its surrounding whitespace is removed; what remains is not empty, \
             at most the stated length, without control characters.",
        ))
        .min_length(Some(1))
        .pattern(Some(patterns::label()));
    ArrayBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
        .items(label)
        .max_items(Some(limits::LABELS))
        .description(Some(description))
        .build()
}

pub(crate) fn create_labels() -> utoipa::openapi::Array {
    labels("Labels applied to every PR the runbook opens (de-duplicated, order kept).")
}

pub(crate) fn follow_up_labels() -> utoipa::openapi::Array {
    labels("Merged into the runbook's labels (never removes any).")
}

pub(crate) fn author_email() -> Object {
    let schema = string(
        true,
        "Who the runbook is attributed to in PR bodies and commit trailers: a plain e-mail \
         address.",
    )
    .max_length(Some(limits::EMAIL_CHARS))
    .pattern(Some(patterns::email()));
    example(schema, "dev@acme.example").build()
}

pub(crate) fn step() -> Object {
    let schema = string(
        true,
        "Run up to this step (all leaves under it when it is a parent, and every unfinished \
         step before it); the whole plan when missing. A step the plan does not have is a 409.",
    )
    .pattern(Some(StepNumber::pattern()));
    example(schema, "2").build()
}

/// The `{runbook_number}` path parameter: a positive whole number that fits in 64 bits;
/// anything else is a 400 ([`NumberErrors`]).
impl IntoParams for RunbookNumber {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let schema = ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
            .minimum(Some(1))
            .maximum(Some(i64::MAX));
        vec![
            ParameterBuilder::new()
                .name("runbook_number")
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .description(Some("The number identifying the runbook"))
                .schema(Some(schema))
                .build(),
        ]
    }
}

fn error(description: &str) -> ResponseBuilder {
    ResponseBuilder::new().description(description).content(
        "application/json",
        ContentBuilder::new()
            .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                ErrorBody::name(),
            ))))
            .build(),
    )
}

fn responses<const N: usize>(
    answers: [(u16, ResponseBuilder); N],
) -> BTreeMap<String, RefOr<Response>> {
    answers
        .into_iter()
        .map(|(status, response)| (status.to_string(), RefOr::T(response.build())))
        .collect()
}

/// What every endpoint behind a bearer token may answer besides its own results: the token's
/// check (401, with the challenge), the token's rate limit (429, with `Retry-After`), and a
/// database that fails while the token is looked up or the work is done (500).
pub struct TokenErrors;

impl IntoResponses for TokenErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let header = |description: &str, kind: Type| {
            let schema = match kind {
                Type::Integer => ObjectBuilder::new().schema_type(kind).minimum(Some(1)),
                kind => ObjectBuilder::new().schema_type(kind),
            };
            HeaderBuilder::new()
                .schema(schema)
                .description(Some(description))
                .build()
        };
        responses([
            (
                401,
                error("Missing, unknown or revoked token").header(
                    "WWW-Authenticate",
                    header("Always `Bearer realm=\"runbooks\"`", Type::String),
                ),
            ),
            (
                429,
                error("The token exceeded its rate limit (`RUNBOOKS_RATE_LIMIT`)").header(
                    "Retry-After",
                    header(
                        "Always sent: seconds to wait before trying again",
                        Type::Integer,
                    ),
                ),
            ),
            (
                500,
                error(
                    "An internal error, such as a database that does not answer (the cause \
                     is logged, not shown)",
                ),
            ),
        ])
    }
}

/// What an endpoint with `{runbook_number}` in its path answers for a number that is not a
/// positive whole number of 64 bits.
pub struct NumberErrors;

impl IntoResponses for NumberErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        responses([(
            400,
            error("The runbook number is not a positive whole number (the message says so)"),
        )])
    }
}

/// What an endpoint that reads a JSON body answers for a body it cannot take (see
/// [`super::json::JsonBody`]). Its 400 also covers a bad runbook number, for endpoints that
/// have both.
pub struct BodyErrors;

impl IntoResponses for BodyErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        responses([
            (
                400,
                error(
                    "Malformed JSON, or a missing, mistyped, unknown or invalid field, or a \
                     runbook number that is not a positive whole number (the message names it)",
                ),
            ),
            (
                413,
                error(&format!(
                    "The body is larger than {MAX_BODY_BYTES} bytes (fields within their \
                     limits can add up to more, e.g. written as \\u escapes)"
                )),
            ),
            (415, error("The body is not `application/json`")),
        ])
    }
}
