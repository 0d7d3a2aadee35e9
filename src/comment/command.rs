//! The `/runbook …` command in an issue or pull-request comment.
//!
//! Parsing is pure: it finds the command line in a comment's Markdown and turns it into a
//! [`Command`], or into a [`CommandError`] whose message tells the person what to fix.
//! Lines in fenced or indented code and in block quotes are never commands, so quoting an
//! earlier command or showing one in an example does not run anything.

use std::fmt;

use crate::domain::runbook::check_branch;
use crate::domain::step::StepNumberError;
use crate::domain::{PrMode, StepNumber};

/// What a comment asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Start a runbook: `/runbook [options] prompt`.
    Start(StartOptions),
    /// Run the thread's latest runbook, or up to one step of it: `/runbook execute [step]`.
    Execute { step: Option<StepNumber> },
    /// Queue the failed steps of the thread's latest runbook again.
    Retry,
    /// Stop the thread's latest runbook.
    Cancel,
    /// Report on the thread's latest runbook.
    Status,
    /// Show the usage.
    Help,
}

/// The options and prompt of `/runbook [options] prompt`. `None` leaves a setting to the
/// project configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StartOptions {
    /// `--single`, `--stacked` or `--manual`.
    pub pr_mode: Option<PrMode>,
    /// `--draft` gives `Some(true)`, `--ready` gives `Some(false)`.
    pub draft: Option<bool>,
    /// `--target BRANCH` or `--target=BRANCH`; a branch name git accepts.
    pub target: Option<String>,
    /// `--plan`: plan now, execute later (`oneshot: false`).
    pub plan_only: bool,
    /// The rest of the command line and every line after it, verbatim. Leading blank lines and
    /// trailing white space are removed. May be empty.
    pub prompt: String,
}

impl StartOptions {
    /// The prompt, or the issue's body when the comment gives none; NothingToDo when both are
    /// empty or blank. The body gets the same trimming as the prompt, and `\n` line endings.
    pub fn prompt_or(&self, issue_body: Option<&str>) -> Result<String, CommandError> {
        if !self.prompt.trim().is_empty() {
            return Ok(self.prompt.clone());
        }
        let body = issue_body.unwrap_or("").replace("\r\n", "\n");
        let body = trim_blank(&body);
        if body.is_empty() {
            Err(CommandError::NothingToDo)
        } else {
            Ok(body.to_string())
        }
    }
}

/// A command that was recognised but cannot be run as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandError {
    /// An option this parser does not know, with the known one it most likely meant.
    UnknownOption {
        option: String,
        suggestion: Option<&'static str>,
    },
    /// An option that needs a value came without one.
    MissingValue { option: &'static str },
    /// A value that cannot be used. `option` is what the value follows, like `--target` or
    /// `/runbook execute`; `reason` completes the sentence "`value` …".
    InvalidValue {
        option: &'static str,
        value: String,
        reason: String,
    },
    /// Two options that contradict each other, in the order given.
    ConflictingOptions { first: String, second: String },
    /// A lone word close to a subcommand, most likely a typo.
    UnknownCommand {
        word: String,
        suggestion: &'static str,
    },
    /// Something follows a subcommand that takes no such argument.
    UnexpectedArgument {
        command: &'static str,
        argument: String,
    },
    /// Neither the comment nor the issue says what to do.
    NothingToDo,
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandError::UnknownOption {
                option,
                suggestion: Some(suggestion),
            } => write!(
                f,
                "unknown option {}; did you mean {}?",
                Code(option),
                Code(suggestion)
            ),
            CommandError::UnknownOption {
                option,
                suggestion: None,
            } => write!(f, "unknown option {}", Code(option)),
            CommandError::MissingValue { option: "--target" } => f.write_str(
                "`--target` needs a branch name, like `--target main` or `--target=main`",
            ),
            CommandError::MissingValue { option } => write!(f, "{} needs a value", Code(option)),
            CommandError::InvalidValue {
                option,
                value,
                reason,
            } => write!(f, "{} after {} {reason}", Code(value), Code(option)),
            CommandError::ConflictingOptions { first, second } => write!(
                f,
                "{} and {} cannot be used together; pick one",
                Code(first),
                Code(second)
            ),
            CommandError::UnknownCommand { word, suggestion } => write!(
                f,
                "unknown command {}; did you mean {}? To start a runbook with that prompt, \
                 write {}",
                Code(word),
                Code(&format!("{COMMAND} {suggestion}")),
                Code(&format!("{COMMAND} -- {word}")),
            ),
            CommandError::UnexpectedArgument { command, argument } => {
                let full = format!("{COMMAND} {command}");
                if *command == "execute" {
                    write!(
                        f,
                        "{} takes at most a step number, like `/runbook execute 2.1`, but {} \
                         follows it",
                        Code(&full),
                        Code(argument)
                    )?;
                } else {
                    write!(
                        f,
                        "{} takes no arguments, but {} follows it",
                        Code(&full),
                        Code(argument)
                    )?;
                }
                write!(
                    f,
                    ". To start a runbook whose prompt begins with {}, write {}",
                    Code(command),
                    Code(&format!("{COMMAND} -- {command} …"))
                )
            }
            CommandError::NothingToDo => f.write_str(
                "there is nothing to do: write the task after `/runbook`, like \
                 `/runbook Upgrade all React deps to v19`, or in the description of the issue \
                 or pull request",
            ),
        }
    }
}

impl std::error::Error for CommandError {}

/// The usage, in GitHub-flavoured Markdown, for replies to a mistaken command.
pub const USAGE: &str = "\
**Usage**

