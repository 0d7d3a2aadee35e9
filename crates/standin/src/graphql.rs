//! GitHub's GraphQL endpoint, for the only thing REST cannot do: turning a draft pull request
//! into one ready for review (`markPullRequestReadyForReview`), and back
//! (`convertPullRequestToDraft`), for a token holding `pull_requests: write`.
//!
//! A small parser for the GraphQL subset clients send for these mutations: named or anonymous
//! operations, variable definitions, aliases, arguments (inline literals, objects, lists or
//! variables), nested selections and `__typename`. Answers follow GitHub's shapes: `{"data"}`
//! on success; `{"errors"}` alone for documents that do not validate; `{"data": {field:
//! null}, "errors": [{"type": "NOT_FOUND", …}]}` for an unknown node id, and the same with
//! `"type": "FORBIDDEN"` and `Resource not accessible by integration` for a token without the
//! permission — all with HTTP 200.

use std::time::SystemTime;

use serde_json::{Map, Value, json};

use super::http::{ApiError, NOT_ACCESSIBLE, Reply, Req, graphql_field_need};
use super::state::{Access, Grant, Issue, Pull, Shared, State, node_id, timestamp};

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Name(String),
    Var(String),
    Str(String),
    Num(String),
    Punct(char),
    Spread,
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    line: usize,
    column: usize,
}

#[derive(Debug)]
struct ParseError {
    message: String,
    line: usize,
    column: usize,
}

fn tokenize(src: &str) -> Result<Vec<Token>, ParseError> {
    let chars: Vec<char> = src.chars().collect();
    let mut tokens = Vec::new();
    let (mut i, mut line, mut line_start) = (0, 1, 0);
    while i < chars.len() {
        let c = chars[i];
        let column = i - line_start + 1;
        let at = |tok| Token { tok, line, column };
        match c {
            '\n' => {
                i += 1;
                line += 1;
                line_start = i;
            }
            c if c.is_whitespace() || c == ',' || c == '\u{feff}' => i += 1,
            '#' => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '.' if chars[i..].starts_with(&['.', '.', '.']) => {
                tokens.push(at(Tok::Spread));
                i += 3;
            }
            '{' | '}' | '(' | ')' | ':' | '!' | '[' | ']' | '=' | '@' => {
                tokens.push(at(Tok::Punct(c)));
                i += 1;
            }
            '$' => {
                let start = i + 1;
                i = start;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                tokens.push(at(Tok::Var(chars[start..i].iter().collect())));
            }
            '"' => {
                if chars[i..].starts_with(&['"', '"', '"']) {
                    let start = i + 3;
                    let mut j = start;
                    while j < chars.len() && !chars[j..].starts_with(&['"', '"', '"']) {
                        j += 1;
                    }
                    if j >= chars.len() {
                        return Err(ParseError {
                            message: "Unterminated string".into(),
                            line,
                            column,
                        });
                    }
                    tokens.push(at(Tok::Str(chars[start..j].iter().collect())));
                    i = j + 3;
                    continue;
                }
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None | Some('\n') => {
                            return Err(ParseError {
                                message: "Unterminated string".into(),
                                line,
                                column,
                            });
                        }
                        Some('"') => {
                            i += 1;
                            break;
                        }
                        Some('\\') => {
                            let escaped = chars.get(i + 1).copied().unwrap_or('\\');
                            match escaped {
                                'n' => s.push('\n'),
                                't' => s.push('\t'),
                                'r' => s.push('\r'),
                                'u' => {
                                    let hex: String = chars.iter().skip(i + 2).take(4).collect();
                                    if let Some(ch) =
                                        u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32)
                                    {
                                        s.push(ch);
                                    }
                                    i += 4;
                                }
                                other => s.push(other),
                            }
                            i += 2;
                        }
                        Some(ch) => {
                            s.push(*ch);
                            i += 1;
                        }
                    }
                }
                tokens.push(at(Tok::Str(s)));
            }
            c if c.is_ascii_digit() || c == '-' => {
                let start = i;
                i += 1;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric()
                        || chars[i] == '.'
                        || chars[i] == '+'
                        || chars[i] == '-')
                {
                    i += 1;
                }
                tokens.push(at(Tok::Num(chars[start..i].iter().collect())));
            }
            c if c.is_alphabetic() || c == '_' => {
                let start = i;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                tokens.push(at(Tok::Name(chars[start..i].iter().collect())));
            }
            other => {
                return Err(ParseError {
                    message: format!("Parse error on \"{other}\""),
                    line,
                    column,
                });
            }
        }
    }
    Ok(tokens)
}

