//! A runbook as the API accepts it: validated fields, defaults and follow-ups.
//!
//! Every check here is pure and names the field it rejects, so the API can answer a 400 that
//! tells the caller exactly what to fix. The same rules are written out as JSON Schema
//! patterns in [`patterns`], for the API's description: the checks decide, the patterns say
//! the same thing to clients, and the tests prove the two agree string for string.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Limits on what a request may carry. GitHub's own limits are the reason for most of them:
/// a PR title is at most 256 characters, a label name at most 50, a PR body at most 65,536
/// characters (the description shares the body with the step checklist). Lengths are counted
/// in characters (Unicode scalar values), as JSON Schema's `maxLength` counts them, so the
/// API's description can state every limit exactly.
pub mod limits {
    pub const PROMPT_CHARS: usize = 100 * 1024;
    pub const TITLE_CHARS: usize = 256;
    pub const DESCRIPTION_CHARS: usize = 16 * 1024;
    pub const LABELS: usize = 100;
    pub const LABEL_CHARS: usize = 50;
    pub const EMAIL_CHARS: usize = 254;
    pub const BRANCH_CHARS: usize = 255;
    pub const ORG_CHARS: usize = 39;
    pub const REPO_CHARS: usize = 100;
    /// Length of a title generated from the prompt.
    pub const GENERATED_TITLE_CHARS: usize = 72;
}

/// How a runbook opens pull requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PrMode {
    /// Commit and push to one branch; open a PR only when asked.
    Manual,
    /// One branch, one PR into the target branch.
    SinglePr,
    /// One branch and one PR per top-level step, each based on the previous one.
    StackedPr,
}

impl PrMode {
    pub fn as_str(self) -> &'static str {
        match self {
            PrMode::Manual => "manual",
            PrMode::SinglePr => "single_pr",
            PrMode::StackedPr => "stacked_pr",
        }
    }
}

impl fmt::Display for PrMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PrMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [PrMode::Manual, PrMode::SinglePr, PrMode::StackedPr]
            .into_iter()
            .find(|mode| mode.as_str() == s)
            .ok_or_else(|| format!("unknown pr_mode `{s}`"))
    }
}

/// A runbook's number: a positive whole number of 64 bits, written in decimal digits only
/// (no sign, no spaces). Parsed here once for every front door, which says what is wrong in
/// its own words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RunbookNumber(i64);

/// Not a runbook number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a runbook number is a positive whole number")]
pub struct NotARunbookNumber;

impl RunbookNumber {
    pub fn get(self) -> i64 {
        self.0
    }
}

impl std::str::FromStr for RunbookNumber {
    type Err = NotARunbookNumber;

    fn from_str(raw: &str) -> Result<Self, NotARunbookNumber> {
        if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
            return Err(NotARunbookNumber);
        }
        raw.parse::<i64>()
            .map_err(|_| NotARunbookNumber)
            .and_then(Self::try_from)
    }
}

impl TryFrom<i64> for RunbookNumber {
    type Error = NotARunbookNumber;

    fn try_from(number: i64) -> Result<Self, NotARunbookNumber> {
        if number > 0 {
            Ok(Self(number))
        } else {
            Err(NotARunbookNumber)
        }
    }
}

impl std::fmt::Display for RunbookNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Where a rejected value sits in a request: a path of field names and list positions, in
/// the domain's own names (snake case, the REST API's). Each front door renders it in its own
/// style: REST as written (`repository.org`, `labels[2]`), GraphQL under its argument in
/// camel case (`input.targetBranch`), a comment or the CLI by a single name (`--target`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPath(Vec<Segment>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Name(String),
    Index(usize),
}

impl FieldPath {
    /// The path of a list's item.
    pub fn index(mut self, i: usize) -> Self {
        self.0.push(Segment::Index(i));
        self
    }

    /// The path in camel case (`target_branch` → `targetBranch`): GraphQL's style.
    pub fn camel_case(&self) -> String {
        let camel = |name: &str| {
            let mut out = String::with_capacity(name.len());
            let mut upper = false;
            for c in name.chars() {
                match c {
                    '_' => upper = true,
                    c if upper => {
                        out.extend(c.to_uppercase());
                        upper = false;
                    }
                    c => out.push(c),
                }
            }
            out
        };
        let mut out = String::new();
        for segment in &self.0 {
            match segment {
                Segment::Name(name) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(&camel(name));
                }
                Segment::Index(i) => out.push_str(&format!("[{i}]")),
            }
        }
        out
    }
}

