//! The runbook template layout: parsing a prompt into a plan, and a step's details into the
//! shell blocks the `script` agent runs. Pure functions over text, no I/O.
//!
//! The layout (the one Aviator publishes for its runbooks library):
//!
//! ````text
//! Any context text.
//! ## Execution Steps
//! ### Step 1: Rename the helper
//! #### 1.1: Rename the definition
//! ```sh
//! sed -i 's/old_name/new_name/' src/lib.rs
//! ```
//! #### 1.2: Update the callers
//! ### Step 2: Document it
//! ````
//!
//! Rules, chosen so that a runbook means one thing and a mistake is reported, not guessed at:
//! - `### Step N: title` is a top-level step; `#### N.M: title` a sub-step, `##### N.M.K:` one
//!   level deeper, `######` the deepest (Markdown has six heading levels). The `Step` word is
//!   optional at every level, and `:` may also be written `.`, `-`, `–`, `—` or `)`, or left
//!   out. A heading whose number does not match its level (`#### 2: …`) is an error.
//! - A heading with no sub-step headings is a leaf. The text under a step heading, up to the
//!   next step heading, is that step's details (fenced blocks included, verbatim). Other
//!   headings (`#### Notes`) are part of the details.
//! - Headings inside fenced code blocks are code, not headings. A fence left open inside the
//!   steps is an error: it would silently swallow every step after it.
//! - The steps start after `## Execution Steps` (text before it is context, not a step) and
//!   end at the next `#`/`##` heading. Without that heading, a `### Step N` heading starts
//!   them. Text that has neither is a plain prompt: one leaf step.
//! - Numbers must be contiguous and unique ([`Plan::continuing`] checks); errors name the
//!   line.
//! - HTML comments (`<!-- … -->`) outside code blocks are not part of the runbook: GitHub
//!   does not show them, so a command block hidden in one (in an issue body, say) would run
//!   without anyone having seen it. They are removed before anything else is read
//!   ([`strip_html_comments`]), keeping their line breaks so line numbers stay true.

use std::fmt;

use crate::domain::runbook::title_from_prompt;
use crate::domain::{Plan, PlanError, PlannedStep, StepNumber};

/// Why a prompt in the template layout could not become a plan.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct TemplateError {
    /// 1-based line of the prompt the problem is on, when there is one.
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl TemplateError {
    fn at(line: usize, message: impl Into<String>) -> Self {
        Self {
            line: Some(line),
            message: message.into(),
        }
    }
}

/// Turns a prompt into a plan whose first top-level step is `after + 1`.
///
/// A prompt in the template layout gives its steps; any other prompt becomes a single leaf
/// step, titled from the prompt, whose details are the whole prompt.
pub fn parse_plan(prompt: &str, after: u32) -> Result<Plan, TemplateError> {
    let prompt = &strip_html_comments(prompt);
    let doc = scan(prompt);
    let Some(section) = steps_section(&doc)? else {
        return plain_plan(prompt, after);
    };
    let headings = step_headings(&doc, &section)?;
    let mut steps = Vec::with_capacity(headings.len());
    for (i, heading) in headings.iter().enumerate() {
        let end = headings.get(i + 1).map_or(section.end, |next| next.index);
        steps.push(PlannedStep {
            number: heading.number.clone(),
            title: heading.title.clone(),
            details: join_trimmed(&doc.lines[heading.index + 1..end]),
        });
    }
    Plan::continuing(steps, after).map_err(|err| explain(err, &headings, after))
}

/// One line of a prompt, with its heading when it is one (never inside a code block).
struct Line<'a> {
    text: &'a str,
    heading: Option<Heading<'a>>,
}

#[derive(Clone, Copy)]
struct Heading<'a> {
    level: usize,
    text: &'a str,
}

struct Document<'a> {
    lines: Vec<Line<'a>>,
    /// Index of the line opening a code block that is never closed.
    unclosed_fence: Option<usize>,
}

/// The lines of the steps, as indices into the document, and the line that introduced them.
struct Section {
    start: usize,
    end: usize,
    marker: usize,
}

struct StepHeading {
    index: usize,
    number: StepNumber,
    title: String,
}

fn scan(text: &str) -> Document<'_> {
    let mut lines = Vec::new();
    let mut fence: Option<(Fence, usize)> = None;
    for (index, text) in text.lines().enumerate() {
        let mut heading = None;
        match &fence {
            Some((open, _)) => {
                if open.closed_by(text) {
                    fence = None;
                }
            }
            None => match Fence::open(text) {
                Some(open) => fence = Some((open, index)),
                None => heading = atx_heading(text),
            },
        }
        lines.push(Line { text, heading });
    }
    Document {
        lines,
        unclosed_fence: fence.map(|(_, index)| index),
    }
}

