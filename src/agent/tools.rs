//! The tools the `openai` agent's model works with during a step (SPEC §7): read, write and
//! edit files, list and search the tree, run a command, finish.
//!
//! The set is small on purpose, after OpenHands, mini-swe-agent and aider: models use a few
//! well-described tools far more reliably than many. Every tool answers with text the model
//! reads; a refused or failed call is an answer too ([`ToolError`]), so the model can correct
//! itself on its next turn instead of the step failing.
//!
//! Boundaries:
//! - Every path goes through [`confine`]: absolute paths, `..` above the root and symbolic
//!   links leading outside the working tree are refused. Writes into a `.git` directory are
//!   refused as well: the engine owns git and commits the step's changes itself.
//! - Every answer is bounded ([`RESULT_CAP`] and the per-tool limits below), so a huge file, a
//!   chatty command or a search that matches everything cannot flood the model's context.
//! - `run_command` runs `sh -c` through [`SandboxCommand`] in the working tree: a scrubbed
//!   environment, its own process group, a deadline and an output cap, in the server's jail
//!   like the `script` agent's blocks (see [`super::jail`]: only the tree is there to write).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use super::sandbox::{Exit, SandboxCommand, confine};

/// Bytes of any single tool answer sent to the model (the answer's head is kept, with a
/// note). About 8k tokens: enough for a screenful of code, small next to a model's context.
pub const RESULT_CAP: usize = 32 * 1024;

/// Bytes of a command's output kept for the model: the tail, where errors are.
pub const COMMAND_OUTPUT_CAP: usize = 16 * 1024;

/// Longest a single `run_command` may take (less when the step has less time left): a build
/// or a test run fits, a command waiting for input that never comes does not stall the step.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// Files larger than this are not read or edited whole; the model is told to search them.
const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;

/// Entries in one `list_files` answer.
const MAX_LIST_ENTRIES: usize = 400;

/// Matches in one `search` answer, characters of a matching line shown, files looked at, and
/// the largest file searched: together they bound the time and size of a search.
const MAX_SEARCH_MATCHES: usize = 100;
const MAX_MATCH_LINE_CHARS: usize = 200;
const MAX_SEARCH_FILES: usize = 20_000;
const MAX_SEARCH_FILE_BYTES: u64 = 1024 * 1024;

/// Compiled-regex size limit: a pathological pattern fails to compile instead of eating
/// memory (the `regex` crate never backtracks, so matching time is linear).
const REGEX_SIZE_LIMIT: usize = 1024 * 1024;

/// A tool call the model made, with its arguments checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolCall {
    ReadFile {
        path: String,
        start_line: Option<usize>,
        end_line: Option<usize>,
    },
    WriteFile {
        path: String,
        content: String,
    },
    EditFile {
        path: String,
        old_str: String,
        new_str: String,
    },
    ListFiles {
        path: Option<String>,
    },
    Search {
        pattern: String,
        path: Option<String>,
    },
    RunCommand {
        command: String,
    },
    Finish {
        summary: String,
    },
}

/// A tool call that was refused or failed; its message is the answer the model gets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ToolError(pub String);