/// `repository.org`: names joined with dots.
impl From<&str> for FieldPath {
    fn from(path: &str) -> Self {
        Self(
            path.split('.')
                .map(|name| Segment::Name(name.to_string()))
                .collect(),
        )
    }
}

/// The domain's (and REST's) spelling: `repository.org`, `labels[2]`.
impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Name(name) if i == 0 => f.write_str(name)?,
                Segment::Name(name) => write!(f, ".{name}")?,
                Segment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// A request field that was rejected, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}` {problem}")]
pub struct FieldError {
    /// Where the field is in the request.
    pub field: FieldPath,
    pub problem: String,
}

impl FieldError {
    pub fn new(field: impl Into<FieldPath>, problem: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            problem: problem.into(),
        }
    }

    /// The message with the field named in GraphQL's style, under the argument `root`.
    pub fn camel_case(&self, root: &str) -> String {
        format!("`{root}.{}` {}", self.field.camel_case(), self.problem)
    }
}

type Checked<T> = Result<T, FieldError>;

/// A GitHub organisation or user login: letters, digits, `-` and `_` (GitHub Enterprise
/// Server allows underscores), starting with a letter or digit.
pub fn check_org(field: &str, org: &str) -> Checked<()> {
    let valid = !org.is_empty()
        && org.chars().count() <= limits::ORG_CHARS
        && org.starts_with(|c: char| c.is_ascii_alphanumeric())
        && org
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if valid {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!(
                "must be a GitHub organisation name: 1 to {} letters, digits, `-` or `_`, starting with a letter or digit",
                limits::ORG_CHARS
            ),
        ))
    }
}

/// A GitHub repository name: letters, digits, `.`, `-` and `_`, not `.` or `..`.
pub fn check_repo(field: &str, name: &str) -> Checked<()> {
    let valid = !name.is_empty()
        && name.chars().count() <= limits::REPO_CHARS
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if valid {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!(
                "must be a GitHub repository name: 1 to {} letters, digits, `.`, `-` or `_`",
                limits::REPO_CHARS
            ),
        ))
    }
}

/// A branch name git accepts (the rules of `git check-ref-format --branch`).
pub fn check_branch(field: &str, branch: &str) -> Checked<()> {
    let problem = if branch.is_empty() {
        Some("must not be empty")
    } else if branch.chars().count() > limits::BRANCH_CHARS {
        Some("is too long (at most 255 characters)")
    } else if branch.starts_with('-') {
        Some("must not start with `-`")
    } else if branch == "@" || branch.contains("@{") {
        Some("must not be `@` or contain `@{`")
    } else if branch.contains("..") || branch.contains("//") {
        Some("must not contain `..` or `//`")
    } else if branch.starts_with('/') || branch.ends_with('/') || branch.ends_with('.') {
        Some("must not start or end with `/` or end with `.`")
    } else if branch
        .chars()
        .any(|c| c.is_control() || c == ' ' || "~^:?*[\\".contains(c))
    {
        Some("must not contain spaces, control characters or any of ~ ^ : ? * [ \\")
    } else if branch
        .split('/')
        .any(|part| part.starts_with('.') || part.ends_with(".lock"))
    {
        Some("must not have a part that starts with `.` or ends with `.lock`")
    } else {
        None
    };
    match problem {
        Some(problem) => Err(FieldError::new(
            field,
            format!("is not a valid branch name: it {problem}"),
        )),
        None => Ok(()),
    }
}

/// A required text: not blank and at most `max_chars` characters.
pub fn check_text(field: &str, text: &str, max_chars: usize) -> Checked<()> {
    if text.trim().is_empty() {
        Err(FieldError::new(field, "must not be empty"))
    } else {
        check_chars(field, text, max_chars)
    }
}

fn check_chars(field: impl Into<FieldPath>, text: &str, max_chars: usize) -> Checked<()> {
    let chars = text.chars().count();
    if chars > max_chars {
        Err(FieldError::new(
            field,
            format!("is too long ({chars} characters; at most {max_chars})"),
        ))
    } else {
        Ok(())
    }
}

