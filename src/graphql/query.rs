//! Queries: one runbook, and a cursor connection over the runbooks the token may see.

use async_graphql::{Context, InputObject, Lookahead, Object};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::loaders::{Loaders, Needs};
use super::types::{PageInfo, Runbook, RunbookConnection, RunbookEdge, RunbookStatus};
use super::{OrGraphql, RequestContext};
use crate::domain::{self, RunbookNumber};
use crate::http::ApiError;
use crate::ops::RunbookQuery;

/// Largest page of `runbooks`.
pub const MAX_FIRST: i32 = 100;

/// Which runbooks to list. Every field narrows the listing; the token's organisations
/// always apply.
#[derive(InputObject, Debug, Clone, Default)]
#[graphql(name = "RunbookFilter")]
pub struct RunbookFilterInput {
    /// Only this organisation (without regard to case).
    pub org: Option<String>,
    /// Only repositories of this name (within `org` when given).
    pub repository: Option<String>,
    /// Only runbooks whose status is this, now.
    pub status: Option<RunbookStatus>,
}

pub struct QueryRoot;

#[Object(name = "Query")]
impl QueryRoot {
    /// A runbook by number; null when there is none, or the token may not see it.
    async fn runbook(
        &self,
        ctx: &Context<'_>,
        number: i64,
    ) -> async_graphql::Result<Option<Runbook>> {
        let request = ctx.data_unchecked::<RequestContext>();
        let loaders = ctx.data_unchecked::<Loaders>();
        let number = check_number(number).or_graphql()?;
        let runbook = visible(request, number).await.or_graphql()?;
        if runbook.is_some() {
            let needs = needs(&[ctx.look_ahead()]);
            loaders.prime(&[number], needs).await.or_graphql()?;
        }
        Ok(runbook)
    }

    /// The runbooks the token may see, newest first, a page at a time: `first` runbooks
    /// (1 to 100) after the cursor `after` (a `cursor` or `pageInfo.endCursor` of an
    /// earlier page).
    #[graphql(complexity = "first.clamp(1, MAX_FIRST) as usize * child_complexity + 1")]
    async fn runbooks(
        &self,
        ctx: &Context<'_>,
        filter: Option<RunbookFilterInput>,
        #[graphql(default = 20)] first: i32,
        after: Option<String>,
    ) -> async_graphql::Result<RunbookConnection> {
        let request = ctx.data_unchecked::<RequestContext>();
        let loaders = ctx.data_unchecked::<Loaders>();
        let look = ctx.look_ahead();
        let needs = needs(&[look.field("nodes"), look.field("edges").field("node")]);
        list(
            request,
            loaders,
            filter.unwrap_or_default(),
            first,
            after,
            needs,
        )
        .await
        .or_graphql()
    }
}

/// Checks a runbook number argument: a positive whole number, as in REST paths.
pub(crate) fn check_number(number: i64) -> Result<RunbookNumber, ApiError> {
    RunbookNumber::try_from(number).map_err(|_| {
        ApiError::BadRequest(format!(
            "`number` must be a positive whole number, not `{number}`"
        ))
    })
}

/// The runbook, when it exists and the caller may see it.
pub(crate) async fn visible(
    request: &RequestContext,
    number: RunbookNumber,
) -> Result<Option<Runbook>, ApiError> {
    Ok(request
        .state
        .store()
        .runbook(number)
        .await?
        .filter(|r| request.caller.actor().may_act_for(&r.org, &r.repo))
        .map(Runbook::new))
}

/// Which batched reads a selection of runbooks will need.
fn needs(runbooks: &[Lookahead<'_>]) -> Needs {
    let any = |names: &[&str]| {
        runbooks
            .iter()
            .any(|r| names.iter().any(|name| r.field(name).exists()))
    };
    Needs {
        steps: any(&["steps", "status", "stepCounts"]),
        pulls: any(&["pullRequests"]),
        threads: any(&["thread"]),
    }
}

pub fn encode_cursor(number: RunbookNumber) -> String {
    URL_SAFE_NO_PAD.encode(format!("runbook:{number}"))
}

pub fn decode_cursor(cursor: &str) -> Result<RunbookNumber, ApiError> {
    URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| text.strip_prefix("runbook:")?.parse::<i64>().ok())
        .and_then(|n| RunbookNumber::try_from(n).ok())
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "`after` is not a cursor this API gave out: `{cursor}` (use an edge's `cursor` \
                 or `pageInfo.endCursor`)"
            ))
        })
}

async fn list(
    request: &RequestContext,
    loaders: &Loaders,
    filter: RunbookFilterInput,
    first: i32,
    after: Option<String>,
    needs: Needs,
) -> Result<RunbookConnection, ApiError> {
    if !(1..=MAX_FIRST).contains(&first) {
        return Err(ApiError::BadRequest(format!(
            "`first` must be between 1 and {MAX_FIRST}, not {first}"
        )));
    }
    let first = first as usize;
    let before = after.as_deref().map(decode_cursor).transpose()?;
    let query = RunbookQuery {
        org: filter.org.filter(|o| !o.is_empty()),
        repository: filter.repository.filter(|r| !r.is_empty()),
        status: filter.status.map(domain::RunbookStatus::from),
        before,
        first,
    };
    let page = request
        .state
        .app
        .list(request.caller.actor(), &query)
        .await?;
    let has_next_page = page.next_before.is_some();
    let mut rows = Vec::with_capacity(page.runbooks.len());
    let mut read = Vec::with_capacity(page.runbooks.len());
    for listed in page.runbooks {
        read.push((listed.record.number, listed.steps));
        rows.push(listed.record);
    }
    // The steps were read to compute the statuses: the fields asking for them use those.
    loaders.feed_steps(read).await;
    let numbers: Vec<RunbookNumber> = rows.iter().map(|r| r.number).collect();
    loaders.prime(&numbers, needs).await?;
    let edges: Vec<RunbookEdge> = rows
        .into_iter()
        .map(|record| RunbookEdge {
            cursor: encode_cursor(record.number),
            node: Runbook::new(record),
        })
        .collect();
    let end_cursor = page
        .next_before
        .map(encode_cursor)
        .or_else(|| edges.last().map(|e| e.cursor.clone()));
    Ok(RunbookConnection {
        nodes: edges.iter().map(|e| e.node.clone()).collect(),
        page_info: PageInfo {
            has_next_page,
            has_previous_page: before.is_some(),
            start_cursor: edges.first().map(|e| e.cursor.clone()),
            end_cursor,
        },
        edges,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_bad_ones_are_refused() {
        for n in [1, 7, 123_456_789] {
            let n = RunbookNumber::try_from(n).unwrap();
            assert_eq!(decode_cursor(&encode_cursor(n)).unwrap(), n);
        }
        for bad in ["", "7", "cnVuYm9vazow", "!!", "cnVuYm9vazp4"] {
            assert!(decode_cursor(bad).is_err(), "{bad}");
        }
    }
}