- `/runbook [options] TASK` starts a runbook on this repository. The lines after the command \
are part of the task; with no task, the description of the issue or pull request is used.
- `/runbook execute [STEP]` runs this thread's latest runbook, or only up to step `STEP` \
(like `2.1`).
- `/runbook retry` queues the failed steps of this thread's latest runbook again.
- `/runbook cancel` stops this thread's latest runbook.
- `/runbook status` reports on this thread's latest runbook.
- `/runbook help` shows this help.

**Options** (before the task)

- `--single`: one branch and one pull request.
- `--stacked`: one pull request per top-level step, each based on the previous one.
- `--manual`: push one branch and open no pull request by itself.
- `--draft`: keep the pull requests as drafts.
- `--ready`: mark the pull requests ready for review when their steps are done.
- `--target BRANCH` (or `--target=BRANCH`): start from `BRANCH` and open the pull requests \
into it, instead of the default branch.
- `--plan`: only plan the steps; run them later with `/runbook execute`.
- `--`: ends the options, for a task that begins with `--` or with a command word.

Example: `/runbook --stacked --draft Upgrade all React deps to v19`";

/// Finds the command in a comment and parses it. None when the comment holds no command
/// (nothing to do, say nothing).
pub fn parse(body: &str) -> Option<Result<Command, CommandError>> {
    let lines: Vec<&str> = body
        .split('\n')
        .map(|line| line.strip_suffix('\r').unwrap_or(line))
        .collect();
    let (index, args) = find_command(&lines)?;
    Some(parse_args(args, &lines[index + 1..]))
}

const COMMAND: &str = "/runbook";

/// The subcommands, by name.
const SUBCOMMANDS: [&str; 5] = ["execute", "retry", "cancel", "status", "help"];

/// The options of a start, by name.
const OPTIONS: [&str; 7] = [
    "--single",
    "--stacked",
    "--manual",
    "--draft",
    "--ready",
    "--plan",
    "--target",
];

/// The first command line: its index and the text after `/runbook`.
fn find_command<'a>(lines: &[&'a str]) -> Option<(usize, &'a str)> {
    let mut fence: Option<(char, usize)> = None;
    for (index, line) in lines.iter().enumerate() {
        if let Some((fence_char, fence_len)) = fence {
            if closes_fence(line, fence_char, fence_len) {
                fence = None;
            }
            continue;
        }
        let Some(text) = unindent(line) else {
            continue;
        };
        if text.starts_with('>') {
            continue;
        }
        if let Some(opening) = opening_fence(text) {
            fence = Some(opening);
            continue;
        }
        if let Some(args) = text.strip_prefix(COMMAND)
            && args.chars().next().is_none_or(char::is_whitespace)
        {
            return Some((index, args));
        }
    }
    None
}

/// The line without its up to 3 leading spaces; None for indented code (4 spaces or a tab).
fn unindent(line: &str) -> Option<&str> {
    let spaces = line.bytes().take_while(|&b| b == b' ').count();
    let text = &line[spaces..];
    (spaces <= 3 && !text.starts_with('\t')).then_some(text)
}

/// The character and length of a code fence that `text` opens.
fn opening_fence(text: &str) -> Option<(char, usize)> {
    let fence_char = text.chars().next().filter(|&c| c == '`' || c == '~')?;
    let len = text.chars().take_while(|&c| c == fence_char).count();
    // A backtick fence's info string cannot hold a backtick (that is inline code).
    let info = &text[len..];
    (len >= 3 && !(fence_char == '`' && info.contains('`'))).then_some((fence_char, len))
}

/// Whether `line` closes a fence of `len` times `fence_char`.
fn closes_fence(line: &str, fence_char: char, len: usize) -> bool {
    let Some(text) = unindent(line) else {
        return false;
    };
    let run = text.chars().take_while(|&c| c == fence_char).count();
    run >= len && text[run..].chars().all(|c| c == ' ' || c == '\t')
}

/// The first word of `text` and what follows it. The word is empty when there is none.
fn next_word(text: &str) -> (&str, &str) {
    let text = text.trim_start();
    match text.find(char::is_whitespace) {
        Some(end) => text.split_at(end),
        None => (text, ""),
    }
}

/// The first word of the first non-blank line.
fn first_word<'a>(lines: &[&'a str]) -> Option<&'a str> {
    lines
        .iter()
        .map(|line| next_word(line).0)
        .find(|word| !word.is_empty())
}

/// The text without leading blank lines and trailing white space. The first line with text
/// keeps its indentation.
fn trim_blank(text: &str) -> &str {
    let text = text.trim_end();
    let start = match text.find(|c: char| !c.is_whitespace()) {
        Some(first) => text[..first].rfind('\n').map_or(0, |newline| newline + 1),
        None => text.len(),
    };
    &text[start..]
}

fn parse_args(args: &str, following: &[&str]) -> Result<Command, CommandError> {
    let (first, rest) = next_word(args);
    if let Some(&name) = SUBCOMMANDS
        .iter()
        .find(|name| name.eq_ignore_ascii_case(first))
    {
        return parse_subcommand(name, rest, following);
    }
    if !first.starts_with("--")
        && rest.trim().is_empty()
        && first_word(following).is_none()
        && let Some(suggestion) = mistyped_subcommand(first)
    {
        return Err(CommandError::UnknownCommand {
            word: first.to_string(),
            suggestion,
        });
    }
    parse_start(args, following).map(Command::Start)
}