/// An argument value before variables are substituted.
#[derive(Debug, Clone)]
enum Val {
    Var(String),
    Lit(Value),
    List(Vec<Val>),
    Obj(Vec<(String, Val)>),
}

#[derive(Debug, Clone)]
struct Field {
    alias: Option<String>,
    name: String,
    args: Vec<(String, Val)>,
    selection: Vec<Field>,
    line: usize,
    column: usize,
}

impl Field {
    fn key(&self) -> &str {
        self.alias.as_deref().unwrap_or(&self.name)
    }

    fn location(&self) -> Value {
        json!([{"line": self.line, "column": self.column}])
    }
}

#[derive(Debug)]
struct Operation {
    kind: String,
    name: Option<String>,
    selection: Vec<Field>,
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.pos).map(|t| &t.tok)
    }

    fn error(&self, what: &str) -> ParseError {
        match self.tokens.get(self.pos) {
            Some(t) => ParseError {
                message: format!(
                    "Parse error on {:?} ({what}) at [{}, {}]",
                    describe(&t.tok),
                    t.line,
                    t.column
                ),
                line: t.line,
                column: t.column,
            },
            None => ParseError {
                message: format!("Parse error on end of input ({what})"),
                line: 1,
                column: 1,
            },
        }
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn expect(&mut self, c: char) -> Result<(), ParseError> {
        if self.peek() == Some(&Tok::Punct(c)) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.error(&format!("expected '{c}'")))
        }
    }

    fn name(&mut self) -> Result<(String, usize, usize), ParseError> {
        match self.tokens.get(self.pos).cloned() {
            Some(Token {
                tok: Tok::Name(n),
                line,
                column,
            }) => {
                self.pos += 1;
                Ok((n, line, column))
            }
            _ => Err(self.error("expected a name")),
        }
    }

    fn document(&mut self) -> Result<Vec<Operation>, ParseError> {
        let mut ops = Vec::new();
        while self.peek().is_some() {
            ops.push(self.operation()?);
        }
        if ops.is_empty() {
            return Err(self.error("empty document"));
        }
        Ok(ops)
    }

    fn operation(&mut self) -> Result<Operation, ParseError> {
        if self.peek() == Some(&Tok::Punct('{')) {
            return Ok(Operation {
                kind: "query".into(),
                name: None,
                selection: self.selection_set()?,
            });
        }
        let (kind, _, _) = self.name()?;
        if kind == "fragment" {
            return Err(self.error("fragments are not supported by the stand-in"));
        }
        if kind != "query" && kind != "mutation" && kind != "subscription" {
            self.pos -= 1;
            return Err(self.error("expected query or mutation"));
        }
        let name = match self.peek() {
            Some(Tok::Name(_)) => Some(self.name()?.0),
            _ => None,
        };
        if self.peek() == Some(&Tok::Punct('(')) {
            self.variable_definitions()?;
        }
        self.directives()?;
        Ok(Operation {
            kind,
            name,
            selection: self.selection_set()?,
        })
    }

    /// Variable definitions are only skipped: types are not checked.
    fn variable_definitions(&mut self) -> Result<(), ParseError> {
        self.expect('(')?;
        while self.peek() != Some(&Tok::Punct(')')) {
            match self.next() {
                Some(Token {
                    tok: Tok::Var(_), ..
                }) => {}
                _ => {
                    self.pos -= 1;
                    return Err(self.error("expected a variable"));
                }
            }
            self.expect(':')?;
            self.skip_type()?;
            if self.peek() == Some(&Tok::Punct('=')) {
                self.pos += 1;
                self.value()?;
            }
        }
        self.expect(')')
    }

    fn skip_type(&mut self) -> Result<(), ParseError> {
        if self.peek() == Some(&Tok::Punct('[')) {
            self.pos += 1;
            self.skip_type()?;
            self.expect(']')?;
        } else {
            self.name()?;
        }
        if self.peek() == Some(&Tok::Punct('!')) {
            self.pos += 1;
        }
        Ok(())
    }

    fn directives(&mut self) -> Result<(), ParseError> {
        while self.peek() == Some(&Tok::Punct('@')) {
            self.pos += 1;
            self.name()?;
            if self.peek() == Some(&Tok::Punct('(')) {
                self.arguments()?;
            }
        }
        Ok(())
    }

    fn selection_set(&mut self) -> Result<Vec<Field>, ParseError> {
        self.expect('{')?;
        let mut fields = Vec::new();
        while self.peek() != Some(&Tok::Punct('}')) {
            if self.peek().is_none() {
                return Err(self.error("unterminated selection"));
            }
            if self.peek() == Some(&Tok::Spread) {
                return Err(self.error("fragments are not supported by the stand-in"));
            }
            fields.push(self.field()?);
        }
        self.expect('}')?;
        Ok(fields)
    }

    fn field(&mut self) -> Result<Field, ParseError> {
        let (first, line, column) = self.name()?;
        let (alias, name) = if self.peek() == Some(&Tok::Punct(':')) {
            self.pos += 1;
            (Some(first), self.name()?.0)
        } else {
            (None, first)
        };
        let args = if self.peek() == Some(&Tok::Punct('(')) {
            self.arguments()?
        } else {
            Vec::new()
        };
        self.directives()?;
        let selection = if self.peek() == Some(&Tok::Punct('{')) {
            self.selection_set()?
        } else {
            Vec::new()
        };
        Ok(Field {
            alias,
            name,
            args,
            selection,
            line,
            column,
        })
    }

    fn arguments(&mut self) -> Result<Vec<(String, Val)>, ParseError> {
        self.expect('(')?;
        let mut args = Vec::new();
        while self.peek() != Some(&Tok::Punct(')')) {
            let (name, _, _) = self.name()?;
            self.expect(':')?;
            args.push((name, self.value()?));
        }
        self.expect(')')?;
        Ok(args)
    }

    fn value(&mut self) -> Result<Val, ParseError> {
        let Some(token) = self.next() else {
            return Err(self.error("expected a value"));
        };
        Ok(match token.tok {
            Tok::Var(v) => Val::Var(v),
            Tok::Str(s) => Val::Lit(Value::String(s)),
            Tok::Num(n) => Val::Lit(serde_json::from_str::<Value>(&n).unwrap_or(Value::String(n))),
            Tok::Name(n) => Val::Lit(match n.as_str() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                "null" => Value::Null,
                _ => Value::String(n),
            }),
            Tok::Punct('[') => {
                let mut items = Vec::new();
                while self.peek() != Some(&Tok::Punct(']')) {
                    if self.peek().is_none() {
                        return Err(self.error("unterminated list"));
                    }
                    items.push(self.value()?);
                }
                self.pos += 1;
                Val::List(items)
            }
            Tok::Punct('{') => {
                let mut fields = Vec::new();
                while self.peek() != Some(&Tok::Punct('}')) {
                    let (name, _, _) = self.name()?;
                    self.expect(':')?;
                    fields.push((name, self.value()?));
                }
                self.pos += 1;
                Val::Obj(fields)
            }
            _ => {
                self.pos -= 1;
                return Err(self.error("expected a value"));
            }
        })
    }
}