/// An opening code fence: three or more backticks or tildes (CommonMark).
struct Fence<'a> {
    marker: u8,
    len: usize,
    info: &'a str,
}

impl<'a> Fence<'a> {
    fn open(line: &'a str) -> Option<Self> {
        let rest = strip_indent(line)?;
        let marker = *rest.as_bytes().first()?;
        if marker != b'`' && marker != b'~' {
            return None;
        }
        let len = rest.bytes().take_while(|b| *b == marker).count();
        let info = rest[len..].trim();
        if len < 3 || (marker == b'`' && info.contains('`')) {
            return None;
        }
        Some(Self { marker, len, info })
    }

    fn closed_by(&self, line: &str) -> bool {
        let Some(rest) = strip_indent(line) else {
            return false;
        };
        let len = rest.bytes().take_while(|b| *b == self.marker).count();
        len >= self.len && rest[len..].trim().is_empty()
    }
}

/// The line without up to three leading spaces; `None` when indented more (then it is an
/// indented code block in Markdown, not a heading or fence).
fn strip_indent(line: &str) -> Option<&str> {
    let indent = line.len() - line.trim_start_matches(' ').len();
    (indent <= 3).then(|| &line[indent..])
}

/// An ATX heading (`### text`, optionally closed by `###`), as CommonMark reads it.
fn atx_heading(line: &str) -> Option<Heading<'_>> {
    let rest = strip_indent(line)?;
    let level = rest.bytes().take_while(|b| *b == b'#').count();
    if !(1..=6).contains(&level) {
        return None;
    }
    let after = &rest[level..];
    if !after.is_empty() && !after.starts_with([' ', '\t']) {
        return None;
    }
    let mut text = after.trim();
    let without_closing = text.trim_end_matches('#');
    if without_closing.len() < text.len()
        && (without_closing.is_empty() || without_closing.ends_with([' ', '\t']))
    {
        text = without_closing.trim_end();
    }
    Some(Heading { level, text })
}

fn is_execution_steps(heading: &Heading<'_>) -> bool {
    heading.level <= 2
        && heading
            .text
            .trim_end_matches(':')
            .trim()
            .eq_ignore_ascii_case("execution steps")
}

/// Strips a leading `Step` word (any case, not `Steps` or `Stepwise`).
fn strip_step_word(text: &str) -> Option<&str> {
    let word = text.get(..4)?;
    let rest = &text[4..];
    (word.eq_ignore_ascii_case("step") && !rest.starts_with(|c: char| c.is_alphabetic()))
        .then_some(rest)
}

/// Finds where the steps are, or `None` for a prompt that is not in the template layout.
fn steps_section(doc: &Document<'_>) -> Result<Option<Section>, TemplateError> {
    let lines = &doc.lines;
    let mut markers = lines
        .iter()
        .enumerate()
        .filter(|(_, line)| line.heading.as_ref().is_some_and(is_execution_steps))
        .map(|(index, _)| index);
    let first = markers.next();
    if let Some(second) = markers.next() {
        return Err(TemplateError::at(
            second + 1,
            format!(
                "a second `## Execution Steps` heading (the first is on line {}): keep all steps under one",
                first.map_or(0, |index| index + 1)
            ),
        ));
    }
    let start = match first {
        Some(marker) => Some((marker + 1, marker)),
        None => lines
            .iter()
            .position(|line| {
                line.heading.is_some_and(|h| {
                    h.level == 3
                        && strip_step_word(h.text).is_some_and(|rest| {
                            rest.trim_start().starts_with(|c: char| c.is_ascii_digit())
                        })
                })
            })
            .map(|index| (index, index)),
    };
    let Some((start, marker)) = start else {
        // A fence left open can hide the structure from the scan above: say so rather than
        // run the whole prompt as one step.
        if let Some(open) = doc.unclosed_fence {
            let hidden = lines[open + 1..].iter().any(|line| {
                atx_heading(line.text).is_some_and(|h| {
                    is_execution_steps(&h) || (h.level == 3 && strip_step_word(h.text).is_some())
                })
            });
            if hidden {
                return Err(unclosed(open));
            }
        }
        return Ok(None);
    };
    let end = lines[start..]
        .iter()
        .position(|line| line.heading.is_some_and(|h| h.level <= 2))
        .map_or(lines.len(), |offset| start + offset);
    if let Some(open) = doc
        .unclosed_fence
        .filter(|open| *open >= start && *open < end)
    {
        return Err(unclosed(open));
    }
    Ok(Some(Section { start, end, marker }))
}