/// A title: one line, not blank, at most 256 characters (GitHub's PR title limit).
pub fn check_title(field: &str, title: &str) -> Checked<()> {
    if title.trim().is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    if title.contains(['\n', '\r']) {
        return Err(FieldError::new(field, "must be a single line"));
    }
    check_chars(field, title, limits::TITLE_CHARS)
}

/// Text put before the generated part of every PR body; may be empty (no prefix).
pub fn check_description(field: &str, description: &str) -> Checked<()> {
    check_chars(field, description, limits::DESCRIPTION_CHARS)
}

/// A plain e-mail address as it may appear in a commit trailer.
pub fn check_email(field: &str, email: &str) -> Checked<()> {
    let valid = email.chars().count() <= limits::EMAIL_CHARS
        && match email.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && !domain.is_empty()
                    && !domain.contains('@')
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
            }
            None => false,
        }
        && !email
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "<>,;\"".contains(c));
    if valid {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            "must be a plain e-mail address like `dev@example.com`",
        ))
    }
}

/// Checks label names and removes duplicates (GitHub compares label names without regard
/// to case), keeping the first spelling and the order given.
pub fn normalize_labels(field: &str, labels: &[String]) -> Checked<Vec<String>> {
    if labels.len() > limits::LABELS {
        return Err(FieldError::new(
            field,
            format!("has {} labels; at most {}", labels.len(), limits::LABELS),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(labels.len());
    for (i, label) in labels.iter().enumerate() {
        let item = FieldPath::from(field).index(i);
        let label = label.trim();
        if label.is_empty() {
            return Err(FieldError::new(item, "must not be empty"));
        }
        if label.chars().any(char::is_control) {
            return Err(FieldError::new(item, "must not contain control characters"));
        }
        check_chars(item, label, limits::LABEL_CHARS)?;
        if !out.iter().any(|seen| seen.eq_ignore_ascii_case(label)) {
            out.push(label.to_string());
        }
    }
    Ok(out)
}

/// Merges follow-up labels into the stored ones: never removes, keeps order, no duplicates.
pub fn merge_labels(stored: &[String], added: &[String]) -> Vec<String> {
    let mut out = stored.to_vec();
    for label in added {
        if !out.iter().any(|seen| seen.eq_ignore_ascii_case(label)) {
            out.push(label.clone());
        }
    }
    out
}

/// A title generated from the prompt: its first line of prose (Markdown heading marks and
/// list bullets removed), shortened at a word boundary.
pub fn title_from_prompt(prompt: &str) -> String {
    let line = prompt
        .lines()
        .map(|line| {
            line.trim()
                .trim_start_matches('#')
                .trim_start_matches(['-', '*', '>'])
                .trim()
        })
        // The template's section heading says nothing about the task; a step heading
        // (`Step 1: Rename the helper`) names the first thing it does.
        .filter(|line| !line.eq_ignore_ascii_case("execution steps"))
        .map(|line| match line.split_once(':') {
            Some((head, rest)) if is_step_label(head) && !rest.trim().is_empty() => rest.trim(),
            _ => line,
        })
        .find(|line| !line.is_empty() && !line.starts_with("```"))
        .unwrap_or("Runbook");
    shorten(line, limits::GENERATED_TITLE_CHARS)
}

/// `Step 1` or `1.2`: the label of a step heading in the runbook template.
fn is_step_label(head: &str) -> bool {
    let number = head.trim().strip_prefix("Step ").unwrap_or(head.trim());
    !number.is_empty() && number.chars().all(|c| c.is_ascii_digit() || c == '.')
}

fn shorten(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        return text.to_string();
    }
    let cut: String = text.chars().take(max_chars - 1).collect();
    let cut = match cut.rfind(' ') {
        Some(space) if space > max_chars / 2 => &cut[..space],
        _ => &cut,
    };
    format!("{}…", cut.trim_end_matches([' ', ',', ';', ':', '.']))
}

/// The checks above as regular expressions, for the `pattern`s of the API's JSON Schemas.
///
/// The checks decide what is accepted; these patterns say the same thing to clients and to
/// tools that generate requests from the API's description, and the tests below prove that
/// each one matches exactly the strings its check accepts. They keep to what ECMA-262 (JSON
/// Schema's dialect), Python's `re` and Rust's regex engines all read the same way: explicit
/// character classes (never `\s`, `\d`, `\w` or `.`, whose meanings differ between them),
/// `\xHH` and `\uHHHH` escapes, lookaheads, and no flags. Lengths are not in the patterns:
/// they are `maxLength`, from [`limits`].
pub mod patterns {
    use super::limits;

    /// What Rust's `char::is_whitespace` (Unicode's White_Space) takes for space, which
    /// `str::trim` removes: a field is blank when it holds nothing else.
    const WHITESPACE: &[(char, char)] = &[
        ('\t', '\r'),
        (' ', ' '),
        ('\u{85}', '\u{85}'),
        ('\u{a0}', '\u{a0}'),
        ('\u{1680}', '\u{1680}'),
        ('\u{2000}', '\u{200a}'),
        ('\u{2028}', '\u{2029}'),
        ('\u{202f}', '\u{202f}'),
        ('\u{205f}', '\u{205f}'),
        ('\u{3000}', '\u{3000}'),
    ];

    /// What Rust's `char::is_control` takes for a control character (Unicode's Cc).
    const CONTROL: &[(char, char)] = &[('\0', '\u{1f}'), ('\u{7f}', '\u{9f}')];

    fn escape(c: char) -> String {
        match u32::from(c) {
            n @ 0..=0xff => format!("\\x{n:02x}"),
            n => format!("\\u{n:04x}"),
        }
    }

    /// The inside of a character class holding `ranges`.
    fn class(ranges: &[(char, char)]) -> String {
        ranges
            .iter()
            .map(|&(from, to)| match from == to {
                true => escape(from),
                false => format!("{}-{}", escape(from), escape(to)),
            })
            .collect()
    }

    /// The whitespace class (`true`) or the control class (`false`), for the tests.
    #[cfg(test)]
    pub(super) fn class_for_tests(whitespace: bool) -> String {
        class(if whitespace { WHITESPACE } else { CONTROL })
    }

    /// `repository.org`: see [`super::check_org`].
    pub fn org() -> String {
        "^[A-Za-z0-9][A-Za-z0-9_-]*$".into()
    }

    /// `repository.name`: see [`super::check_repo`].
    pub fn repo() -> String {
        r"^(?!\.\.?$)[A-Za-z0-9._-]+$".into()
    }

    /// A text that is not blank (`prompt`): it holds one character that is not whitespace.
    /// See [`super::check_text`].
    pub fn not_blank() -> String {
        format!("[^{}]", class(WHITESPACE))
    }

    /// `title`: one line, not blank. See [`super::check_title`].
    pub fn title() -> String {
        format!(r"^[^\x0a\x0d]*[^{}][^\x0a\x0d]*$", class(WHITESPACE))
    }

    /// A label: without its surrounding whitespace, 1 to [`limits::LABEL_CHARS`] characters,
    /// none of them a control character. See [`super::normalize_labels`].
    pub fn label() -> String {
        let space = format!("[{}]*", class(WHITESPACE));
        let edge = format!("[^{}{}]", class(WHITESPACE), class(CONTROL));
        let inner = format!("[^{}]", class(CONTROL));
        let max_inner = limits::LABEL_CHARS.saturating_sub(2);
        format!("^{space}(?:{edge}|{edge}{inner}{{0,{max_inner}}}{edge}){space}$")
    }

    /// `author_email`: see [`super::check_email`].
    pub fn email() -> String {
        let refused = format!("{}{}<>,;\"@", class(WHITESPACE), class(CONTROL));
        let any = format!("[^{refused}]");
        let edge = format!("[^{refused}.]");
        format!(r"^{any}+@{edge}{any}*\.{any}*{edge}$")
    }

    /// `target_branch`: see [`super::check_branch`]. At each character, none of the
    /// sequences git refuses starts there (`..`, `//`, `@{`, a part starting with `.`, a
    /// part ending in `.lock`); it does not start with `-`, `/` or `.`, is not `@`, and does
    /// not end with `/` or `.`.
    pub fn branch() -> String {
        let refused = r"\x00-\x20\x7f-\x9f~^:?*\[\\";
        format!(
            r"^(?![-/.])(?!@$)(?:(?!\.\.|//|@\{{|/\.|\.lock(?:/|$))[^{refused}])*[^{refused}/.]$"
        )
    }

    /// The whole numbers from 1 to `max`, written without leading zeros.
    pub fn positive_up_to(max: u64) -> String {
        let digits: Vec<u32> = max
            .to_string()
            .chars()
            .filter_map(|c| c.to_digit(10))
            .collect();
        let n = digits.len();
        let mut branches = Vec::new();
        if n > 1 {
            // Every number with fewer digits.
            branches.push(format!("[1-9][0-9]{{0,{}}}", n - 2));
        }
        // As many digits: the same first `i` digits as `max`, then a smaller digit, then any.
        for i in 0..n {
            let low = if i == 0 { 1 } else { 0 };
            if digits[i] > low {
                let prefix: String = digits[..i].iter().map(|d| d.to_string()).collect();
                let rest = n - i - 1;
                let tail = match rest {
                    0 => String::new(),
                    rest => format!("[0-9]{{{rest}}}"),
                };
                branches.push(format!("{prefix}[{low}-{}]{tail}", digits[i] - 1));
            }
        }
        branches.push(max.to_string());
        format!("(?:{})", branches.join("|"))
    }
}

/// A request to create a runbook as a front door received it, not yet checked: the REST
/// body, GraphQL's input and a `/runbook` comment all become one of these, and
/// [`RunbookRequest::validate`] is the one place their fields are checked. Rejected fields are
/// named by their REST paths (`repository.org`), which each front door renders its own way.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunbookRequest {
    pub org: String,
    pub repo: String,
    pub prompt: String,
    /// `None`: generated from the prompt.
    pub title: Option<String>,
    /// `None`: true.
    pub oneshot: Option<bool>,
    pub draft: Option<bool>,
    pub pr_mode: Option<PrMode>,
    pub target_branch: Option<String>,
    pub description: Option<String>,
    pub labels: Option<Vec<String>>,
    pub author_email: Option<String>,
}

impl RunbookRequest {
    /// Checks every field; the first problem found is returned, naming its field.
    pub fn validate(self) -> Result<NewRunbook, FieldError> {
        check_org("repository.org", &self.org)?;
        check_repo("repository.name", &self.repo)?;
        check_text("prompt", &self.prompt, limits::PROMPT_CHARS)?;
        if let Some(title) = &self.title {
            check_title("title", title)?;
        }
        if let Some(branch) = &self.target_branch {
            check_branch("target_branch", branch)?;
        }
        if let Some(description) = &self.description {
            check_description("description", description)?;
        }
        let labels = normalize_labels("labels", self.labels.as_deref().unwrap_or_default())?;
        if let Some(email) = &self.author_email {
            check_email("author_email", email)?;
        }
        let title = match self.title {
            Some(title) => title.trim().to_string(),
            None => title_from_prompt(&self.prompt),
        };
        Ok(NewRunbook {
            org: self.org,
            repo: self.repo,
            title,
            prompt: self.prompt,
            oneshot: self.oneshot.unwrap_or(true),
            draft: self.draft,
            pr_mode: self.pr_mode,
            target_branch: self.target_branch,
            description: self.description.filter(|d| !d.is_empty()),
            labels,
            author_email: self.author_email,
        })
    }
}

/// A follow-up instruction as a front door received it, checked by
/// [`FollowUpRequest::validate`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FollowUpRequest {
    pub prompt: String,
    pub description: Option<String>,
    pub labels: Option<Vec<String>>,
}

