//! What a GraphQL request may cost, decided before async-graphql validates it.
//!
//! async-graphql's validation walks a document with every fragment spread expanded in place:
//! a fragment that spreads the next one ten times, seven levels deep, is 674 bytes of text and
//! ten million fields to visit (2 s of a worker thread). The depth and complexity limits do
//! not help, since they are computed by that same walk. So every request goes through
//! [`check`] first, whose cost is linear in the size of the text:
//!
//! - the text is at most [`MAX_QUERY_BYTES`] and its brackets nest at most [`MAX_NESTING`]
//!   deep (checked on the bytes, before the parser, which recurses);
//! - the parsed document has at most [`MAX_FRAGMENTS`] fragments and no fragment spreads
//!   itself (directly or not);
//! - counted with every spread expanded — but computed once per fragment, so the count costs
//!   what the text costs — it selects at most [`MAX_SELECTIONS`] fields and at most
//!   [`MAX_ALIASES`] of them under an alias.
//!
//! A request that passes is handed to async-graphql already parsed, with its [`Cost`]: the
//! number of top-level fields (response keys) the executed operation runs, which the caller
//! takes from the token's rate limit — so 900 aliased `createRunbook`s in one request cost
//! what 900 requests cost.

use std::collections::{HashMap, HashSet};

use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, OperationDefinition, Selection, SelectionSet,
};
use async_graphql::parser::{Positioned, parse_query};

/// Longest query text accepted. Data queries are a few hundred bytes, GraphiQL's
/// introspection query about 1.5 KiB; long values such as prompts belong in `variables`.
pub const MAX_QUERY_BYTES: usize = 16 * 1024;

/// Deepest nesting of `{`, `[` and `(` in the text (the deepest useful query nests about 20).
pub const MAX_NESTING: usize = 48;

/// Most fragment definitions in one document (the introspection query has 3).
pub const MAX_FRAGMENTS: usize = 32;

/// Most fields selected, with fragment spreads expanded (the introspection query selects
/// about 70, a runbook with every field on it about 60).
pub const MAX_SELECTIONS: u64 = 1000;

/// Most aliased fields, with fragment spreads expanded.
pub const MAX_ALIASES: u64 = 100;

/// Why a request was refused before validation (answered as `bad-request`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error(
        "the query is {0} bytes long; at most {MAX_QUERY_BYTES} are accepted (pass long values \
         such as prompts in `variables`)"
    )]
    TooLong(usize),
    #[error("the query nests brackets more than {MAX_NESTING} deep")]
    TooDeep,
    #[error("the query defines {0} fragments; at most {MAX_FRAGMENTS} are accepted")]
    TooManyFragments(usize),
    #[error("fragment `{0}` spreads itself")]
    FragmentCycle(String),
    #[error("the query selects more than {MAX_SELECTIONS} fields once its fragments are expanded")]
    TooManySelections,
    #[error("the query has more than {MAX_ALIASES} aliased fields once its fragments are expanded")]
    TooManyAliases,
}

/// What a request that passed [`check`] will run.
#[derive(Debug)]
pub struct Checked {
    /// The parsed document, or `None` when it does not parse (async-graphql then reports the
    /// syntax error as it always does).
    pub document: Option<ExecutableDocument>,
    /// Top-level fields of the operation to be executed (at least 1): what the request takes
    /// from the token's rate limit.
    pub cost: u32,
}