fn unclosed(index: usize) -> TemplateError {
    TemplateError::at(
        index + 1,
        "this code block is never closed, so everything after it would be code: close it with a line of three backticks",
    )
}

/// What a heading inside the steps says.
enum Classified {
    NotAStep,
    Step { number: StepNumber, title: String },
    Malformed(String),
}

fn classify(text: &str) -> Classified {
    let mut text = text.trim();
    // `**Step 1: Title**`: emphasis around the whole heading is decoration.
    if let Some(inner) = text
        .strip_prefix("**")
        .and_then(|t| t.strip_suffix("**"))
        .or_else(|| text.strip_prefix("__").and_then(|t| t.strip_suffix("__")))
    {
        text = inner.trim();
    }
    let (prefixed, rest) = match strip_step_word(text) {
        Some(rest) => (true, rest.trim_start()),
        None => (false, text),
    };
    if !rest.starts_with(|c: char| c.is_ascii_digit()) {
        return if prefixed {
            Classified::Malformed(
                "`Step` must be followed by the step's number, like `Step 2: title`".into(),
            )
        } else {
            Classified::NotAStep
        };
    }
    let token_len = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let after = &rest[token_len..];
    let token = &rest[..token_len];
    let next_ok =
        after.is_empty() || after.starts_with(char::is_whitespace) || after.starts_with(SEPARATORS);
    let number = token.strip_suffix('.').unwrap_or(token);
    let parsed = if next_ok {
        number.parse::<StepNumber>().ok()
    } else {
        None
    };
    let Some(number) = parsed else {
        let word: String = rest
            .chars()
            .take_while(|c| !c.is_whitespace() && (*c == '.' || !SEPARATORS.contains(c)))
            .collect();
        return Classified::Malformed(format!(
            "`{word}` is not a step number: write whole numbers joined by dots, like `2` or `2.3`"
        ));
    };
    let title = after.trim_start();
    let title = title.strip_prefix(SEPARATORS).unwrap_or(title).trim();
    Classified::Step {
        number,
        title: title.to_string(),
    }
}

const SEPARATORS: [char; 6] = [':', '-', '–', '—', ')', '.'];

fn step_headings(doc: &Document<'_>, section: &Section) -> Result<Vec<StepHeading>, TemplateError> {
    let mut headings = Vec::new();
    for index in section.start..section.end {
        let Some(heading) = doc.lines[index].heading.filter(|h| h.level >= 3) else {
            continue;
        };
        match classify(heading.text) {
            Classified::NotAStep => {}
            Classified::Malformed(why) => {
                return Err(TemplateError::at(
                    index + 1,
                    format!("`{}`: {why}", doc.lines[index].text.trim()),
                ));
            }
            Classified::Step { number, title } => {
                let depth = heading.level - 2;
                if number.depth() != depth {
                    return Err(TemplateError::at(
                        index + 1,
                        format!(
                            "`{}` does not match its level: {}",
                            doc.lines[index].text.trim(),
                            level_rule(heading.level)
                        ),
                    ));
                }
                headings.push(StepHeading {
                    index,
                    number,
                    title,
                });
            }
        }
    }
    if headings.is_empty() {
        return Err(TemplateError::at(
            section.marker + 1,
            "`## Execution Steps` has no step headings under it: write steps as `### Step 1: title` and sub-steps as `#### 1.1: title`",
        ));
    }
    Ok(headings)
}

/// What a heading level is for, to explain a mismatch.
fn level_rule(level: usize) -> String {
    let hashes = "#".repeat(level);
    match level - 2 {
        1 => format!("`{hashes}` headings are top-level steps, like `{hashes} Step 2: title`"),
        depth => {
            let example: Vec<String> = (1..=depth)
                .map(|d| if d == depth { "2".into() } else { "1".into() })
                .collect();
            format!(
                "`{hashes}` headings are steps numbered with {depth} parts, like `{hashes} {}: title`",
                example.join(".")
            )
        }
    }
}

