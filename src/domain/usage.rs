//! What running a step used: wall time, the agent's CPU time and a model's tokens. Recorded
//! per step, summed per runbook and per organisation (for budgets).

/// What one step (or, summed, a runbook or an organisation's month) used.
///
/// Tokens are known only for agents that talk to a model and are told what it counted (the
/// `openai` agent); they are `None` otherwise, and a sum is `None` only when no part of it
/// knew them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Wall-clock time of the step, from its start to its end, in milliseconds.
    pub wall_ms: u64,
    /// CPU time (user and system) of the agent's processes, in milliseconds.
    pub agent_cpu_ms: u64,
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
}

impl Usage {
    /// Prompt and completion tokens together; 0 when unknown.
    pub fn tokens(&self) -> u64 {
        self.prompt_tokens
            .unwrap_or(0)
            .saturating_add(self.completion_tokens.unwrap_or(0))
    }
}

/// A duration in milliseconds for people: `350ms`, `45s`, `3m 12s`, `1h 0m 5s` (whole
/// seconds from one second on).
pub fn duration_text(ms: u64) -> String {
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let seconds = ms / 1000;
    let (h, m, s) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, m) => format!("{m}m {s}s"),
        (h, m) => format!("{h}h {m}m {s}s"),
    }
}

/// A count with thousands separated by commas: `12,345`.
pub fn count_text(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

impl Usage {
    /// Whether the tokens are known (a model's endpoint counted some of them).
    pub fn tokens_known(&self) -> bool {
        self.prompt_tokens.is_some() || self.completion_tokens.is_some()
    }

    /// One line for people: `3m 12s of agent time (41s CPU) · 12,345 tokens`, without the
    /// tokens when they are unknown.
    pub fn summary(&self) -> String {
        let mut text = format!(
            "{} of agent time ({} CPU)",
            duration_text(self.wall_ms),
            duration_text(self.agent_cpu_ms)
        );
        if self.tokens_known() {
            text.push_str(&format!(" · {} tokens", count_text(self.tokens())));
        }
        text
    }
}

fn add_known(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (None, None) => None,
        (a, b) => Some(a.unwrap_or(0).saturating_add(b.unwrap_or(0))),
    }
}

impl std::ops::Add for Usage {
    type Output = Usage;

    fn add(self, other: Usage) -> Usage {
        Usage {
            wall_ms: self.wall_ms.saturating_add(other.wall_ms),
            agent_cpu_ms: self.agent_cpu_ms.saturating_add(other.agent_cpu_ms),
            prompt_tokens: add_known(self.prompt_tokens, other.prompt_tokens),
            completion_tokens: add_known(self.completion_tokens, other.completion_tokens),
        }
    }
}

impl std::iter::Sum for Usage {
    fn sum<I: Iterator<Item = Usage>>(iter: I) -> Usage {
        iter.fold(Usage::default(), |a, b| a + b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_keep_unknown_tokens_unknown() {
        let script = Usage {
            wall_ms: 10,
            agent_cpu_ms: 4,
            ..Usage::default()
        };
        let model = Usage {
            wall_ms: 5,
            agent_cpu_ms: 1,
            prompt_tokens: Some(100),
            completion_tokens: Some(20),
        };
        assert_eq!((script + script).prompt_tokens, None);
        let total: Usage = [script, model, script].into_iter().sum();
        assert_eq!(total.wall_ms, 25);
        assert_eq!(total.agent_cpu_ms, 9);
        assert_eq!(total.prompt_tokens, Some(100));
        assert_eq!(total.tokens(), 120);
        assert_eq!(Usage::default().tokens(), 0);
        assert_eq!(total.summary(), "25ms of agent time (9ms CPU) · 120 tokens");
        assert_eq!(script.summary(), "10ms of agent time (4ms CPU)");
    }

    #[test]
    fn figures_for_people() {
        let cases = [
            (0, "0ms"),
            (999, "999ms"),
            (1_000, "1s"),
            (45_900, "45s"),
            (192_000, "3m 12s"),
            (3_605_000, "1h 0m 5s"),
        ];
        for (ms, text) in cases {
            assert_eq!(duration_text(ms), text, "{ms}");
        }
        let counts = [
            (0, "0"),
            (999, "999"),
            (1_000, "1,000"),
            (12_345, "12,345"),
            (1_234_567, "1,234,567"),
        ];
        for (n, text) in counts {
            assert_eq!(count_text(n), text, "{n}");
        }
    }
}