/// Checks a query's text and document against the limits above.
pub fn check(query: &str, operation_name: Option<&str>) -> Result<Checked, LimitError> {
    if query.len() > MAX_QUERY_BYTES {
        return Err(LimitError::TooLong(query.len()));
    }
    if nesting(query) > MAX_NESTING {
        return Err(LimitError::TooDeep);
    }
    let Ok(document) = parse_query(query) else {
        return Ok(Checked {
            document: None,
            cost: 1,
        });
    };
    if document.fragments.len() > MAX_FRAGMENTS {
        return Err(LimitError::TooManyFragments(document.fragments.len()));
    }
    let mut counter = Counter {
        document: &document,
        done: HashMap::new(),
        visiting: HashSet::new(),
    };
    let mut total = Tally::default();
    for (_, operation) in document.operations.iter() {
        total = total.add(counter.selection_set(&operation.node.selection_set)?);
    }
    // Fragments no operation uses are still walked by validation (to report them unused).
    let names: Vec<&str> = document.fragments.keys().map(|n| n.as_str()).collect();
    for name in names {
        if !counter.done.contains_key(name) {
            total = total.add(counter.fragment(name)?);
        }
    }
    if total.fields > MAX_SELECTIONS {
        return Err(LimitError::TooManySelections);
    }
    if total.aliases > MAX_ALIASES {
        return Err(LimitError::TooManyAliases);
    }
    let cost = executed(&document, operation_name)
        .map(|operation| {
            let mut keys = HashSet::new();
            root_keys(
                &document,
                &operation.selection_set,
                &mut keys,
                &mut HashSet::new(),
            );
            keys.len()
        })
        .unwrap_or(1)
        .clamp(1, MAX_SELECTIONS as usize) as u32;
    Ok(Checked {
        document: Some(document),
        cost,
    })
}

/// How deep `{`, `[` and `(` nest outside strings and comments.
fn nesting(query: &str) -> usize {
    let bytes = query.as_bytes();
    let (mut depth, mut deepest, mut i) = (0usize, 0usize, 0usize);
    while i < bytes.len() {
        match bytes[i] {
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' && bytes[i] != b'\r' {
                    i += 1;
                }
            }
            b'"' if bytes[i..].starts_with(b"\"\"\"") => {
                // A block string ends at the next `"""` not escaped as `\"""`.
                i += 3;
                while i < bytes.len() && !bytes[i..].starts_with(b"\"\"\"") {
                    i += if bytes[i..].starts_with(b"\\\"\"\"") {
                        4
                    } else {
                        1
                    };
                }
                i += 2;
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' && bytes[i] != b'\n' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'{' | b'[' | b'(' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' | b')' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    deepest
}

/// Fields and aliases of a selection, with spreads expanded (saturating: a count past the
/// limits is refused, however far past).
#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    fields: u64,
    aliases: u64,
}

impl Tally {
    fn add(self, other: Tally) -> Tally {
        Tally {
            fields: self.fields.saturating_add(other.fields),
            aliases: self.aliases.saturating_add(other.aliases),
        }
    }
}

/// Counts selections with every fragment counted once (memoised) and cycles refused.
struct Counter<'a> {
    document: &'a ExecutableDocument,
    done: HashMap<&'a str, Tally>,
    visiting: HashSet<&'a str>,
}

impl<'a> Counter<'a> {
    fn selection_set(&mut self, set: &'a Positioned<SelectionSet>) -> Result<Tally, LimitError> {
        let mut tally = Tally::default();
        for item in &set.node.items {
            let inner = match &item.node {
                Selection::Field(field) => Tally {
                    fields: 1,
                    aliases: u64::from(field.node.alias.is_some()),
                }
                .add(self.selection_set(&field.node.selection_set)?),
                Selection::InlineFragment(inline) => {
                    self.selection_set(&inline.node.selection_set)?
                }
                Selection::FragmentSpread(spread) => {
                    self.fragment(spread.node.fragment_name.node.as_str())?
                }
            };
            tally = tally.add(inner);
        }
        Ok(tally)
    }

    fn fragment(&mut self, name: &'a str) -> Result<Tally, LimitError> {
        if let Some(tally) = self.done.get(name) {
            return Ok(*tally);
        }
        // An unknown fragment counts nothing here; validation reports it.
        let Some(fragment) = self.document.fragments.get(name) else {
            return Ok(Tally::default());
        };
        if !self.visiting.insert(name) {
            return Err(LimitError::FragmentCycle(name.to_string()));
        }
        let tally = self.selection_set(&fragment.node.selection_set)?;
        self.visiting.remove(name);
        self.done.insert(name, tally);
        Ok(tally)
    }
}

/// The operation a request executes, as async-graphql chooses it.
fn executed<'a>(
    document: &'a ExecutableDocument,
    operation_name: Option<&str>,
) -> Option<&'a OperationDefinition> {
    match (&document.operations, operation_name) {
        (DocumentOperations::Single(operation), _) => Some(&operation.node),
        (DocumentOperations::Multiple(operations), Some(name)) => operations
            .iter()
            .find(|(n, _)| n.as_str() == name)
            .map(|(_, operation)| &operation.node),
        (DocumentOperations::Multiple(operations), None) if operations.len() == 1 => {
            operations.values().next().map(|operation| &operation.node)
        }
        (DocumentOperations::Multiple(_), None) => None,
    }
}