fn parse_subcommand(
    name: &'static str,
    rest: &str,
    following: &[&str],
) -> Result<Command, CommandError> {
    let unexpected = |argument: &str| CommandError::UnexpectedArgument {
        command: name,
        argument: argument.to_string(),
    };
    let mut rest = rest;
    let mut step = None;
    if name == "execute" {
        let (word, after) = next_word(rest);
        if !word.is_empty() {
            step = Some(parse_step(word)?);
        }
        rest = after;
    }
    if let Some(argument) = first_word(&[rest]).or_else(|| first_word(following)) {
        return Err(unexpected(argument));
    }
    Ok(match name {
        "execute" => Command::Execute { step },
        "retry" => Command::Retry,
        "cancel" => Command::Cancel,
        "status" => Command::Status,
        _ => Command::Help,
    })
}

fn parse_step(word: &str) -> Result<StepNumber, CommandError> {
    word.parse().map_err(|error| {
        let reason = match error {
            StepNumberError::TooDeep(_) => format!(
                "is not a valid step number: steps are nested at most {} levels deep",
                crate::domain::step::MAX_STEP_DEPTH
            ),
            StepNumberError::Empty | StepNumberError::Malformed(_) => {
                "is not a valid step number: write it as dotted positive whole numbers, \
                 like `2.1`"
                    .to_string()
            }
        };
        CommandError::InvalidValue {
            option: "/runbook execute",
            value: word.to_string(),
            reason,
        }
    })
}

/// The subcommand a lone word most likely meant: at least 4 characters and at most 2 edits
/// away.
fn mistyped_subcommand(word: &str) -> Option<&'static str> {
    let word = word.to_lowercase();
    if word.chars().count() < 4 {
        return None;
    }
    closest(&word, &SUBCOMMANDS)
}

/// The candidate at the smallest edit distance from `word`, when it is at most 2. The first
/// one wins a tie.
fn closest(word: &str, candidates: &[&'static str]) -> Option<&'static str> {
    candidates
        .iter()
        .filter_map(|&candidate| distance_within(word, candidate, 2).map(|d| (d, candidate)))
        .min_by_key(|&(d, _)| d)
        .map(|(_, candidate)| candidate)
}

/// The Levenshtein distance between `a` and `b` in characters, when it is at most `max`.
fn distance_within(a: &str, b: &str, max: usize) -> Option<usize> {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    if a.len().abs_diff(b.len()) > max {
        return None;
    }
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        current[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        std::mem::swap(&mut previous, &mut current);
    }
    let distance = previous[b.len()];
    (distance <= max).then_some(distance)
}

/// The known option an unknown one most likely meant: the only option it starts with or is
/// the start of, else the closest within 2 edits. Case is ignored; a `=value` is not compared.
fn suggest_option(option: &str) -> Option<&'static str> {
    let name = option.split_once('=').map_or(option, |(name, _)| name);
    let name = name.to_lowercase();
    let mut related = OPTIONS
        .iter()
        .filter(|known| known.starts_with(name.as_str()) || name.starts_with(*known));
    if let (Some(&only), None) = (related.next(), related.next()) {
        return Some(only);
    }
    closest(&name, &OPTIONS)
}

/// The option a word with a typographic dash (`—stacked`, as phones type `--stacked`) meant.
fn dashed_option(word: &str) -> Option<&'static str> {
    let name = word
        .strip_prefix('\u{2014}')
        .or_else(|| word.strip_prefix('\u{2013}'))?;
    let name = name.split_once('=').map_or(name, |(name, _)| name);
    OPTIONS
        .iter()
        .copied()
        .find(|known| known.strip_prefix("--") == Some(name))
}

fn parse_start(args: &str, following: &[&str]) -> Result<StartOptions, CommandError> {
    let mut options = StartOptions::default();
    // The option that set the PR mode and the draft setting, for conflict messages.
    let mut mode_option: Option<&'static str> = None;
    let mut draft_option: Option<&'static str> = None;
    let mut rest = args.trim_start();
    loop {
        let (word, after) = next_word(rest);
        if word == "--" {
            rest = after;
            break;
        }
        if !word.starts_with("--") {
            if let Some(suggestion) = dashed_option(word) {
                return Err(CommandError::UnknownOption {
                    option: word.to_string(),
                    suggestion: Some(suggestion),
                });
            }
            break;
        }
        rest = after;
        match word {
            "--single" => set_mode(&mut options, &mut mode_option, PrMode::SinglePr, "--single")?,
            "--stacked" => set_mode(
                &mut options,
                &mut mode_option,
                PrMode::StackedPr,
                "--stacked",
            )?,
            "--manual" => set_mode(&mut options, &mut mode_option, PrMode::Manual, "--manual")?,
            "--draft" => set_draft(&mut options, &mut draft_option, true, "--draft")?,
            "--ready" => set_draft(&mut options, &mut draft_option, false, "--ready")?,
            "--plan" => options.plan_only = true,
            "--target" => {
                let (value, after) = next_word(rest);
                if value.is_empty() || value.starts_with("--") {
                    return Err(CommandError::MissingValue { option: "--target" });
                }
                set_target(&mut options, value)?;
                rest = after;
            }
            _ => match word.strip_prefix("--target=") {
                Some("") => return Err(CommandError::MissingValue { option: "--target" }),
                Some(value) => set_target(&mut options, value)?,
                None => {
                    return Err(CommandError::UnknownOption {
                        option: word.to_string(),
                        suggestion: suggest_option(word),
                    });
                }
            },
        }
    }
    let mut prompt = rest.trim_start().to_string();
    for line in following {
        prompt.push('\n');
        prompt.push_str(line);
    }
    options.prompt = trim_blank(&prompt).to_string();
    Ok(options)
}