fn describe(tok: &Tok) -> String {
    match tok {
        Tok::Name(n) => n.clone(),
        Tok::Var(v) => format!("${v}"),
        Tok::Str(s) => format!("\"{s}\""),
        Tok::Num(n) => n.clone(),
        Tok::Punct(c) => c.to_string(),
        Tok::Spread => "...".into(),
    }
}

fn resolve(val: &Val, variables: &Map<String, Value>) -> Value {
    match val {
        Val::Var(v) => variables.get(v).cloned().unwrap_or(Value::Null),
        Val::Lit(v) => v.clone(),
        Val::List(items) => Value::Array(items.iter().map(|v| resolve(v, variables)).collect()),
        Val::Obj(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| (k.clone(), resolve(v, variables)))
                .collect(),
        ),
    }
}

/// The two mutations the stand-in knows, and what they set `isDraft` to.
fn mutation(name: &str) -> Option<(bool, &'static str)> {
    match name {
        "markPullRequestReadyForReview" => Some((false, "MarkPullRequestReadyForReviewPayload")),
        "convertPullRequestToDraft" => Some((true, "ConvertPullRequestToDraftPayload")),
        _ => None,
    }
}

/// The GraphQL view of a pull request (a typed object tree; `__typename` on every object).
fn pull_object(api_url: &str, owner: &str, repo: &str, issue: &Issue, pull: &Pull) -> Value {
    let url = format!("{api_url}/{owner}/{repo}/pull/{}", issue.number);
    let state = if pull.merged {
        "MERGED"
    } else if issue.open {
        "OPEN"
    } else {
        "CLOSED"
    };
    json!({
        "__typename": "PullRequest",
        "id": node_id("PR", pull.id),
        "databaseId": pull.id,
        "number": issue.number,
        "title": issue.title,
        "body": issue.body.clone().unwrap_or_default(),
        "isDraft": pull.draft,
        "state": state,
        "closed": !issue.open,
        "merged": pull.merged,
        "url": url,
        "permalink": url,
        "headRefName": pull.head_ref,
        "headRefOid": pull.head_sha,
        "baseRefName": pull.base_ref,
        "baseRefOid": pull.base_sha,
        "createdAt": timestamp(issue.created_at),
        "updatedAt": timestamp(issue.updated_at),
        // GraphQL names bots by their slug, without REST's `[bot]` suffix.
        "author": match issue.author.strip_suffix("[bot]") {
            Some(slug) => json!({"__typename": "Bot", "login": slug}),
            None => json!({"__typename": "User", "login": issue.author}),
        },
        "repository": {
            "__typename": "Repository",
            "name": repo,
            "nameWithOwner": format!("{owner}/{repo}"),
        },
    })
}

