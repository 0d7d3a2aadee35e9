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
    }
}