fn set_mode(
    options: &mut StartOptions,
    given: &mut Option<&'static str>,
    mode: PrMode,
    option: &'static str,
) -> Result<(), CommandError> {
    set_once(given, option, options.pr_mode.is_some_and(|m| m != mode))?;
    options.pr_mode = Some(mode);
    Ok(())
}

fn set_draft(
    options: &mut StartOptions,
    given: &mut Option<&'static str>,
    draft: bool,
    option: &'static str,
) -> Result<(), CommandError> {
    set_once(given, option, options.draft.is_some_and(|d| d != draft))?;
    options.draft = Some(draft);
    Ok(())
}

/// Records `option` as the one given, or fails when an earlier, different one was.
fn set_once(
    given: &mut Option<&'static str>,
    option: &'static str,
    differs: bool,
) -> Result<(), CommandError> {
    match *given {
        Some(first) if differs => Err(CommandError::ConflictingOptions {
            first: first.to_string(),
            second: option.to_string(),
        }),
        _ => {
            *given = Some(option);
            Ok(())
        }
    }
}

fn set_target(options: &mut StartOptions, value: &str) -> Result<(), CommandError> {
    if let Err(error) = check_branch("--target", value) {
        return Err(CommandError::InvalidValue {
            option: "--target",
            value: value.to_string(),
            reason: error.problem,
        });
    }
    match &options.target {
        Some(first) if first != value => Err(CommandError::ConflictingOptions {
            first: format!("--target {first}"),
            second: format!("--target {value}"),
        }),
        _ => {
            options.target = Some(value.to_string());
            Ok(())
        }
    }
}

/// Text shown as inline code in a reply: shortened when long, control characters replaced,
/// and fenced with enough backticks to hold any it contains.
struct Code<'a>(&'a str);