/// Selects `selection` out of `value`; unknown fields are reported in `errors`.
fn project(value: &Value, selection: &[Field], path: &[String], errors: &mut Vec<Value>) -> Value {
    let type_name = value
        .get("__typename")
        .and_then(Value::as_str)
        .unwrap_or("Object")
        .to_string();
    let mut out = Map::new();
    for field in selection {
        let mut field_path = path.to_vec();
        field_path.push(field.key().to_string());
        let Some(found) = value.get(&field.name) else {
            errors.push(json!({
                "path": field_path,
                "extensions": {"code": "undefinedField", "typeName": type_name, "fieldName": field.name},
                "locations": field.location(),
                "message": format!("Field '{}' doesn't exist on type '{type_name}'", field.name),
            }));
            continue;
        };
        let projected = match found {
            Value::Object(_) if field.selection.is_empty() => {
                errors.push(json!({
                    "path": field_path,
                    "extensions": {"code": "selectionMismatch", "nodeName": field.name},
                    "locations": field.location(),
                    "message": format!("Field must have selections (field '{}' returns an object but has no selections.)", field.name),
                }));
                continue;
            }
            Value::Object(_) => project(found, &field.selection, &field_path, errors),
            other => other.clone(),
        };
        out.insert(field.key().to_string(), projected);
    }
    Value::Object(out)
}

fn graphql_error(message: String, line: usize, column: usize) -> Value {
    json!({"errors": [{"message": message, "locations": [{"line": line, "column": column}]}]})
}