/// Lines joined with newlines, without the blank lines at either end.
fn join_trimmed(lines: &[Line<'_>]) -> String {
    let blank = |line: &&Line<'_>| line.text.trim().is_empty();
    let start = lines
        .iter()
        .position(|line| !blank(&line))
        .unwrap_or(lines.len());
    let end = lines
        .iter()
        .rposition(|line| !blank(&line))
        .map_or(start, |i| i + 1);
    lines[start..end]
        .iter()
        .map(|line| line.text)
        .collect::<Vec<_>>()
        .join("\n")
}

fn plain_plan(prompt: &str, after: u32) -> Result<Plan, TemplateError> {
    let details = prompt.trim();
    if details.is_empty() {
        return Err(TemplateError {
            line: None,
            message: "the prompt is empty: say what the runbook should do".into(),
        });
    }
    let step = PlannedStep {
        number: StepNumber::top(after.saturating_add(1)),
        title: title_from_prompt(details),
        details: details.to_string(),
    };
    Plan::continuing(vec![step], after).map_err(|err| TemplateError {
        line: None,
        message: err.to_string(),
    })
}

/// Turns a plan error into a message that names the heading's line, and explains follow-up
/// numbering when that is what went wrong.
fn explain(err: PlanError, headings: &[StepHeading], after: u32) -> TemplateError {
    let line_of = |number: &StepNumber, nth: usize| {
        headings
            .iter()
            .filter(|h| &h.number == number)
            .nth(nth)
            .map(|h| h.index + 1)
    };
    let line = match &err {
        PlanError::Empty => None,
        PlanError::Duplicate(number) => line_of(number, 1),
        PlanError::NotContiguous { found, .. } | PlanError::EmptyTitle(found) => line_of(found, 0),
    };
    let mut message = err.to_string();
    if let PlanError::NotContiguous { found, .. } = &err
        && headings.first().is_some_and(|h| &h.number == found)
    {
        if after > 0 {
            message.push_str(&format!(
                " (this adds to a plan whose last top-level step is {after}, so its steps are numbered from {})",
                after + 1
            ));
        } else {
            message.push_str(" (a runbook's steps are numbered from 1)");
        }
    }
    TemplateError { line, message }
}

/// The shell a command block asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shell {
    Sh,
    Bash,
}

impl Shell {
    pub fn program(self) -> &'static str {
        match self {
            Shell::Sh => "sh",
            Shell::Bash => "bash",
        }
    }
}

/// A fenced block of a step's details that the `script` agent runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandBlock {
    pub shell: Shell,
    pub code: String,
    /// 1-based line of the opening fence within the details.
    pub line: usize,
    /// False when the details end before the block is closed.
    pub closed: bool,
}

impl CommandBlock {
    /// The first non-empty line of code, to name the block in messages.
    pub fn label(&self) -> String {
        let first = self
            .code
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("");
        let short: String = first.chars().take(60).collect();
        if short.len() < first.len() {
            format!("{short}…")
        } else {
            short.to_string()
        }
    }
}