/// The response keys (alias or name) of an operation's top-level fields, through fragments
/// (already known to be acyclic and small).
fn root_keys<'a>(
    document: &'a ExecutableDocument,
    set: &'a Positioned<SelectionSet>,
    keys: &mut HashSet<&'a str>,
    seen: &mut HashSet<&'a str>,
) {
    for item in &set.node.items {
        match &item.node {
            Selection::Field(field) => {
                let key = field.node.alias.as_ref().unwrap_or(&field.node.name);
                keys.insert(key.node.as_str());
            }
            Selection::InlineFragment(inline) => {
                root_keys(document, &inline.node.selection_set, keys, seen);
            }
            Selection::FragmentSpread(spread) => {
                let name = spread.node.fragment_name.node.as_str();
                if seen.insert(name)
                    && let Some(fragment) = document.fragments.get(name)
                {
                    root_keys(document, &fragment.node.selection_set, keys, seen);
                }
            }
        }
    }
}

/// A document of nested fragment spreads: `levels` fragments, each spreading the next one
/// `fan_out` times (for tests and the benchmark of the attack).
pub fn fragment_bomb(levels: usize, fan_out: usize) -> String {
    let mut query = String::from("{ ...F0 }");
    for level in 0..levels {
        query.push_str(&format!(" fragment F{level} on Query {{"));
        for _ in 0..fan_out {
            query.push_str(&format!(" ...F{}", level + 1));
        }
        query.push_str(" }");
    }
    query.push_str(&format!(" fragment F{levels} on Query {{ __typename }}"));
    query
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cost(query: &str) -> u32 {
        check(query, None).expect("accepted").cost
    }

    #[test]
    fn the_fragment_bomb_is_refused_by_counting_not_walking() {
        let bomb = fragment_bomb(7, 10);
        assert!(bomb.len() < 700, "{}", bomb.len());
        assert_eq!(
            check(&bomb, None).unwrap_err(),
            LimitError::TooManySelections
        );
        // Far beyond what could ever be walked: still counted (saturating) and refused.
        let huge = fragment_bomb(40, 10);
        assert_eq!(
            check(&huge, None).unwrap_err(),
            LimitError::TooManyFragments(41)
        );
        let deep = fragment_bomb(25, 10);
        assert_eq!(
            check(&deep, None).unwrap_err(),
            LimitError::TooManySelections
        );
        // A small one passes.
        assert!(check(&fragment_bomb(2, 3), None).is_ok());
    }

    #[test]
    fn cycles_are_refused() {
        let cyclic = "{ ...A } fragment A on Query { ...B } fragment B on Query { ...A }";
        assert!(matches!(
            check(cyclic, None),
            Err(LimitError::FragmentCycle(_))
        ));
        let own = "{ ...A } fragment A on Query { runbooks { nodes { ...A } } }";
        assert!(matches!(
            check(own, None),
            Err(LimitError::FragmentCycle(_))
        ));
        // An unused cyclic fragment too (validation would walk it).
        let unused = "{ __typename } fragment A on Query { ...A }";
        assert!(matches!(
            check(unused, None),
            Err(LimitError::FragmentCycle(_))
        ));
    }

    #[test]
    fn size_nesting_fragments_and_aliases_are_bounded() {
        let long = format!("{{ __typename }} # {}", "x".repeat(MAX_QUERY_BYTES));
        assert!(matches!(check(&long, None), Err(LimitError::TooLong(_))));
        let deep = format!("{}{}", "{ a ".repeat(100), "}".repeat(100));
        assert_eq!(check(&deep, None).unwrap_err(), LimitError::TooDeep);
        let deep_list = format!("{{ a(x: {}1{}) }}", "[".repeat(60), "]".repeat(60));
        assert_eq!(check(&deep_list, None).unwrap_err(), LimitError::TooDeep);
        // Brackets in strings and comments do not count.
        let quoted = format!(
            "{{ a(x: \"{}\", y: \"\"\"{}\\\"\"\" {{\"\"\") # {}\n }}",
            "{".repeat(100),
            "[".repeat(100),
            "(".repeat(100)
        );
        assert_eq!(nesting(&quoted), 2);
        let fragments: String = (0..=MAX_FRAGMENTS)
            .map(|i| format!(" fragment F{i} on Query {{ __typename }}"))
            .collect();
        let spreads: String = (0..=MAX_FRAGMENTS).map(|i| format!(" ...F{i}")).collect();
        assert_eq!(
            check(&format!("{{{spreads} }}{fragments}"), None).unwrap_err(),
            LimitError::TooManyFragments(MAX_FRAGMENTS + 1)
        );
        let aliased: String = (0..=MAX_ALIASES)
            .map(|i| format!(" a{i}: __typename"))
            .collect();
        assert_eq!(
            check(&format!("{{{aliased} }}"), None).unwrap_err(),
            LimitError::TooManyAliases
        );
        // Aliases multiplied by a fragment count as often as they run.
        let fragment: String = (0..20).map(|i| format!(" a{i}: __typename")).collect();
        let spread = "{ ...A ... on Query { ...A } x: __typename { ...A } }";
        assert!(
            check(
                &format!("{spread} fragment A on Query {{{fragment} }}"),
                None
            )
            .is_ok()
        );
        let many = format!(
            "{{ b0: runbooks {{ ...A }} b1: runbooks {{ ...A }} b2: runbooks {{ ...A }} \
             b3: runbooks {{ ...A }} b4: runbooks {{ ...A }} }} fragment A on RunbookConnection {{{fragment} }}"
        );
        assert_eq!(check(&many, None).unwrap_err(), LimitError::TooManyAliases);
    }

    #[test]
    fn the_cost_is_the_number_of_top_level_fields_run() {
        assert_eq!(cost("{ runbooks { nodes { number title } } }"), 1);
        assert_eq!(
            cost("{ a: runbook(number: 1) { number } b: runbook(number: 2) { number } }"),
            2
        );
        // The same response key runs once.
        assert_eq!(
            cost("{ runbook(number: 1) { number } runbook(number: 1) { title } }"),
            1
        );
        let mutations: String = (0..50)
            .map(|i| format!(" c{i}: cancelRunbook(number: {i}) {{ number }}"))
            .collect();
        assert_eq!(cost(&format!("mutation {{{mutations} }}")), 50);
        // Through fragments and inline fragments.
        assert_eq!(
            cost(
                "mutation { ...M ... on Mutation { z: retryRunbook(number: 1) { number } } } \
                  fragment M on Mutation { x: cancelRunbook(number: 1) { number } y: cancelRunbook(number: 2) { number } }"
            ),
            3
        );
        // Only the operation executed counts.
        let two = "query A { a: __typename b: __typename } query B { __typename }";
        assert_eq!(check(two, Some("A")).unwrap().cost, 2);
        assert_eq!(check(two, Some("B")).unwrap().cost, 1);
        assert_eq!(check(two, None).unwrap().cost, 1);
        // Text that does not parse costs one request and is left to async-graphql to report.
        let broken = check("{ runbook(number: 1) { number ", None).unwrap();
        assert!(broken.document.is_none());
        assert_eq!(broken.cost, 1);
    }

    #[test]
    fn deep_nesting_is_refused_before_the_parser_recurses() {
        // On a thread with a tokio worker's stack: the check must refuse, not overflow.
        let handle = std::thread::Builder::new()
            .stack_size(2 * 1024 * 1024)
            .spawn(|| {
                let text = format!("{}{}", "{a".repeat(5400), "}".repeat(5400));
                assert!(text.len() <= MAX_QUERY_BYTES);
                check(&text, None).map(|_| ())
            })
            .unwrap();
        assert_eq!(handle.join().unwrap(), Err(LimitError::TooDeep));
    }
}