impl FollowUpRequest {
    /// Checks every field; the first problem found is returned, naming its field.
    pub fn validate(self) -> Result<FollowUp, FieldError> {
        check_text("prompt", &self.prompt, limits::PROMPT_CHARS)?;
        if let Some(description) = &self.description {
            check_description("description", description)?;
        }
        let labels = normalize_labels("labels", self.labels.as_deref().unwrap_or_default())?;
        Ok(FollowUp {
            prompt: self.prompt,
            description: self.description,
            labels,
        })
    }
}

/// A new runbook, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRunbook {
    pub org: String,
    pub repo: String,
    pub prompt: String,
    pub title: String,
    pub oneshot: bool,
    /// `None`: from the project configuration, else the server's default.
    pub draft: Option<bool>,
    /// `None`: from the project configuration, else the server's default.
    pub pr_mode: Option<PrMode>,
    /// `None`: the repository's default branch.
    pub target_branch: Option<String>,
    pub description: Option<String>,
    pub labels: Vec<String>,
    pub author_email: Option<String>,
}

/// A follow-up instruction for an existing runbook, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowUp {
    pub prompt: String,
    /// Replaces the stored description when given.
    pub description: Option<String>,
    /// Merged into the stored labels.
    pub labels: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_paths_in_each_front_doors_style() {
        let labels = FieldPath::from("labels").index(2);
        assert_eq!(labels.to_string(), "labels[2]");
        assert_eq!(labels.camel_case(), "labels[2]");
        let org = FieldPath::from("repository.org");
        assert_eq!(org.to_string(), "repository.org");
        assert_eq!(org.camel_case(), "repository.org");
        let error = FieldError::new("target_branch", "is not a valid branch name");
        assert_eq!(
            error.to_string(),
            "`target_branch` is not a valid branch name"
        );
        assert_eq!(
            error.camel_case("input"),
            "`input.targetBranch` is not a valid branch name"
        );
        assert_eq!(
            FieldError::new("author_email", "is bad").camel_case("input"),
            "`input.authorEmail` is bad"
        );
    }

    #[test]
    fn a_request_is_checked_field_by_field() {
        let request = RunbookRequest {
            org: "acme".into(),
            repo: "widgets".into(),
            prompt: "Rename the helper".into(),
            ..RunbookRequest::default()
        };
        let new = request.clone().validate().expect("valid");
        assert_eq!(new.title, "Rename the helper");
        assert!(new.oneshot);
        let bad = RunbookRequest {
            labels: Some(vec!["ok".into(), " ".into()]),
            ..request.clone()
        };
        assert_eq!(
            bad.validate().unwrap_err().to_string(),
            "`labels[1]` must not be empty"
        );
        let bad = RunbookRequest {
            org: "-acme".into(),
            ..request
        };
        assert_eq!(
            bad.validate().unwrap_err().field,
            FieldPath::from("repository.org")
        );
    }

    #[test]
    fn runbook_numbers() {
        assert_eq!(
            "12".parse::<RunbookNumber>().map(RunbookNumber::get),
            Ok(12)
        );
        assert_eq!(
            "9223372036854775807"
                .parse::<RunbookNumber>()
                .map(RunbookNumber::get),
            Ok(i64::MAX)
        );
        for bad in [
            "0",
            "-1",
            "+1",
            " 1",
            "abc",
            "1.5",
            "99999999999999999999",
            "",
        ] {
            assert_eq!(
                bad.parse::<RunbookNumber>(),
                Err(NotARunbookNumber),
                "{bad}"
            );
        }
        assert_eq!(
            RunbookNumber::try_from(7).map(|n| n.to_string()),
            Ok("7".into())
        );
        for bad in [0, -1, i64::MIN] {
            assert_eq!(
                RunbookNumber::try_from(bad),
                Err(NotARunbookNumber),
                "{bad}"
            );
        }
    }

    #[test]
    fn org_names() {
        for ok in [
            "acme-corp",
            "a",
            "A1",
            "rust-lang",
            "ent_user",
            &"a".repeat(39),
        ] {
            assert!(check_org("org", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-acme",
            "acme corp",
            "acme/x",
            "ac.me",
            &"a".repeat(40),
            "é",
        ] {
            let err = check_org("repository.org", bad).unwrap_err();
            assert_eq!(err.field.to_string(), "repository.org");
        }
    }

    #[test]
    fn repo_names() {
        for ok in ["backend", "my.repo", "a_b-c", ".github"] {
            assert!(check_repo("name", ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "a b", &"r".repeat(101)] {
            assert!(check_repo("name", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn branch_names() {
        for ok in ["main", "develop", "feature/x-1", "release-1.2", "a@b"] {
            assert!(check_branch("target_branch", ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "-x", "a..b", "a b", "a~1", "a^", "a:b", "a?", "a*", "a[", "a\\b", "/a", "a/",
            "a.", "a//b", "@", "a@{1}", ".hidden", "x/.y", "a.lock", "a\tb",
        ] {
            assert!(check_branch("target_branch", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn emails() {
        assert!(check_email("author_email", "dev@example.com").is_ok());
        for bad in [
            "",
            "dev",
            "@example.com",
            "dev@",
            "a b@c.d",
            "<a@b.c>",
            "a@b",
            "a@@b.c",
        ] {
            assert!(check_email("author_email", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn labels_are_deduplicated_in_order() {
        let labels: Vec<String> = ["b", "a", "B", " a ", "c"].map(String::from).into();
        assert_eq!(
            normalize_labels("labels", &labels).unwrap(),
            ["b", "a", "c"]
        );
        let err = normalize_labels("labels", &["ok".into(), " ".into()]).unwrap_err();
        assert_eq!(err.field.to_string(), "labels[1]");
        let merged = merge_labels(&["a".into(), "b".into()], &["B".into(), "c".into()]);
        assert_eq!(merged, ["a", "b", "c"]);
    }

    #[test]
    fn titles_from_prompts() {
        assert_eq!(
            title_from_prompt("Upgrade all React dependencies to v19"),
            "Upgrade all React dependencies to v19"
        );
        assert_eq!(
            title_from_prompt("\n\n## Rename the helper\nmore"),
            "Rename the helper"
        );
        // A prompt that is only the runbook template is named by its first step.
        assert_eq!(
            title_from_prompt("## Execution Steps\n### Step 1: Rename the helper\n```sh\n```"),
            "Rename the helper"
        );
        assert_eq!(
            title_from_prompt("#### 1.2: Update callers"),
            "Update callers"
        );
        assert_eq!(
            title_from_prompt("Note: keep it short"),
            "Note: keep it short"
        );
        let long = "word ".repeat(40);
        let title = title_from_prompt(&long);
        assert!(title.chars().count() <= limits::GENERATED_TITLE_CHARS);
        assert!(title.ends_with('…'));
    }

    /// Every string of at most `max_len` pieces of `alphabet`.
    fn strings(alphabet: &[&str], max_len: usize) -> Vec<String> {
        let mut all = vec![String::new()];
        let mut last = vec![String::new()];
        for _ in 0..max_len {
            last = last
                .iter()
                .flat_map(|s| alphabet.iter().map(move |a| format!("{s}{a}")))
                .collect();
            all.extend(last.iter().cloned());
        }
        all
    }

    /// The pattern and `maxLength` the API's description states accept exactly what the
    /// check accepts, for every sample.
    fn agree<'a>(
        pattern: &str,
        max_chars: usize,
        check: impl Fn(&str) -> bool,
        samples: impl IntoIterator<Item = &'a String>,
    ) {
        let regex = fancy_regex::Regex::new(pattern).unwrap();
        let mut count = 0;
        for sample in samples {
            let described = regex.is_match(sample).unwrap() && sample.chars().count() <= max_chars;
            assert_eq!(
                described,
                check(sample),
                "{sample:?}: the pattern {pattern} says {described}"
            );
            count += 1;
        }
        assert!(count > 0);
    }

    #[test]
    fn character_classes_are_rust_s_own() {
        let whitespace =
            regex::Regex::new(&format!("^[{}]$", patterns::class_for_tests(true))).unwrap();
        let control =
            regex::Regex::new(&format!("^[{}]$", patterns::class_for_tests(false))).unwrap();
        let mut buf = [0u8; 4];
        for c in (0..=0x10ffff_u32).filter_map(char::from_u32) {
            let s = c.encode_utf8(&mut buf);
            assert_eq!(whitespace.is_match(s), c.is_whitespace(), "{c:?}");
            assert_eq!(control.is_match(s), c.is_control(), "{c:?}");
        }
    }

    #[test]
    fn patterns_say_what_the_checks_accept() {
        let long = |c: &str, n: usize| vec![c.repeat(n), c.repeat(n + 1)];
        let mut orgs = strings(&["a", "Z", "0", "-", "_", ".", " ", "é", "/"], 4);
        orgs.extend(long("a", limits::ORG_CHARS));
        agree(
            &patterns::org(),
            limits::ORG_CHARS,
            |s| check_org("f", s).is_ok(),
            &orgs,
        );

        let mut repos = strings(&["a", ".", "-", "_", "/", " ", "é", "Z9"], 4);
        repos.extend(long("r", limits::REPO_CHARS));
        agree(
            &patterns::repo(),
            limits::REPO_CHARS,
            |s| check_repo("f", s).is_ok(),
            &repos,
        );

        let spaces = [
            " ", "\t", "\n", "\r", "a", "\u{a0}", "\u{2028}", "\u{85}", "\u{1c}", "\u{feff}",
        ];
        let mut texts = strings(&spaces, 3);
        texts.extend(long("p", 300));
        agree(
            &patterns::not_blank(),
            300,
            |s| check_text("f", s, 300).is_ok(),
            &texts,
        );
        texts.extend(long("t", limits::TITLE_CHARS));
        agree(
            &patterns::title(),
            limits::TITLE_CHARS,
            |s| check_title("f", s).is_ok(),
            &texts,
        );

        let mut labels = strings(&[" ", "\t", "\n", "a", "\u{1}", "\u{85}", "\u{a0}", "é"], 4);
        for n in [
            limits::LABEL_CHARS - 1,
            limits::LABEL_CHARS,
            limits::LABEL_CHARS + 1,
        ] {
            labels.push("l".repeat(n));
            labels.push(format!(" \t{}\n ", "l".repeat(n)));
            labels.push(format!("l{}l", "\u{a0}".repeat(n.saturating_sub(2))));
            labels.push(format!("l{}l", "\u{7}".repeat(n.saturating_sub(2))));
        }
        agree(
            &patterns::label(),
            usize::MAX,
            |s| normalize_labels("f", &[s.to_string()]).is_ok(),
            &labels,
        );

        let mut emails = strings(&["a", "@", ".", " ", "<", "é", "\u{1}"], 6);
        emails.push(format!(
            "{}@example.com",
            "a".repeat(limits::EMAIL_CHARS - 12)
        ));
        emails.push(format!(
            "{}@example.com",
            "a".repeat(limits::EMAIL_CHARS - 11)
        ));
        agree(
            &patterns::email(),
            limits::EMAIL_CHARS,
            |s| check_email("f", s).is_ok(),
            &emails,
        );

        let mut branches = strings(
            &[
                "a", "-", ".", "/", "@", "{", ".lock", "lock", " ", "~", "é", "\u{2028}", "\u{85}",
            ],
            4,
        );
        branches.extend(long("b", limits::BRANCH_CHARS));
        agree(
            &patterns::branch(),
            limits::BRANCH_CHARS,
            |s| check_branch("f", s).is_ok(),
            &branches,
        );
    }

    #[test]
    fn whole_number_ranges() {
        for max in [
            1, 2, 9, 10, 11, 19, 20, 99, 100, 101, 1000, 1203, 9999, 10000, 10001,
        ] {
            let pattern = format!("^{}$", patterns::positive_up_to(max));
            let numbers: Vec<String> = (0..=max + 1000)
                .map(|n| n.to_string())
                .chain(["01", "007", "", "+1", "-1", "1.0"].map(String::from))
                .collect();
            agree(
                &pattern,
                usize::MAX,
                |s| {
                    s.parse::<u64>().is_ok_and(|n| (1..=max).contains(&n))
                        && !s.starts_with(['0', '+'])
                },
                &numbers,
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn branch_pattern_agrees_on_longer_names(
            pieces in proptest::collection::vec(
                proptest::sample::select(&["a", "-", ".", "/", "@", "{", ".lock", "lock", " ", "é", "~"][..]),
                0..12,
            )
        ) {
            let branch = pieces.concat();
            agree(&patterns::branch(), limits::BRANCH_CHARS, |s| check_branch("f", s).is_ok(), [&branch]);
        }

        #[test]
        fn label_and_email_patterns_agree_on_any_text(text in "\\PC{0,12}|[ \\ta@.<\u{1}\u{a0}é]{0,12}") {
            agree(&patterns::label(), usize::MAX, |s| normalize_labels("f", &[s.to_string()]).is_ok(), [&text]);
            agree(&patterns::email(), limits::EMAIL_CHARS, |s| check_email("f", s).is_ok(), [&text]);
            agree(&patterns::title(), limits::TITLE_CHARS, |s| check_title("f", s).is_ok(), [&text]);
        }
    }

    #[test]
    fn texts_and_titles() {
        assert!(check_text("prompt", "  \n", 10).is_err());
        assert!(check_text("prompt", "12345678901", 10).is_err());
        assert!(check_title("title", "two\nlines").is_err());
        assert!(check_title("title", &"t".repeat(257)).is_err());
        assert!(check_title("title", "fine").is_ok());
    }
}