/// The command blocks of a step's details, in order: fenced blocks whose info string starts
/// with `sh`, `shell` or `bash`.
///
/// A bare fence (no info string) is never run: in runbooks it shows expected output or a
/// file's contents as often as commands, and running those would be a surprise.
pub fn command_blocks(details: &str) -> Vec<CommandBlock> {
    let details = &strip_html_comments(details);
    let mut blocks = Vec::new();
    let mut current: Option<(Fence<'_>, Option<Shell>, usize, Vec<&str>)> = None;
    for (index, line) in details.lines().enumerate() {
        match &mut current {
            Some((fence, shell, start, code)) => {
                if fence.closed_by(line) {
                    if let Some(shell) = *shell {
                        blocks.push(CommandBlock {
                            shell,
                            code: code.join("\n"),
                            line: *start + 1,
                            closed: true,
                        });
                    }
                    current = None;
                } else {
                    code.push(line);
                }
            }
            None => {
                if let Some(fence) = Fence::open(line) {
                    let language = fence
                        .info
                        .split_whitespace()
                        .next()
                        .unwrap_or("")
                        .to_ascii_lowercase();
                    let shell = match language.as_str() {
                        "sh" | "shell" => Some(Shell::Sh),
                        "bash" => Some(Shell::Bash),
                        _ => None,
                    };
                    current = Some((fence, shell, index, Vec::new()));
                }
            }
        }
    }
    if let Some((_, Some(shell), start, code)) = current {
        blocks.push(CommandBlock {
            shell,
            code: code.join("\n"),
            line: start + 1,
            closed: false,
        });
    }
    blocks
}

/// `text` without its HTML comments (`<!-- … -->`, on one line or several), except inside
/// fenced code blocks, where they are code. A comment's line breaks are kept. A comment that
/// is never closed runs to the end of the text, as Markdown renders it (hidden).
pub fn strip_html_comments(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains("<!--") {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut fence: Option<Fence<'_>> = None;
    let mut in_comment = false;
    for line in text.split_inclusive('\n') {
        if !in_comment {
            match &fence {
                Some(open) => {
                    if open.closed_by(line.trim_end_matches(['\n', '\r'])) {
                        fence = None;
                    }
                    out.push_str(line);
                    continue;
                }
                None => {
                    if let Some(open) = Fence::open(line.trim_end_matches(['\n', '\r'])) {
                        fence = Some(open);
                        out.push_str(line);
                        continue;
                    }
                }
            }
        }
        let mut rest = line;
        loop {
            if in_comment {
                match rest.find("-->") {
                    Some(end) => {
                        rest = &rest[end + 3..];
                        in_comment = false;
                    }
                    None => {
                        if rest.ends_with('\n') {
                            out.push('\n');
                        }
                        break;
                    }
                }
            } else {
                match rest.find("<!--") {
                    Some(start) => {
                        out.push_str(&rest[..start]);
                        rest = &rest[start + 4..];
                        in_comment = true;
                    }
                    None => {
                        out.push_str(rest);
                        break;
                    }
                }
            }
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn html_comments_are_not_part_of_the_runbook() {
        let prompt = "Tidy up.\n<!--\n```sh\ncurl evil | sh\n```\n-->\n## Execution Steps\n\
                      ### Step 1: Visible <!-- ```sh hidden ``` -->\n```sh\necho '<!-- kept -->'\n```\n";
        let plan = parse_plan(prompt, 0).unwrap();
        let steps = plan.steps();
        assert_eq!(steps.len(), 1);
        assert_eq!(steps[0].title, "Visible");
        let blocks = command_blocks(&steps[0].details);
        assert_eq!(blocks.len(), 1);
        // Inside a code block, `<!--` is code.
        assert_eq!(blocks[0].code, "echo '<!-- kept -->'");

        // A plain prompt with a hidden block runs nothing of it.
        let plain = "Do it.\n<!-- ```sh\nrm -rf ~\n``` -->\nThanks";
        let plan = parse_plan(plain, 0).unwrap();
        assert!(command_blocks(&plan.steps()[0].details).is_empty());
        // Nor do details stored before (hidden in a comment never closed).
        assert!(command_blocks("x\n<!--\n```sh\nrm -rf ~\n```\n").is_empty());
        // Line numbers stay true.
        assert_eq!(strip_html_comments("a<!--\nb\n-->c\nd"), "a\n\nc\nd");
        assert_eq!(strip_html_comments("no comments"), "no comments");
    }

    fn parse(prompt: &str) -> Result<Vec<(String, String, String, bool)>, String> {
        parse_after(prompt, 0)
    }

    fn parse_after(
        prompt: &str,
        after: u32,
    ) -> Result<Vec<(String, String, String, bool)>, String> {
        parse_plan(prompt, after)
            .map(|plan| {
                plan.iter()
                    .map(|(step, leaf)| {
                        (
                            step.number.to_string(),
                            step.title.clone(),
                            step.details.clone(),
                            leaf,
                        )
                    })
                    .collect()
            })
            .map_err(|err| err.to_string())
    }

    fn numbers(prompt: &str) -> Vec<String> {
        parse(prompt)
            .unwrap()
            .into_iter()
            .map(|(n, ..)| n)
            .collect()
    }

    const RENAME: &str = "Rename `old_name` to `new_name` everywhere.

## Execution Steps

### Step 1: Rename the helper
Context for the whole step.

#### 1.1: Rename the definition
```sh
sed -i 's/old_name/new_name/' src/lib.rs
```

#### 1.2: Update the callers
Use the new name in every caller.
```bash
grep -rl old_name src | xargs sed -i 's/old_name/new_name/g'
```
### Step 2: Document it
Mention it in the changelog.
";

    #[test]
    fn the_template_layout() {
        let steps = parse(RENAME).unwrap();
        let summary: Vec<_> = steps
            .iter()
            .map(|(n, t, _, leaf)| (n.as_str(), t.as_str(), *leaf))
            .collect();
        assert_eq!(
            summary,
            [
                ("1", "Rename the helper", false),
                ("1.1", "Rename the definition", true),
                ("1.2", "Update the callers", true),
                ("2", "Document it", true),
            ]
        );
        assert_eq!(steps[0].2, "Context for the whole step.");
        assert_eq!(
            steps[1].2,
            "```sh\nsed -i 's/old_name/new_name/' src/lib.rs\n```"
        );
        assert_eq!(
            steps[2].2,
            "Use the new name in every caller.\n```bash\ngrep -rl old_name src | xargs sed -i 's/old_name/new_name/g'\n```"
        );
        assert_eq!(steps[3].2, "Mention it in the changelog.");
    }

    #[test]
    fn deep_nesting() {
        let prompt = "## Execution Steps
### Step 1: One
#### 1.1: One one
##### 1.1.1: Deep
###### 1.1.1.1: Deepest
###### 1.1.1.2: Deepest too
##### 1.1.2: Deep two
#### 1.2: One two
### Step 2: Two
";
        assert_eq!(
            numbers(prompt),
            [
                "1", "1.1", "1.1.1", "1.1.1.1", "1.1.1.2", "1.1.2", "1.2", "2"
            ]
        );
        let leaves: Vec<_> = parse(prompt)
            .unwrap()
            .into_iter()
            .filter(|s| s.3)
            .map(|s| s.0)
            .collect();
        assert_eq!(leaves, ["1.1.1.1", "1.1.1.2", "1.1.2", "1.2", "2"]);
    }

    #[test]
    fn headings_inside_code_blocks_are_code() {
        let prompt = "## Execution Steps
### Step 1: Write a markdown file
```sh
cat > NOTES.md <<'EOF'
### Step 2: not a step
## Execution Steps
EOF
```
~~~~markdown
#### 1.1: not a step either
```
still inside the tilde fence
~~~~
### Step 2: Real
";
        let steps = parse(prompt).unwrap();
        assert_eq!(
            steps.iter().map(|s| s.0.as_str()).collect::<Vec<_>>(),
            ["1", "2"]
        );
        assert!(steps[0].2.contains("### Step 2: not a step"));
        assert!(steps[0].2.contains("still inside the tilde fence\n~~~~"));
    }

    #[test]
    fn text_before_the_steps_is_context_and_a_later_section_ends_them() {
        let prompt = "# Upgrade React
Some context, with a heading that looks like a step:
### Step 7: in the context, ignored
## Execution Steps
Intro text that belongs to no step.
### Step 1: Only
Do it.
## Validation
### Step 9: after the steps, ignored
Run the tests.
";
        let steps = parse(prompt).unwrap();
        assert_eq!(steps.len(), 1);
        assert_eq!(steps[0].2, "Do it.");
    }

    #[test]
    fn tolerated_variants() {
        let prompt = "  ##   execution steps:  
### Step 1 - Dash
#### 1.1. Dotted
#### Step 1.2: With the word
#### 1.3 No separator
#### 1.4) Paren
### step 2. Lower case ###
### **Step 3: Bold**
### 4 — Em dash
";
        let steps = parse(prompt).unwrap();
        let got: Vec<_> = steps.iter().map(|s| (s.0.as_str(), s.1.as_str())).collect();
        assert_eq!(
            got,
            [
                ("1", "Dash"),
                ("1.1", "Dotted"),
                ("1.2", "With the word"),
                ("1.3", "No separator"),
                ("1.4", "Paren"),
                ("2", "Lower case"),
                ("3", "Bold"),
                ("4", "Em dash"),
            ]
        );
    }

    #[test]
    fn other_headings_inside_a_step_are_details() {
        let prompt = "## Execution Steps
### Step 1: Migrate
#### Notes
Watch out.
#### 1.1: First
";
        let steps = parse(prompt).unwrap();
        assert_eq!(steps[0].2, "#### Notes\nWatch out.");
        assert_eq!(steps.len(), 2);
    }

    #[test]
    fn step_headings_without_the_section_heading() {
        let prompt =
            "Rename the helper.\n\n### Step 1: Rename\n```sh\ntrue\n```\n### Step 2: Check\n";
        assert_eq!(numbers(prompt), ["1", "2"]);
    }

    #[test]
    fn a_plain_prompt_is_one_step() {
        let steps = parse("  Upgrade all React dependencies to v19\nand fix the build.\n").unwrap();
        assert_eq!(
            steps,
            [(
                "1".into(),
                "Upgrade all React dependencies to v19".into(),
                "Upgrade all React dependencies to v19\nand fix the build.".into(),
                true
            )]
        );
        // Markdown that is not the layout is still a plain prompt.
        let steps = parse("## Goal\nDo the thing.\n### Details\n1. first\n2. second\n").unwrap();
        assert_eq!(steps.len(), 1);
        assert_eq!(steps[0].1, "Goal");
        assert!(
            parse(" \n\t\n")
                .unwrap_err()
                .contains("the prompt is empty")
        );
    }

    #[test]
    fn follow_ups_continue_the_numbering() {
        let steps = parse_after("Also update the docs", 3).unwrap();
        assert_eq!(steps[0].0, "4");
        assert_eq!(steps[0].1, "Also update the docs");
        let structured = "## Execution Steps\n### Step 4: More\n#### 4.1: Sub\n### Step 5: Last\n";
        let got: Vec<_> = parse_after(structured, 3)
            .unwrap()
            .into_iter()
            .map(|s| s.0)
            .collect();
        assert_eq!(got, ["4", "4.1", "5"]);
        let err = parse_after("## Execution Steps\n### Step 1: Again\n", 3).unwrap_err();
        assert_eq!(
            err,
            "line 2: step 1 is out of order: expected step 4 (this adds to a plan whose last top-level step is 3, so its steps are numbered from 4)"
        );
    }

    #[test]
    fn numbering_errors_name_the_line() {
        let cases = [
            (
                "## Execution Steps\n### Step 1: A\n#### 1.1: B\n#### 1.3: C\n",
                "line 4: step 1.3 is out of order: expected step 1.2",
            ),
            (
                "## Execution Steps\n### Step 1: A\n### Step 2: B\n### Step 2: C\n",
                "line 4: step 2 appears more than once",
            ),
            (
                "## Execution Steps\n### Step 2: A\n",
                "line 2: step 2 is out of order: expected step 1 (a runbook's steps are numbered from 1)",
            ),
            (
                "## Execution Steps\n### Step 1: A\n### Step 3: B\n",
                "line 3: step 3 is out of order: expected step 2",
            ),
            (
                "## Execution Steps\n### Step 1: A\n#### 2.1: B\n",
                "line 3: step 2.1 is out of order: expected step 1.1",
            ),
            (
                "## Execution Steps\n### Step 1:\n",
                "line 2: step 1 has an empty title",
            ),
            (
                "## Execution Steps\n### Step 1: A\n#### 2: B\n",
                "line 3: `#### 2: B` does not match its level: `####` headings are steps numbered with 2 parts, like `#### 1.2: title`",
            ),
            (
                "## Execution Steps\n### Step 1.1: A\n",
                "line 2: `### Step 1.1: A` does not match its level: `###` headings are top-level steps, like `### Step 2: title`",
            ),
            (
                "## Execution Steps\n### Step one: A\n",
                "line 2: `### Step one: A`: `Step` must be followed by the step's number, like `Step 2: title`",
            ),
            (
                "## Execution Steps\n### Step 1.a: A\n",
                "line 2: `### Step 1.a: A`: `1.a` is not a step number: write whole numbers joined by dots, like `2` or `2.3`",
            ),
            (
                "## Execution Steps\n### Step 01: A\n",
                "line 2: `### Step 01: A`: `01` is not a step number: write whole numbers joined by dots, like `2` or `2.3`",
            ),
            (
                "Context\n## Execution Steps\nNothing here.\n",
                "line 2: `## Execution Steps` has no step headings under it: write steps as `### Step 1: title` and sub-steps as `#### 1.1: title`",
            ),
            (
                "## Execution Steps\n### Step 1: A\n## Execution Steps\n### Step 2: B\n",
                "line 3: a second `## Execution Steps` heading (the first is on line 1): keep all steps under one",
            ),
        ];
        for (prompt, expected) in cases {
            assert_eq!(parse(prompt).unwrap_err(), expected, "{prompt}");
        }
    }

    #[test]
    fn an_unclosed_fence_is_an_error_not_a_swallowed_plan() {
        let prompt = "## Execution Steps\n### Step 1: A\n```sh\necho hi\n### Step 2: B\n";
        let err = parse(prompt).unwrap_err();
        assert!(
            err.starts_with("line 3: this code block is never closed"),
            "{err}"
        );
        // Before the section: the fence hides the section heading itself.
        let prompt = "Context\n```\noops\n## Execution Steps\n### Step 1: A\n";
        assert!(
            parse(prompt)
                .unwrap_err()
                .starts_with("line 2: this code block is never closed")
        );
        // In a plain prompt, an unclosed fence is just text.
        assert_eq!(parse("Fix it\n```\nlog output\n").unwrap().len(), 1);
    }

    #[test]
    fn command_blocks_by_info_string() {
        let details = "Intro
```sh
echo one
echo two
```
```
bare: shown, never run
```
```Bash title=\"x\"
echo three
```
~~~shell
echo four
~~~
```console
$ not run
```
```rust
fn main() {}
```";
        let blocks = command_blocks(details);
        let got: Vec<_> = blocks
            .iter()
            .map(|b| (b.shell, b.code.as_str(), b.line, b.closed))
            .collect();
        assert_eq!(
            got,
            [
                (Shell::Sh, "echo one\necho two", 2, true),
                (Shell::Bash, "echo three", 9, true),
                (Shell::Sh, "echo four", 12, true),
            ]
        );
        let unclosed = command_blocks("```sh\necho partial");
        assert_eq!(unclosed.len(), 1);
        assert!(!unclosed[0].closed);
        assert_eq!(command_blocks("no blocks at all"), []);
        assert_eq!(blocks[0].label(), "echo one");
    }

    /// A random valid step tree: a title, details and children for every step.
    #[derive(Debug, Clone)]
    struct Node {
        title: String,
        details: String,
        children: Vec<Node>,
    }

    fn node(depth: u32) -> BoxedStrategy<Node> {
        let title = "[A-Za-z][A-Za-z0-9 ,'()/-]{0,30}".prop_map(|t| t.trim().to_string());
        let details = prop::collection::vec(
            prop_oneof![
                "[a-z][a-z .,]{0,40}".prop_map(|t| t.trim_end().to_string()),
                Just("```sh\necho '### Step 9: inside a block'\n```".to_string()),
                Just("~~~\n#### 1.1: not a heading\n~~~".to_string()),
                Just("##### Notes".to_string()),
                Just(String::new()),
            ],
            0..4,
        )
        .prop_map(|parts| parts.join("\n").trim_matches('\n').to_string());
        if depth >= 4 {
            (title, details)
                .prop_map(|(title, details)| Node {
                    title,
                    details,
                    children: vec![],
                })
                .boxed()
        } else {
            (title, details, prop::collection::vec(node(depth + 1), 0..3))
                .prop_map(|(title, details, children)| Node {
                    title,
                    details,
                    children,
                })
                .boxed()
        }
    }

    /// Renders a tree in the layout, the first top-level step numbered `first`, and lists
    /// the (number, title, details) a parser should find.
    fn render(
        nodes: &[Node],
        prefix: &[u32],
        first: u32,
        out: &mut String,
        expected: &mut Vec<(String, String, String)>,
    ) {
        for (i, node) in nodes.iter().enumerate() {
            let mut number = prefix.to_vec();
            number.push(first + i as u32);
            let dotted = number
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(".");
            let hashes = "#".repeat(number.len() + 2);
            if number.len() == 1 {
                out.push_str(&format!("{hashes} Step {dotted}: {}\n", node.title));
            } else {
                out.push_str(&format!("{hashes} {dotted}: {}\n", node.title));
            }
            if !node.details.is_empty() {
                out.push_str(&node.details);
                out.push_str("\n\n");
            }
            expected.push((dotted, node.title.clone(), node.details.clone()));
            render(&node.children, &number, 1, out, expected);
        }
    }

    proptest! {
        #[test]
        fn rendered_trees_parse_back(
            context in "[a-z ]{0,30}",
            tree in prop::collection::vec(node(1), 1..4),
            after in 0u32..3,
        ) {
            let mut prompt = format!("{context}\n## Execution Steps\n");
            let mut expected = Vec::new();
            render(&tree, &[], after + 1, &mut prompt, &mut expected);
            let got: Vec<(String, String, String)> = parse_plan(&prompt, after)
                .map_err(|err| TestCaseError::fail(format!("{err}\n{prompt}")))?
                .steps()
                .iter()
                .map(|s| (s.number.to_string(), s.title.clone(), s.details.clone()))
                .collect();
            prop_assert_eq!(got, expected, "{}", prompt);
        }

        #[test]
        fn any_text_parses_or_fails_cleanly(text in "(?s).{0,300}") {
            let _ = parse_plan(&text, 0);
            let _ = command_blocks(&text);
        }

        #[test]
        fn any_layout_like_text_parses_or_fails_cleanly(
            lines in prop::collection::vec(
                prop_oneof![
                    Just("## Execution Steps".to_string()),
                    "#{1,7} (Step )?[0-9.]{1,6}[:.)-]? ?[a-z]{0,5}",
                    Just("```sh".to_string()),
                    Just("```".to_string()),
                    "[a-z ]{0,10}",
                ],
                0..20,
            ),
        ) {
            let text = lines.join("\n");
            if let Ok(plan) = parse_plan(&text, 0) {
                prop_assert!(!plan.steps().is_empty());
            }
        }
    }
}