impl fmt::Display for Code<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MAX_CHARS: usize = 60;
        let mut text: String = self
            .0
            .chars()
            .take(MAX_CHARS)
            .map(|c| if c.is_control() { '\u{fffd}' } else { c })
            .collect();
        if self.0.chars().nth(MAX_CHARS).is_some() {
            text.push('…');
        }
        let mut longest = 0;
        let mut run = 0;
        for c in text.chars() {
            run = if c == '`' { run + 1 } else { 0 };
            longest = longest.max(run);
        }
        let fence = "`".repeat(longest + 1);
        let pad = if text.starts_with('`') || text.ends_with('`') {
            " "
        } else {
            ""
        };
        write!(f, "{fence}{pad}{text}{pad}{fence}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The parsed command, failing the test when there is none or it is an error.
    fn ok(body: &str) -> Command {
        match parse(body) {
            Some(Ok(command)) => command,
            other => panic!("{body:?} gave {other:?}"),
        }
    }

    /// The options of a start command.
    fn start(body: &str) -> StartOptions {
        match ok(body) {
            Command::Start(options) => options,
            other => panic!("{body:?} gave {other:?}"),
        }
    }

    /// The error a command gives.
    fn err(body: &str) -> CommandError {
        match parse(body) {
            Some(Err(error)) => error,
            other => panic!("{body:?} gave {other:?}"),
        }
    }

    fn prompt(text: &str) -> StartOptions {
        StartOptions {
            prompt: text.to_string(),
            ..StartOptions::default()
        }
    }

    #[test]
    fn spec_example() {
        assert_eq!(
            start("/runbook --stacked --draft Upgrade all React deps to v19"),
            StartOptions {
                pr_mode: Some(PrMode::StackedPr),
                draft: Some(true),
                target: None,
                plan_only: false,
                prompt: "Upgrade all React deps to v19".into(),
            }
        );
    }

    #[test]
    fn every_option() {
        assert_eq!(start("/runbook --single x").pr_mode, Some(PrMode::SinglePr));
        assert_eq!(
            start("/runbook --stacked x").pr_mode,
            Some(PrMode::StackedPr)
        );
        assert_eq!(start("/runbook --manual x").pr_mode, Some(PrMode::Manual));
        assert_eq!(start("/runbook --draft x").draft, Some(true));
        assert_eq!(start("/runbook --ready x").draft, Some(false));
        assert!(start("/runbook --plan x").plan_only);
        assert_eq!(
            start("/runbook --target develop x").target.as_deref(),
            Some("develop")
        );
        assert_eq!(
            start("/runbook --target=release/1.2 x").target.as_deref(),
            Some("release/1.2")
        );
        assert_eq!(start("/runbook x"), prompt("x"));
    }

    #[test]
    fn options_combine() {
        assert_eq!(
            start("/runbook --manual --ready --plan --target=main Bump the MSRV"),
            StartOptions {
                pr_mode: Some(PrMode::Manual),
                draft: Some(false),
                target: Some("main".into()),
                plan_only: true,
                prompt: "Bump the MSRV".into(),
            }
        );
        // Repeating an option, or giving the same value twice, is fine.
        let options = start(
            "/runbook --single --single --draft --draft --target a --target=a --plan --plan x",
        );
        assert_eq!(options.pr_mode, Some(PrMode::SinglePr));
        assert_eq!(options.draft, Some(true));
        assert_eq!(options.target.as_deref(), Some("a"));
        assert!(options.plan_only);
        assert_eq!(options.prompt, "x");
    }

    #[test]
    fn options_stop_at_the_first_word() {
        let options = start("/runbook --plan Rename --draft to --wip everywhere");
        assert!(options.plan_only);
        assert_eq!(options.draft, None);
        assert_eq!(options.prompt, "Rename --draft to --wip everywhere");
        // A single dash is not an option either.
        assert_eq!(start("/runbook -x y"), prompt("-x y"));
    }

    #[test]
    fn double_dash_ends_the_options() {
        assert_eq!(
            start("/runbook -- --draft is a flag"),
            prompt("--draft is a flag")
        );
        let options = start("/runbook --stacked -- cancel the old cron job");
        assert_eq!(options.pr_mode, Some(PrMode::StackedPr));
        assert_eq!(options.prompt, "cancel the old cron job");
        assert_eq!(start("/runbook -- retry"), prompt("retry"));
        assert_eq!(start("/runbook -- retyr"), prompt("retyr"));
        assert_eq!(start("/runbook --"), prompt(""));
        // Only the first `--` is dropped.
        assert_eq!(start("/runbook -- -- x"), prompt("-- x"));
    }

    #[test]
    fn empty_prompt() {
        assert_eq!(start("/runbook"), StartOptions::default());
        assert_eq!(start("/runbook   \n\n  \n"), StartOptions::default());
        let options = start("/runbook --stacked");
        assert_eq!(options.pr_mode, Some(PrMode::StackedPr));
        assert_eq!(options.prompt, "");
    }

    #[test]
    fn multi_line_prompt_is_kept_verbatim() {
        let body = "/runbook --single Migrate the CI\n\
                    \n\
                    ## Execution Steps\n\
                    \n\
                    1. Install the tools\n\
                    \x20  ```sh\n\
                    \x20  cargo install cargo-nextest\n\
                    \x20  ```\n\
                    2. Run the tests\n\
                    ```sh\n\
                    cargo nextest run\n\
                    /runbook retry\n\
                    ```\n\
                    > a quote\n\
                    \x20     indented code\n\
                    \n\n";
        let options = start(body);
        assert_eq!(options.pr_mode, Some(PrMode::SinglePr));
        assert_eq!(
            options.prompt,
            "Migrate the CI\n\
             \n\
             ## Execution Steps\n\
             \n\
             1. Install the tools\n\
             \x20  ```sh\n\
             \x20  cargo install cargo-nextest\n\
             \x20  ```\n\
             2. Run the tests\n\
             ```sh\n\
             cargo nextest run\n\
             /runbook retry\n\
             ```\n\
             > a quote\n\
             \x20     indented code"
        );
    }

    #[test]
    fn prompt_on_the_following_lines() {
        let options = start("/runbook --plan\n\n## Execution Steps\n\n1. First\n");
        assert!(options.plan_only);
        assert_eq!(options.prompt, "## Execution Steps\n\n1. First");
        // Leading blank lines go; the first line with text keeps its indentation.
        assert_eq!(
            start("/runbook\n \n    fn main() {}\n").prompt,
            "    fn main() {}"
        );
    }

    #[test]
    fn crlf_line_endings() {
        let options = start("Hi!\r\n/runbook --draft\r\nFix the build\r\n\r\nThanks\r\n");
        assert_eq!(options.draft, Some(true));
        assert_eq!(options.prompt, "Fix the build\n\nThanks");
        assert_eq!(ok("/runbook retry\r\n"), Command::Retry);
        assert_eq!(ok("/runbook\r"), Command::Start(StartOptions::default()));
        assert_eq!(
            parse("```\r\n/runbook x\r\n```\r\n/runbook y\r\n"),
            Some(Ok(Command::Start(prompt("y"))))
        );
    }

    #[test]
    fn subcommands() {
        assert_eq!(ok("/runbook execute"), Command::Execute { step: None });
        assert_eq!(
            ok("/runbook execute 2.1"),
            Command::Execute {
                step: Some("2.1".parse().unwrap())
            }
        );
        assert_eq!(
            ok("/runbook execute 3  \n\n"),
            Command::Execute {
                step: Some(StepNumber::top(3))
            }
        );
        assert_eq!(ok("/runbook retry"), Command::Retry);
        assert_eq!(ok("/runbook cancel"), Command::Cancel);
        assert_eq!(ok("/runbook status"), Command::Status);
        assert_eq!(ok("/runbook help"), Command::Help);
        // Subcommands ignore case; options do not.
        assert_eq!(ok("/runbook RETRY"), Command::Retry);
        assert_eq!(
            ok("/runbook Execute 1"),
            Command::Execute {
                step: Some(StepNumber::top(1))
            }
        );
        assert_eq!(ok("/runbook\tstatus\t"), Command::Status);
        // A subcommand is only the first word.
        assert_eq!(
            start("/runbook --plan retry"),
            StartOptions {
                plan_only: true,
                prompt: "retry".into(),
                ..StartOptions::default()
            }
        );
    }

    #[test]
    fn bad_step_numbers() {
        for bad in [
            "abc",
            "0",
            "1.",
            "1..2",
            "01",
            "-1",
            "#2",
            "1.2.3.4.5.6.7.8.9",
        ] {
            let error = err(&format!("/runbook execute {bad}"));
            assert!(
                matches!(
                    &error,
                    CommandError::InvalidValue { option: "/runbook execute", value, .. }
                        if value == bad
                ),
                "{bad}: {error:?}"
            );
        }
        assert_eq!(
            err("/runbook execute two").to_string(),
            "`two` after `/runbook execute` is not a valid step number: write it as dotted \
             positive whole numbers, like `2.1`"
        );
        assert_eq!(
            err("/runbook execute 1.1.1.1.1.1.1.1.1").to_string(),
            "`1.1.1.1.1.1.1.1.1` after `/runbook execute` is not a valid step number: steps \
             are nested at most 8 levels deep"
        );
    }

    #[test]
    fn subcommands_take_no_more_arguments() {
        assert_eq!(
            err("/runbook cancel the old cron job"),
            CommandError::UnexpectedArgument {
                command: "cancel",
                argument: "the".into()
            }
        );
        assert_eq!(
            err("/runbook cancel the old cron job").to_string(),
            "`/runbook cancel` takes no arguments, but `the` follows it. To start a runbook \
             whose prompt begins with `cancel`, write `/runbook -- cancel …`"
        );
        assert_eq!(
            err("/runbook Help me"),
            CommandError::UnexpectedArgument {
                command: "help",
                argument: "me".into()
            }
        );
        assert_eq!(
            err("/runbook status\n\nplease"),
            CommandError::UnexpectedArgument {
                command: "status",
                argument: "please".into()
            }
        );
        assert_eq!(
            err("/runbook retry\n```\nlog\n```"),
            CommandError::UnexpectedArgument {
                command: "retry",
                argument: "```".into()
            }
        );
        assert_eq!(
            err("/runbook execute 2 now"),
            CommandError::UnexpectedArgument {
                command: "execute",
                argument: "now".into()
            }
        );
        assert_eq!(
            err("/runbook execute 2 now").to_string(),
            "`/runbook execute` takes at most a step number, like `/runbook execute 2.1`, but \
             `now` follows it. To start a runbook whose prompt begins with `execute`, write \
             `/runbook -- execute …`"
        );
        assert_eq!(
            err("/runbook execute\nthe plan"),
            CommandError::UnexpectedArgument {
                command: "execute",
                argument: "the".into()
            }
        );
    }

    #[test]
    fn mistyped_subcommands() {
        for (typed, meant) in [
            ("retyr", "retry"),
            ("Retyr", "retry"),
            ("execut", "execute"),
            ("exectue", "execute"),
            ("stauts", "status"),
            ("stats", "status"),
            ("cancle", "cancel"),
            ("cancell", "cancel"),
            ("hlep", "help"),
        ] {
            assert_eq!(
                err(&format!("/runbook {typed}\n\n")),
                CommandError::UnknownCommand {
                    word: typed.into(),
                    suggestion: meant
                },
                "{typed}"
            );
        }
        assert_eq!(
            err("/runbook retyr").to_string(),
            "unknown command `retyr`; did you mean `/runbook retry`? To start a runbook with \
             that prompt, write `/runbook -- retyr`"
        );
        // Short words, far words, more words or following lines make a prompt.
        assert_eq!(start("/runbook hep"), prompt("hep"));
        assert_eq!(start("/runbook deploy"), prompt("deploy"));
        assert_eq!(start("/runbook retyr the build"), prompt("retyr the build"));
        assert_eq!(
            start("/runbook stats\nfor the dashboard"),
            prompt("stats\nfor the dashboard")
        );
        assert_eq!(
            start("/runbook --plan retyr"),
            StartOptions {
                plan_only: true,
                prompt: "retyr".into(),
                ..StartOptions::default()
            }
        );
    }

    #[test]
    fn unknown_options() {
        for (typed, meant) in [
            ("--stack", Some("--stacked")),
            ("--draf", Some("--draft")),
            ("--single-pr", Some("--single")),
            ("--stacked-pr", Some("--stacked")),
            ("--Draft", Some("--draft")),
            ("--STACKED", Some("--stacked")),
            ("--man", Some("--manual")),
            ("--p", Some("--plan")),
            ("--plans", Some("--plan")),
            ("--reday", Some("--ready")),
            ("---single", Some("--single")),
            ("--targt", Some("--target")),
            ("--targt=main", Some("--target")),
            ("--Target=main", Some("--target")),
            ("--s", None),
            ("--force", None),
            ("--oneshot", None),
        ] {
            assert_eq!(
                err(&format!("/runbook --single {typed} x")),
                CommandError::UnknownOption {
                    option: typed.into(),
                    suggestion: meant
                },
                "{typed}"
            );
        }
        assert_eq!(
            err("/runbook --stack Upgrade").to_string(),
            "unknown option `--stack`; did you mean `--stacked`?"
        );
        assert_eq!(
            err("/runbook --force x").to_string(),
            "unknown option `--force`"
        );
    }

    #[test]
    fn typographic_dashes() {
        assert_eq!(
            err("/runbook \u{2014}stacked Upgrade"),
            CommandError::UnknownOption {
                option: "\u{2014}stacked".into(),
                suggestion: Some("--stacked")
            }
        );
        assert_eq!(
            err("/runbook --plan \u{2013}target=main x"),
            CommandError::UnknownOption {
                option: "\u{2013}target=main".into(),
                suggestion: Some("--target")
            }
        );
        // Only before the prompt, and only for a known option.
        assert_eq!(
            start("/runbook \u{2014}so it goes"),
            prompt("\u{2014}so it goes")
        );
        assert_eq!(start("/runbook x \u{2014}draft"), prompt("x \u{2014}draft"));
    }

    #[test]
    fn target_needs_a_value() {
        for body in [
            "/runbook --target",
            "/runbook --target   ",
            "/runbook --target\nmain",
            "/runbook --target --draft x",
            "/runbook --target -- x",
            "/runbook --target= x",
        ] {
            assert_eq!(
                err(body),
                CommandError::MissingValue { option: "--target" },
                "{body:?}"
            );
        }
        assert_eq!(
            err("/runbook --target").to_string(),
            "`--target` needs a branch name, like `--target main` or `--target=main`"
        );
    }

    #[test]
    fn target_must_be_a_branch_name() {
        for ok in ["main", "feature/x-1", "release-1.2", "a@b", "dev_2", "é"] {
            assert_eq!(
                start(&format!("/runbook --target {ok} x"))
                    .target
                    .as_deref(),
                Some(ok)
            );
        }
        for bad in [
            "a..b", "a~1", "a^", "a:b", "a?", "a*", "a[", "a\\b", "a@{1}", "-x", "/a", "a/", "a.",
            "a.lock", "a//b", ".hidden", "x/.y", "@", "a\u{7}b",
        ] {
            for body in [
                format!("/runbook --target {bad} x"),
                format!("/runbook --target={bad} x"),
            ] {
                let error = err(&body);
                assert!(
                    matches!(
                        &error,
                        CommandError::InvalidValue { option: "--target", value, .. } if value == bad
                    ),
                    "{body:?}: {error:?}"
                );
            }
        }
        assert_eq!(
            err("/runbook --target a..b x").to_string(),
            "`a..b` after `--target` is not a valid branch name: it must not contain `..` or \
             `//`"
        );
        assert!(matches!(
            err(&format!("/runbook --target {} x", "b".repeat(300))),
            CommandError::InvalidValue { .. }
        ));
    }

    #[test]
    fn conflicting_options() {
        let conflict = |first: &str, second: &str| CommandError::ConflictingOptions {
            first: first.into(),
            second: second.into(),
        };
        assert_eq!(
            err("/runbook --single --stacked x"),
            conflict("--single", "--stacked")
        );
        assert_eq!(
            err("/runbook --manual --plan --single x"),
            conflict("--manual", "--single")
        );
        assert_eq!(
            err("/runbook --stacked --stacked --manual"),
            conflict("--stacked", "--manual")
        );
        assert_eq!(
            err("/runbook --draft --ready x"),
            conflict("--draft", "--ready")
        );
        assert_eq!(
            err("/runbook --ready --draft x"),
            conflict("--ready", "--draft")
        );
        assert_eq!(
            err("/runbook --target main --target=dev x"),
            conflict("--target main", "--target dev")
        );
        assert_eq!(
            err("/runbook --draft --ready x").to_string(),
            "`--draft` and `--ready` cannot be used together; pick one"
        );
        assert_eq!(
            err("/runbook --target main --target dev").to_string(),
            "`--target main` and `--target dev` cannot be used together; pick one"
        );
    }

    #[test]
    fn the_first_error_wins() {
        assert_eq!(
            err("/runbook --stack --single --manual"),
            CommandError::UnknownOption {
                option: "--stack".into(),
                suggestion: Some("--stacked")
            }
        );
    }

    #[test]
    fn no_command() {
        for body in [
            "",
            "LGTM",
            "Run /runbook --stacked to do it",
            "/runbooks --draft x",
            "/runbook-x",
            "/runbook--draft",
            "/Runbook x",
            "`/runbook x`",
            "    /runbook x",
            "\t/runbook x",
            "  \t/runbook x",
            "> /runbook x",
            "   > /runbook x",
            ">/runbook x",
            "> quoted\n> /runbook x",
            "```\n/runbook x\n```",
            "~~~\n/runbook x\n~~~",
            "   ```sh\n/runbook x\n   ```",
            "````\n```\n/runbook x\n````",
            "~~~\n```\n/runbook x\n~~~",
            "```\n/runbook x",
            "- /runbook x",
        ] {
            assert_eq!(parse(body), None, "{body:?}");
        }
    }

    #[test]
    fn where_the_command_line_may_be() {
        assert_eq!(start("   /runbook x"), prompt("x"));
        assert_eq!(start("Thanks for the report.\n\n/runbook x"), prompt("x"));
        // Quoted, fenced and indented commands are skipped; the next real one counts.
        let body = "> /runbook cancel\n\
                    ```\n\
                    /runbook retry\n\
                    ```\n\
                    \x20   /runbook status\n\
                    /runbook --plan the real one";
        assert_eq!(
            start(body),
            StartOptions {
                plan_only: true,
                prompt: "the real one".into(),
                ..StartOptions::default()
            }
        );
        // A fence closes only with the same character, at least as long, and nothing after.
        assert_eq!(
            parse("````\n```\n/runbook a\n````\n/runbook b"),
            Some(Ok(Command::Start(prompt("b"))))
        );
        assert_eq!(
            parse("```\n``` x\n/runbook a\n```\n/runbook b"),
            Some(Ok(Command::Start(prompt("b"))))
        );
        assert_eq!(
            parse("~~~~\n~~~\n/runbook a\n~~~~~\n/runbook b"),
            Some(Ok(Command::Start(prompt("b"))))
        );
        assert_eq!(
            parse("```\n    ```\n/runbook a\n```\n/runbook b"),
            Some(Ok(Command::Start(prompt("b"))))
        );
        // Inline code with three backticks opens no fence.
        assert_eq!(start("```a``` b\n/runbook x"), prompt("x"));
        // A fence in a quote does not hide what follows the quote.
        assert_eq!(start("> ```\n/runbook x"), prompt("x"));
    }

    #[test]
    fn the_first_command_line_wins() {
        assert_eq!(
            start("/runbook --draft first\n/runbook retry"),
            StartOptions {
                draft: Some(true),
                prompt: "first\n/runbook retry".into(),
                ..StartOptions::default()
            }
        );
        assert_eq!(ok("/runbook status\n"), Command::Status);
        assert!(matches!(
            err("/runbook status\n/runbook --draft x"),
            CommandError::UnexpectedArgument {
                command: "status",
                ..
            }
        ));
    }

    #[test]
    fn prompt_or_falls_back_to_the_issue_body() {
        assert_eq!(prompt("Fix it").prompt_or(Some("Body")).unwrap(), "Fix it");
        assert_eq!(
            prompt("")
                .prompt_or(Some("\r\n Body\r\nmore \r\n\r\n"))
                .unwrap(),
            " Body\nmore"
        );
        assert_eq!(prompt("").prompt_or(None), Err(CommandError::NothingToDo));
        assert_eq!(
            prompt("").prompt_or(Some(" \r\n\t ")),
            Err(CommandError::NothingToDo)
        );
        assert_eq!(
            prompt(" \n ").prompt_or(Some("")),
            Err(CommandError::NothingToDo)
        );
        assert_eq!(
            CommandError::NothingToDo.to_string(),
            "there is nothing to do: write the task after `/runbook`, like `/runbook Upgrade \
             all React deps to v19`, or in the description of the issue or pull request"
        );
        let options = start("/runbook --stacked");
        assert_eq!(
            options.prompt_or(Some("From the issue")).unwrap(),
            "From the issue"
        );
    }

    #[test]
    fn messages_quote_awkward_tokens_safely() {
        assert_eq!(
            err("/runbook --a`b").to_string(),
            "unknown option ``--a`b``"
        );
        assert_eq!(
            err("/runbook --x`").to_string(),
            "unknown option `` --x` ``"
        );
        let long = format!("--{}", "y".repeat(1000));
        let message = err(&format!("/runbook {long}")).to_string();
        assert!(message.len() < 120, "{message}");
        assert!(message.ends_with("…`"), "{message}");
        assert_eq!(
            err("/runbook --a\u{1}b").to_string(),
            "unknown option `--a\u{fffd}b`"
        );
    }

    #[test]
    fn usage_lists_every_command_and_option() {
        for name in SUBCOMMANDS {
            assert!(USAGE.contains(&format!("`/runbook {name}")), "{name}");
        }
        for option in OPTIONS {
            assert!(USAGE.contains(&format!("`{option}")), "{option}");
        }
        assert!(USAGE.contains("`--`"));
    }

    #[test]
    fn distances() {
        assert_eq!(distance_within("retyr", "retry", 2), Some(2));
        assert_eq!(distance_within("kitten", "sitting", 3), Some(3));
        assert_eq!(distance_within("abc", "abc", 0), Some(0));
        assert_eq!(distance_within("", "help", 2), None);
        assert_eq!(distance_within("ééé", "éé", 1), Some(1));
    }

    #[test]
    fn huge_input() {
        let line = format!("/runbook --single {}", "word ".repeat(200_000));
        assert_eq!(start(&line).prompt.len(), 200_000 * 5 - 1);
        let token = format!("/runbook --{}", "x".repeat(1_000_000));
        assert!(matches!(
            err(&token),
            CommandError::UnknownOption {
                suggestion: None,
                ..
            }
        ));
        let fences = "```\n".repeat(100_000);
        assert_eq!(parse(&fences), None);
    }

    /// Pieces that exercise the parser's edge cases when strung together.
    fn piece() -> impl Strategy<Value = String> {
        prop_oneof![
            1 => Just("/runbook".to_string()),
            1 => Just("/runbook ".to_string()),
            20 => other_piece(),
        ]
    }

    /// Pieces without the command.
    fn other_piece() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("\n".to_string()),
            Just("\r\n".to_string()),
            Just("\r".to_string()),
            Just(" ".to_string()),
            Just("\t".to_string()),
            Just("```".to_string()),
            Just("~~~".to_string()),
            Just("> ".to_string()),
            Just("--".to_string()),
            Just("--target".to_string()),
            Just("--target=".to_string()),
            Just("--stacked ".to_string()),
            Just("--draft ".to_string()),
            Just("--ready ".to_string()),
            Just("\u{2014}".to_string()),
            Just("execute ".to_string()),
            Just("retyr".to_string()),
            Just("1.2".to_string()),
            Just("..".to_string()),
            Just("@{".to_string()),
            Just("`".to_string()),
            "\\PC{0,6}",
            any::<String>(),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn never_panics(body in any::<String>()) {
            if let Some(Err(error)) = parse(&body) {
                let _ = error.to_string();
            }
        }

        #[test]
        fn never_panics_on_pieces(pieces in prop::collection::vec(piece(), 0..24)) {
            let body = pieces.concat();
            match parse(&body) {
                Some(Ok(Command::Start(options))) => {
                    prop_assert_eq!(options.prompt.trim_end(), options.prompt.as_str());
                    prop_assert!(!options.prompt.starts_with('\n'));
                    let _ = options.prompt_or(Some(&body));
                }
                Some(Err(error)) => {
                    let _ = error.to_string();
                }
                _ => {}
            }
        }

        #[test]
        fn no_command_without_the_word(body in any::<String>()) {
            prop_assume!(!body.contains("/runbook"));
            prop_assert_eq!(parse(&body), None);
        }

        #[test]
        fn no_command_in_pieces_without_the_word(
            pieces in prop::collection::vec(other_piece(), 0..24),
        ) {
            let body = pieces.concat();
            prop_assume!(!body.contains("/runbook"));
            prop_assert_eq!(parse(&body), None);
        }

        #[test]
        fn a_plain_prompt_is_kept(text in "[a-zA-Z][a-zA-Z0-9 ,.]{0,40}") {
            prop_assume!(text.split_whitespace().count() > 1);
            let options = start(&format!("/runbook --single {text}"));
            prop_assert_eq!(options.prompt, text.trim_end());
        }
    }
}