impl ToolError {
    fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// The names of the tools, as the model calls them.
pub const TOOL_NAMES: [&str; 7] = [
    "read_file",
    "write_file",
    "edit_file",
    "list_files",
    "search",
    "run_command",
    "finish",
];

/// The tools' descriptions and JSON-schema parameters, as the chat-completions `tools` field
/// wants them: `(name, description, parameters)`. The descriptions carry the rules a model
/// needs to call them right the first time (exact `old_str`, relative paths).
pub fn definitions() -> Vec<(&'static str, &'static str, Value)> {
    let path = |what: &str| json!({"type": "string", "description": what});
    vec![
        (
            "read_file",
            "Read a text file of the working tree. Returns its exact content (no line numbers \
             added). Large files are cut; read further with start_line/end_line (1-based, \
             inclusive).",
            json!({
                "type": "object",
                "properties": {
                    "path": path("Path relative to the root of the working tree."),
                    "start_line": {"type": "integer", "minimum": 1},
                    "end_line": {"type": "integer", "minimum": 1}
                },
                "required": ["path"]
            }),
        ),
        (
            "write_file",
            "Create a file or replace its whole content. Missing parent directories are \
             created. Prefer edit_file to change part of an existing file.",
            json!({
                "type": "object",
                "properties": {
                    "path": path("Path relative to the root of the working tree."),
                    "content": {"type": "string", "description": "The file's complete new content."}
                },
                "required": ["path", "content"]
            }),
        ),
        (
            "edit_file",
            "Replace one piece of text in a file. old_str must occur exactly once in the file, \
             copied exactly (whitespace and indentation included); add surrounding lines to \
             make it unique. new_str replaces it (empty to delete it).",
            json!({
                "type": "object",
                "properties": {
                    "path": path("Path relative to the root of the working tree."),
                    "old_str": {"type": "string", "description": "The exact text to replace."},
                    "new_str": {"type": "string", "description": "The text to put in its place."}
                },
                "required": ["path", "old_str", "new_str"]
            }),
        ),
        (
            "list_files",
            "List the files and directories under a directory of the working tree, \
             recursively (directories end with /; .git is skipped). The listing is bounded: \
             list a subdirectory to see more.",
            json!({
                "type": "object",
                "properties": {
                    "path": path("Directory relative to the root; the root when omitted.")
                }
            }),
        ),
        (
            "search",
            "Search file contents for a regular expression (Rust regex syntax; a pattern that \
             is not a valid regex is searched as plain text). Returns `path:line: text` for \
             each matching line, bounded.",
            json!({
                "type": "object",
                "properties": {
                    "pattern": {"type": "string"},
                    "path": path("File or directory to search, relative to the root; the whole tree when omitted.")
                },
                "required": ["pattern"]
            }),
        ),
        (
            "run_command",
            "Run a shell command (sh -c) in the root of the working tree, e.g. to build or \
             test. Returns its exit status and the tail of its output (stdout and stderr \
             together). No network credentials, no terminal, no input; long commands are \
             stopped. Do not commit, push or switch branches.",
            json!({
                "type": "object",
                "properties": {
                    "command": {"type": "string"}
                },
                "required": ["command"]
            }),
        ),
        (
            "finish",
            "Call when the step is done, with a one-line summary of what changed. Nothing is \
             done after this call.",
            json!({
                "type": "object",
                "properties": {
                    "summary": {"type": "string", "description": "One line: what this step changed."}
                },
                "required": ["summary"]
            }),
        ),
    ]
}

#[derive(Deserialize)]
struct PathArgs {
    path: String,
    #[serde(default)]
    start_line: Option<usize>,
    #[serde(default)]
    end_line: Option<usize>,
}

#[derive(Deserialize)]
struct WriteArgs {
    path: String,
    content: String,
}

#[derive(Deserialize)]
struct EditArgs {
    path: String,
    old_str: String,
    new_str: String,
}

#[derive(Deserialize)]
struct ListArgs {
    #[serde(default)]
    path: Option<String>,
}

#[derive(Deserialize)]
struct SearchArgs {
    pattern: String,
    #[serde(default)]
    path: Option<String>,
}

#[derive(Deserialize)]
struct CommandArgs {
    command: String,
}

#[derive(Deserialize)]
struct FinishArgs {
    #[serde(default)]
    summary: String,
}

/// Checks a tool call's name and arguments (a JSON object in a string, as the API sends it).
/// Unknown fields are ignored: models add them, and they change nothing.
pub fn parse_call(name: &str, arguments: &str) -> Result<ToolCall, ToolError> {
    // Some servers send "" for a call without arguments.
    let arguments = if arguments.trim().is_empty() {
        "{}"
    } else {
        arguments
    };
    fn args<T: serde::de::DeserializeOwned>(name: &str, arguments: &str) -> Result<T, ToolError> {
        serde_json::from_str(arguments).map_err(|err| {
            ToolError::new(format!(
                "the arguments of {name} are not valid: {err}. Send a JSON object with the \
                 parameters the tool describes."
            ))
        })
    }
    Ok(match name {
        "read_file" => {
            let a: PathArgs = args(name, arguments)?;
            ToolCall::ReadFile {
                path: a.path,
                start_line: a.start_line,
                end_line: a.end_line,
            }
        }
        "write_file" => {
            let a: WriteArgs = args(name, arguments)?;
            ToolCall::WriteFile {
                path: a.path,
                content: a.content,
            }
        }
        "edit_file" => {
            let a: EditArgs = args(name, arguments)?;
            ToolCall::EditFile {
                path: a.path,
                old_str: a.old_str,
                new_str: a.new_str,
            }
        }
        "list_files" => ToolCall::ListFiles {
            path: args::<ListArgs>(name, arguments)?.path,
        },
        "search" => {
            let a: SearchArgs = args(name, arguments)?;
            ToolCall::Search {
                pattern: a.pattern,
                path: a.path,
            }
        }
        "run_command" => ToolCall::RunCommand {
            command: args::<CommandArgs>(name, arguments)?.command,
        },
        "finish" => ToolCall::Finish {
            summary: args::<FinishArgs>(name, arguments)?.summary,
        },
        other => {
            return Err(ToolError::new(format!(
                "there is no tool named `{other}`; the tools are {}",
                TOOL_NAMES.join(", ")
            )));
        }
    })
}

/// Resolves a path the model gave inside the working tree, or refuses it with a message the
/// model can act on.
fn resolve(root: &Path, path: &str) -> Result<PathBuf, ToolError> {
    confine(root, Path::new(path.trim())).map_err(|err| ToolError::new(err.to_string()))
}

/// The path of `full` relative to `root`, for answers (`.` for the root itself).
fn relative(root: &Path, full: &Path) -> String {
    match full.strip_prefix(root) {
        Ok(rel) if rel.as_os_str().is_empty() => ".".to_string(),
        Ok(rel) => rel.to_string_lossy().into_owned(),
        Err(_) => full.to_string_lossy().into_owned(),
    }
}

/// Refuses writes into a `.git` directory: the engine owns the repository's history and
/// configuration (a changed `.git/config` or hook would outlive the step).
fn refuse_git_dir(root: &Path, full: &Path, requested: &str) -> Result<(), ToolError> {
    let inside = full.strip_prefix(root).unwrap_or(full);
    if inside.components().any(|c| c.as_os_str() == ".git") {
        return Err(ToolError::new(format!(
            "`{requested}` is inside a .git directory: git is handled for you, change only the \
             project's files"
        )));
    }
    Ok(())
}

/// Reads a text file whole, with errors the model understands.
fn read_text(full: &Path, requested: &str) -> Result<String, ToolError> {
    let meta = std::fs::metadata(full).map_err(|err| match err.kind() {
        std::io::ErrorKind::NotFound => ToolError::new(format!(
            "`{requested}` does not exist (list_files shows what does)"
        )),
        _ => ToolError::new(format!("cannot read `{requested}`: {err}")),
    })?;
    if meta.is_dir() {
        return Err(ToolError::new(format!(
            "`{requested}` is a directory: use list_files to see what is in it"
        )));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(ToolError::new(format!(
            "`{requested}` is {} bytes, too large to handle whole: use search to find what you \
             need in it",
            meta.len()
        )));
    }
    let bytes = std::fs::read(full)
        .map_err(|err| ToolError::new(format!("cannot read `{requested}`: {err}")))?;
    String::from_utf8(bytes)
        .map_err(|_| ToolError::new(format!("`{requested}` is not a UTF-8 text file")))
}

/// Runs one of the file tools (everything but `run_command` and `finish`), synchronously:
/// callers run it on a blocking thread. `root` is the canonical working tree.
pub fn run_file_tool(root: &Path, call: &ToolCall) -> Result<String, ToolError> {
    let answer = match call {
        ToolCall::ReadFile {
            path,
            start_line,
            end_line,
        } => read_file(root, path, *start_line, *end_line)?,
        ToolCall::WriteFile { path, content } => write_file(root, path, content)?,
        ToolCall::EditFile {
            path,
            old_str,
            new_str,
        } => edit_file(root, path, old_str, new_str)?,
        ToolCall::ListFiles { path } => list_files(root, path.as_deref().unwrap_or("."))?,
        ToolCall::Search { pattern, path } => {
            search(root, pattern, path.as_deref().unwrap_or("."))?
        }
        ToolCall::RunCommand { .. } | ToolCall::Finish { .. } => {
            return Err(ToolError::new("not a file tool"));
        }
    };
    Ok(cap_head(answer, RESULT_CAP))
}

fn read_file(
    root: &Path,
    path: &str,
    start_line: Option<usize>,
    end_line: Option<usize>,
) -> Result<String, ToolError> {
    let full = resolve(root, path)?;
    let text = read_text(&full, path)?;
    if text.is_empty() {
        return Ok(format!("[`{path}` is empty]"));
    }
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let total = lines.len();
    let first = start_line.unwrap_or(1).max(1);
    if first > total {
        return Err(ToolError::new(format!(
            "`{path}` has {total} lines; start_line {first} is past its end"
        )));
    }
    let last = end_line.unwrap_or(total).clamp(first, total);
    let whole = first == 1 && last == total;
    let mut out = String::new();
    let mut shown_last = first - 1;
    for line in &lines[first - 1..last] {
        // Leave room for the note; always show at least one line (cut if it is huge).
        if out.len() + line.len() > RESULT_CAP - 200 && shown_last >= first {
            break;
        }
        out.push_str(line);
        shown_last += 1;
    }
    if whole && shown_last == total {
        return Ok(out);
    }
    if !out.ends_with('\n') {
        out.push('\n');
    }
    let more = if shown_last < total {
        format!("; read more with start_line={}", shown_last + 1)
    } else {
        String::new()
    };
    let _ = write!(
        out,
        "[… lines {first}–{shown_last} of {total} of `{path}` shown{more} …]"
    );
    Ok(out)
}

fn write_file(root: &Path, path: &str, content: &str) -> Result<String, ToolError> {
    let full = resolve(root, path)?;
    refuse_git_dir(root, &full, path)?;
    if full == root || full.is_dir() {
        return Err(ToolError::new(format!(
            "`{path}` is a directory: give the path of a file"
        )));
    }
    let existed = full.exists();
    if let Some(parent) = full.parent() {
        std::fs::create_dir_all(parent).map_err(|err| {
            ToolError::new(format!("cannot create the directories of `{path}`: {err}"))
        })?;
    }
    std::fs::write(&full, content)
        .map_err(|err| ToolError::new(format!("cannot write `{path}`: {err}")))?;
    Ok(format!(
        "{} `{}` ({} bytes)",
        if existed { "replaced" } else { "created" },
        relative(root, &full),
        content.len()
    ))
}

fn edit_file(root: &Path, path: &str, old_str: &str, new_str: &str) -> Result<String, ToolError> {
    let full = resolve(root, path)?;
    refuse_git_dir(root, &full, path)?;
    if old_str.is_empty() {
        return Err(ToolError::new(
            "old_str is empty: give the exact text to replace (use write_file to create a file)",
        ));
    }
    let text = read_text(&full, path)?;
    let count = text.matches(old_str).count();
    match count {
        0 => Err(ToolError::new(format!(
            "old_str does not occur in `{path}`: nothing was changed. Read the file and copy \
             the text exactly, whitespace and indentation included"
        ))),
        1 => {
            let at = text.find(old_str).unwrap_or(0);
            let line = text[..at].matches('\n').count() + 1;
            let edited = text.replacen(old_str, new_str, 1);
            std::fs::write(&full, &edited)
                .map_err(|err| ToolError::new(format!("cannot write `{path}`: {err}")))?;
            Ok(format!(
                "edited `{}`: replaced {} line(s) at line {line} with {} line(s)",
                relative(root, &full),
                old_str.lines().count().max(1),
                new_str.lines().count()
            ))
        }
        n => Err(ToolError::new(format!(
            "old_str occurs {n} times in `{path}`: nothing was changed. Include more of the \
             surrounding lines so that it occurs exactly once"
        ))),
    }
}

/// Walks the tree under `start` depth-first (each directory right before its contents), in
/// name order, skipping `.git` and never following symbolic links, calling `visit` with each
/// entry until it returns `false`.
fn walk(start: &Path, visit: &mut dyn FnMut(&Path, &std::fs::FileType) -> bool) {
    fn sorted_entries(dir: &Path) -> std::vec::IntoIter<(PathBuf, std::fs::FileType)> {
        let mut entries: Vec<(PathBuf, std::fs::FileType)> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .filter_map(|entry| {
                let entry = entry.ok()?;
                Some((entry.path(), entry.file_type().ok()?))
            })
            .filter(|(path, _)| path.file_name().is_none_or(|name| name != ".git"))
            .collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        entries.into_iter()
    }
    let mut stack = vec![sorted_entries(start)];
    while let Some(level) = stack.last_mut() {
        let Some((path, file_type)) = level.next() else {
            stack.pop();
            continue;
        };
        if !visit(&path, &file_type) {
            return;
        }
        if file_type.is_dir() {
            stack.push(sorted_entries(&path));
        }
    }
}

fn list_files(root: &Path, path: &str) -> Result<String, ToolError> {
    let full = resolve(root, path)?;
    let meta = std::fs::metadata(&full).map_err(|err| match err.kind() {
        std::io::ErrorKind::NotFound => ToolError::new(format!("`{path}` does not exist")),
        _ => ToolError::new(format!("cannot list `{path}`: {err}")),
    })?;
    if !meta.is_dir() {
        return Ok(format!("{} (a file)", relative(root, &full)));
    }
    let mut lines = Vec::new();
    let mut truncated = false;
    walk(&full, &mut |entry, file_type| {
        if lines.len() >= MAX_LIST_ENTRIES {
            truncated = true;
            return false;
        }
        let rel = relative(root, entry);
        lines.push(if file_type.is_dir() {
            format!("{rel}/")
        } else if file_type.is_symlink() {
            format!("{rel} (symbolic link)")
        } else {
            rel
        });
        true
    });
    if lines.is_empty() {
        return Ok(format!("[`{path}` is empty]"));
    }
    let mut out = lines.join("\n");
    if truncated {
        let _ = write!(
            out,
            "\n[… listing stopped at {MAX_LIST_ENTRIES} entries: list a subdirectory to see more …]"
        );
    }
    Ok(out)
}

fn search(root: &Path, pattern: &str, path: &str) -> Result<String, ToolError> {
    if pattern.is_empty() {
        return Err(ToolError::new("the pattern is empty"));
    }
    let full = resolve(root, path)?;
    let build = |p: &str| {
        regex::RegexBuilder::new(p)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
    };
    let (regex, note) = match build(pattern) {
        Ok(regex) => (regex, String::new()),
        Err(_) => (
            build(&regex::escape(pattern))
                .map_err(|err| ToolError::new(format!("cannot search for this pattern: {err}")))?,
            " (not a valid regular expression: searched as plain text)".to_string(),
        ),
    };
    let meta = std::fs::metadata(&full).map_err(|err| match err.kind() {
        std::io::ErrorKind::NotFound => ToolError::new(format!("`{path}` does not exist")),
        _ => ToolError::new(format!("cannot search `{path}`: {err}")),
    })?;

    let mut matches = Vec::new();
    let mut files_seen = 0usize;
    let mut stopped = None;
    let mut search_file = |file: &Path| -> bool {
        files_seen += 1;
        if files_seen > MAX_SEARCH_FILES {
            stopped = Some(format!("stopped after {MAX_SEARCH_FILES} files"));
            return false;
        }
        let too_big = std::fs::metadata(file).map_or(true, |m| m.len() > MAX_SEARCH_FILE_BYTES);
        if too_big {
            return true;
        }
        let Ok(bytes) = std::fs::read(file) else {
            return true;
        };
        // Binary files (a NUL byte, as git decides) and non-UTF-8 text are skipped.
        if bytes.contains(&0) {
            return true;
        }
        let Ok(text) = std::str::from_utf8(&bytes) else {
            return true;
        };
        for (i, line) in text.lines().enumerate() {
            if regex.is_match(line) {
                if matches.len() >= MAX_SEARCH_MATCHES {
                    stopped = Some(format!(
                        "stopped at {MAX_SEARCH_MATCHES} matches: narrow the pattern or the path"
                    ));
                    return false;
                }
                let shown: String = line.trim_end().chars().take(MAX_MATCH_LINE_CHARS).collect();
                let cut = if shown.len() < line.trim_end().len() {
                    " …"
                } else {
                    ""
                };
                matches.push(format!("{}:{}: {shown}{cut}", relative(root, file), i + 1));
            }
        }
        true
    };
    if meta.is_dir() {
        walk(&full, &mut |entry, file_type| {
            !file_type.is_file() || search_file(entry)
        });
    } else {
        search_file(&full);
    }
    if matches.is_empty() {
        return Ok(format!("no matches for `{pattern}` in `{path}`{note}"));
    }
    let mut out = matches.join("\n");
    if let Some(reason) = stopped {
        let _ = write!(out, "\n[… search {reason} …]");
    }
    out.push_str(&note);
    Ok(out)
}

/// Runs `command` with `sh -c` in the working tree through the sandbox, for at most
/// `timeout`. The answer starts with how the command ended, then the tail of its output;
/// with it, the CPU time the command used, in milliseconds (0 when it could not start).
pub async fn run_command(
    root: &Path,
    command: &str,
    timeout: Duration,
    jail: &super::jail::Jail,
) -> (Result<String, ToolError>, u64) {
    if command.trim().is_empty() {
        return (Err(ToolError::new("the command is empty")), 0);
    }
    let run = match SandboxCommand::new("sh", root)
        .arg("-c")
        .arg(command)
        .timeout(timeout)
        .jail(jail)
        .output_cap(COMMAND_OUTPUT_CAP)
        .run()
        .await
    {
        Ok(run) => run,
        Err(err) => {
            let problem = format!("the command could not be started: {err}");
            return (Err(ToolError::new(problem)), 0);
        }
    };
    let status = match run.exit {
        Exit::TimedOut => format!(
            "the command ran out of time after {} and was stopped",
            // Whole milliseconds: no sub-millisecond noise in the message.
            humantime::format_duration(Duration::from_millis(
                timeout.as_millis().try_into().unwrap_or(u64::MAX)
            ))
        ),
        exit => format!("the command {exit}"),
    };
    let output = run.output.text();
    let answer = if output.is_empty() {
        format!("{status} (no output)")
    } else {
        format!("{status}; output:\n{output}")
    };
    (Ok(answer), run.cpu_ms())
}

/// `text` cut to its first `cap` bytes (at a character boundary), with a note when cut.
pub fn cap_head(text: String, cap: usize) -> String {
    if text.len() <= cap {
        return text;
    }
    let mut cut = cap;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!(
        "{}\n[… {} more bytes not shown …]",
        &text[..cut],
        text.len() - cut
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        (dir, root)
    }

    #[test]
    fn calls_are_parsed_with_clear_errors() {
        assert_eq!(
            parse_call("list_files", "").unwrap(),
            ToolCall::ListFiles { path: None }
        );
        assert_eq!(
            parse_call("read_file", r#"{"path":"a","extra":1}"#).unwrap(),
            ToolCall::ReadFile {
                path: "a".into(),
                start_line: None,
                end_line: None
            }
        );
        let err = parse_call("write_file", r#"{"path":"a"}"#).unwrap_err();
        assert!(
            err.0.contains("write_file") && err.0.contains("content"),
            "{err}"
        );
        let err = parse_call("edit_file", "{not json").unwrap_err();
        assert!(err.0.contains("not valid"), "{err}");
        let err = parse_call("delete_file", "{}").unwrap_err();
        assert!(err.0.contains("no tool named `delete_file`") && err.0.contains("edit_file"));
        assert_eq!(definitions().len(), TOOL_NAMES.len());
        for ((name, _, schema), expected) in definitions().iter().zip(TOOL_NAMES) {
            assert_eq!(*name, expected);
            assert_eq!(schema["type"], "object");
        }
    }

    #[test]
    fn read_file_windows_and_notes() {
        let (_dir, root) = tree();
        let text: String = (1..=5000).map(|n| format!("line {n}\n")).collect();
        std::fs::write(root.join("big.txt"), &text).unwrap();
        std::fs::write(root.join("small.txt"), "a\nb").unwrap();
        std::fs::write(root.join("empty.txt"), "").unwrap();
        assert_eq!(read_file(&root, "small.txt", None, None).unwrap(), "a\nb");
        assert_eq!(
            read_file(&root, "small.txt", Some(2), None).unwrap(),
            "b\n[… lines 2–2 of 2 of `small.txt` shown …]"
        );
        assert_eq!(
            read_file(&root, "empty.txt", None, None).unwrap(),
            "[`empty.txt` is empty]"
        );
        let head = read_file(&root, "big.txt", None, None).unwrap();
        assert!(head.starts_with("line 1\nline 2\n"));
        assert!(head.len() <= RESULT_CAP);
        assert!(
            head.contains("of 5000 of `big.txt` shown; read more with start_line="),
            "{}",
            &head[head.len() - 200..]
        );
        let window = read_file(&root, "big.txt", Some(4999), Some(9999)).unwrap();
        assert_eq!(
            window,
            "line 4999\nline 5000\n[… lines 4999–5000 of 5000 of `big.txt` shown …]"
        );
        assert!(
            read_file(&root, "big.txt", Some(6000), None)
                .unwrap_err()
                .0
                .contains("5000 lines")
        );
        assert!(
            read_file(&root, "missing", None, None)
                .unwrap_err()
                .0
                .contains("does not exist")
        );
        assert!(
            read_file(&root, ".", None, None)
                .unwrap_err()
                .0
                .contains("directory")
        );
        std::fs::write(root.join("bin"), [0xff, 0xfe]).unwrap();
        assert!(
            read_file(&root, "bin", None, None)
                .unwrap_err()
                .0
                .contains("UTF-8")
        );
    }

    #[test]
    fn writes_into_git_are_refused() {
        let (_dir, root) = tree();
        std::fs::create_dir(root.join(".git")).unwrap();
        let err = write_file(&root, ".git/hooks/pre-commit", "x").unwrap_err();
        assert!(err.0.contains(".git"), "{err}");
        assert!(!root.join(".git/hooks").exists());
        assert!(write_file(&root, "sub/.git/config", "x").is_err());
        assert_eq!(
            write_file(&root, "a/b/c.txt", "hi").unwrap(),
            "created `a/b/c.txt` (2 bytes)"
        );
        assert_eq!(
            write_file(&root, "./a/b/c.txt", "hello").unwrap(),
            "replaced `a/b/c.txt` (5 bytes)"
        );
        assert!(
            write_file(&root, "a", "x")
                .unwrap_err()
                .0
                .contains("directory")
        );
    }

    #[test]
    fn listing_and_search_skip_git_and_are_bounded() {
        let (_dir, root) = tree();
        std::fs::create_dir_all(root.join(".git/objects")).unwrap();
        std::fs::write(root.join(".git/config"), "needle").unwrap();
        std::fs::create_dir_all(root.join("src/deep")).unwrap();
        std::fs::write(root.join("src/lib.rs"), "fn needle() {}\nfn other() {}\n").unwrap();
        std::fs::write(root.join("src/deep/x.rs"), "// needle here\n").unwrap();
        std::fs::write(root.join("blob.bin"), b"needle\0").unwrap();
        for i in 0..500 {
            std::fs::write(root.join(format!("src/deep/f{i:03}.txt")), "needle\n").unwrap();
        }
        let listing = list_files(&root, ".").unwrap();
        assert!(
            listing.starts_with("blob.bin\nsrc/\nsrc/deep/\nsrc/deep/f000.txt\n"),
            "{listing}"
        );
        assert!(!listing.contains(".git"));
        assert!(listing.ends_with("list a subdirectory to see more …]"));
        assert_eq!(
            list_files(&root, "src/lib.rs").unwrap(),
            "src/lib.rs (a file)"
        );

        let found = search(&root, r"fn \w+\(", "src/lib.rs").unwrap();
        assert_eq!(
            found,
            "src/lib.rs:1: fn needle() {}\nsrc/lib.rs:2: fn other() {}"
        );
        let all = search(&root, "needle", ".").unwrap();
        assert!(!all.contains(".git") && !all.contains("blob.bin"));
        assert!(
            all.ends_with("stopped at 100 matches: narrow the pattern or the path …]"),
            "{all}"
        );
        let literal = search(&root, "needle(", "src").unwrap();
        assert!(
            literal.starts_with("src/lib.rs:1: fn needle() {}"),
            "{literal}"
        );
        assert!(literal.ends_with("searched as plain text)"));
        assert!(
            search(&root, "absent", ".")
                .unwrap()
                .starts_with("no matches")
        );
    }

    #[test]
    fn heads_are_capped_at_a_character_boundary() {
        assert_eq!(cap_head("short".into(), 10), "short");
        assert_eq!(
            cap_head("ab€cd".into(), 3),
            "ab\n[… 5 more bytes not shown …]"
        );
    }
}