pub(crate) fn serve(
    shared: &Shared,
    grant: &Grant,
    req: &Req,
    now: SystemTime,
) -> Result<Reply, ApiError> {
    let body = req.json()?;
    let Some(query) = body.get("query").and_then(Value::as_str) else {
        return Ok(Reply::ok(
            json!({"errors": [{"message": "A query attribute must be specified and must be a string."}]}),
        ));
    };
    let variables = body
        .get("variables")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let operations = match tokenize(query).and_then(|tokens| Parser { tokens, pos: 0 }.document()) {
        Ok(ops) => ops,
        Err(e) => return Ok(Reply::ok(graphql_error(e.message, e.line, e.column))),
    };
    let wanted = body.get("operationName").and_then(Value::as_str);
    let operation = match wanted {
        Some(name) => operations
            .iter()
            .find(|op| op.name.as_deref() == Some(name)),
        None if operations.len() == 1 => operations.first(),
        None => None,
    };
    let Some(operation) = operation else {
        return Ok(Reply::ok(
            json!({"errors": [{"message": "An operation name is required"}]}),
        ));
    };
    let root = if operation.kind == "mutation" {
        "Mutation"
    } else {
        "Query"
    };

    // Validation first, against a pull request of the right shape: GitHub answers a document
    // with unknown fields with errors only, and changes nothing.
    let mut errors = Vec::new();
    for field in &operation.selection {
        if field.name == "__typename" {
            continue;
        }
        let known = root == "Mutation" && mutation(&field.name).is_some();
        if !known {
            errors.push(json!({
                "path": [root.to_lowercase(), field.key()],
                "extensions": {"code": "undefinedField", "typeName": root, "fieldName": field.name},
                "locations": field.location(),
                "message": format!("Field '{}' doesn't exist on type '{root}'", field.name),
            }));
            continue;
        }
        if !field.args.iter().any(|(name, _)| name == "input") {
            errors.push(json!({
                "path": [root.to_lowercase(), field.key()],
                "extensions": {"code": "missingRequiredArguments", "className": "Field", "name": field.name, "arguments": "input"},
                "locations": field.location(),
                "message": format!("Field '{}' is missing required arguments: input", field.name),
            }));
            continue;
        }
        let sample = sample_payload(&shared.cfg.api_url, &field.name);
        project(
            &sample,
            &field.selection,
            &[field.key().to_string()],
            &mut errors,
        );
    }
    if !errors.is_empty() {
        return Ok(Reply::ok(json!({"errors": errors})));
    }

    let mut data = Map::new();
    let mut errors = Vec::new();
    let mut state = shared.lock();
    for field in &operation.selection {
        if field.name == "__typename" {
            data.insert(field.key().to_string(), json!(root));
            continue;
        }
        let Some((draft, payload_type)) = mutation(&field.name) else {
            continue;
        };
        let input = field
            .args
            .iter()
            .find(|(name, _)| name == "input")
            .map(|(_, v)| resolve(v, &variables))
            .unwrap_or(Value::Null);
        let Some(id) = input.get("pullRequestId").and_then(Value::as_str) else {
            errors.push(json!({
                "path": [field.key()],
                "extensions": {"code": "argumentLiteralsIncompatible", "typeName": "Field", "argumentName": "input"},
                "locations": field.location(),
                "message": format!("Argument 'input' on Field '{}' has an invalid value. Expected type '{}Input!'.", field.name, capitalize(&field.name)),
            }));
            data.insert(field.key().to_string(), Value::Null);
            continue;
        };
        let need = graphql_field_need(&field.name);
        match set_draft(&mut state, grant, need, id, draft, now, &shared.cfg.api_url) {
            Ok(pull) => {
                let payload = json!({
                    "__typename": payload_type,
                    "clientMutationId": input.get("clientMutationId").cloned().unwrap_or(Value::Null),
                    "pullRequest": pull,
                });
                let projected = project(
                    &payload,
                    &field.selection,
                    &[field.key().to_string()],
                    &mut errors,
                );
                data.insert(field.key().to_string(), projected);
            }
            Err(Refused::Forbidden) => {
                errors.push(json!({
                    "type": "FORBIDDEN",
                    "path": [field.key()],
                    "locations": field.location(),
                    "message": NOT_ACCESSIBLE,
                }));
                data.insert(field.key().to_string(), Value::Null);
            }
            Err(Refused::NotFound) => {
                errors.push(json!({
                    "type": "NOT_FOUND",
                    "path": [field.key()],
                    "locations": field.location(),
                    "message": format!("Could not resolve to a node with the global id of '{id}'."),
                }));
                data.insert(field.key().to_string(), Value::Null);
            }
        }
    }
    let mut answer = json!({"data": data});
    if !errors.is_empty() {
        answer["errors"] = Value::Array(errors);
    }
    Ok(Reply::ok(answer))
}

fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// A payload of the right shape for validating selections.
fn sample_payload(api_url: &str, mutation_name: &str) -> Value {
    let issue = Issue {
        number: 1,
        id: 1,
        title: String::new(),
        body: None,
        author: String::new(),
        open: true,
        state_reason: None,
        labels: Vec::new(),
        created_at: SystemTime::UNIX_EPOCH,
        updated_at: SystemTime::UNIX_EPOCH,
        closed_at: None,
        closed_by: None,
        pull: None,
    };
    let pull = Pull {
        id: 1,
        head_ref: String::new(),
        head_sha: String::new(),
        base_ref: String::new(),
        base_sha: String::new(),
        draft: false,
        merged: false,
        merged_at: None,
        merged_by: None,
        merge_commit_sha: None,
        maintainer_can_modify: true,
    };
    let payload_type = mutation(mutation_name).map_or("Object", |(_, t)| t);
    json!({
        "__typename": payload_type,
        "clientMutationId": null,
        "pullRequest": pull_object(api_url, "o", "r", &issue, &pull),
    })
}

/// Why a mutation did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    /// No pull request with that id among the repositories the token can see.
    NotFound,
    /// The token sees it but lacks the permission the mutation needs.
    Forbidden,
}

/// Finds the pull request with node id `id` among the repositories the grant can see and,
/// when the grant holds what the mutation needs, sets its draft flag and returns its GraphQL
/// object.
fn set_draft(
    state: &mut State,
    grant: &Grant,
    need: Option<(&'static str, Access)>,
    id: &str,
    draft: bool,
    now: SystemTime,
    api_url: &str,
) -> Result<Value, Refused> {
    let visible: Vec<(String, String)> = state
        .repos
        .values()
        .filter(|r| state.grant_sees(grant, &r.owner, &r.name))
        .map(|r| (r.owner.clone(), r.name.clone()))
        .collect();
    for (owner, name) in visible {
        let Some(repo) = state.repo_mut(&owner, &name) else {
            continue;
        };
        for issue in repo.issues.values_mut() {
            let Some(pull) = issue.pull.as_mut() else {
                continue;
            };
            if node_id("PR", pull.id) != id {
                continue;
            }
            if need.is_some_and(|(permission, access)| !grant.allows(permission, access)) {
                return Err(Refused::Forbidden);
            }
            if pull.draft != draft {
                pull.draft = draft;
                issue.updated_at = now;
            }
            let issue = issue.clone();
            let pull = issue.pull.clone().ok_or(Refused::NotFound)?;
            return Ok(pull_object(api_url, &owner, &name, &issue, &pull));
        }
    }
    Err(Refused::NotFound)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(src: &str) -> Vec<Operation> {
        let tokens = tokenize(src).expect("tokenizes");
        Parser { tokens, pos: 0 }.document().expect("parses")
    }

    #[test]
    fn parses_named_mutation_with_variables_and_aliases() {
        let ops = parse(
            r#"mutation Ready($id: ID!, $cid: String = "x") {
                 ready: markPullRequestReadyForReview(input: {pullRequestId: $id, clientMutationId: $cid}) {
                   pullRequest { isDraft number }  # trailing comment
                 }
               }"#,
        );
        assert_eq!(ops.len(), 1);
        let op = &ops[0];
        assert_eq!(op.kind, "mutation");
        assert_eq!(op.name.as_deref(), Some("Ready"));
        let field = &op.selection[0];
        assert_eq!(field.key(), "ready");
        assert_eq!(field.name, "markPullRequestReadyForReview");
        let mut vars = Map::new();
        vars.insert("id".into(), json!("PR_1"));
        let input = resolve(&field.args[0].1, &vars);
        assert_eq!(
            input,
            json!({"pullRequestId": "PR_1", "clientMutationId": null})
        );
        assert_eq!(field.selection[0].selection.len(), 2);
    }

    #[test]
    fn parses_inline_literals_and_anonymous_queries() {
        let ops = parse(r#"{ __typename }"#);
        assert_eq!(ops[0].kind, "query");
        let ops = parse(
            r#"mutation { convertPullRequestToDraft(input: {pullRequestId: "PR_kw\"x"}) { clientMutationId } }"#,
        );
        let input = resolve(&ops[0].selection[0].args[0].1, &Map::new());
        assert_eq!(input["pullRequestId"], "PR_kw\"x");
    }

    #[test]
    fn reports_parse_errors_with_a_location() {
        let tokens = tokenize("mutation { a(input: ) }").expect("tokenizes");
        let err = Parser { tokens, pos: 0 }
            .document()
            .expect_err("does not parse");
        assert_eq!((err.line, err.column), (1, 21));
    }
}
