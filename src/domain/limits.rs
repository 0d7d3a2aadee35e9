//! Limits per organisation: how many of its runbooks run at once, how many steps a runbook
//! may have, and its monthly budgets of model tokens and agent time. Pure: what the limits
//! are, how an operator's values are read, and whether a month's use has spent a budget.
//! The store keeps them; the engine and the application layer enforce them.

use super::Usage;

/// An organisation's limits; `None` is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OrgLimits {
    /// Runbooks a worker may hold for an agent's work at once; more wait, in order.
    pub max_running: Option<u64>,
    /// Leaf steps a runbook's plan may have (follow-ups included).
    pub max_steps: Option<u64>,
    /// Model tokens (prompt and completion) a calendar month (UTC).
    pub monthly_tokens: Option<u64>,
    /// Agent time (the steps' wall time) a calendar month (UTC), in milliseconds.
    pub monthly_agent_ms: Option<u64>,
}

/// One limit as the operator gives it: a value, or `none` to remove the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitValue {
    Set(u64),
    Remove,
}

impl LimitValue {
    fn value(self) -> Option<u64> {
        match self {
            LimitValue::Set(v) => Some(v),
            LimitValue::Remove => None,
        }
    }
}

/// What `runbooks org set` changes; a limit not given keeps its value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitChanges {
    pub max_running: Option<LimitValue>,
    pub max_steps: Option<LimitValue>,
    pub monthly_tokens: Option<LimitValue>,
    pub monthly_agent_ms: Option<LimitValue>,
}

impl LimitChanges {
    pub fn is_empty(&self) -> bool {
        *self == LimitChanges::default()
    }
}

impl OrgLimits {
    /// These limits with `changes` made.
    pub fn with(self, changes: &LimitChanges) -> OrgLimits {
        let pick = |old: Option<u64>, change: Option<LimitValue>| match change {
            Some(value) => value.value(),
            None => old,
        };
        OrgLimits {
            max_running: pick(self.max_running, changes.max_running),
            max_steps: pick(self.max_steps, changes.max_steps),
            monthly_tokens: pick(self.monthly_tokens, changes.monthly_tokens),
            monthly_agent_ms: pick(self.monthly_agent_ms, changes.monthly_agent_ms),
        }
    }

    pub fn has_budget(&self) -> bool {
        self.monthly_tokens.is_some() || self.monthly_agent_ms.is_some()
    }

    /// Why `org`'s budget is spent by `used` (this month's use), if it is: a sentence that
    /// says which budget, how much was used, and how to raise it.
    pub fn budget_spent(&self, org: &str, used: &Usage) -> Option<String> {
        if let Some(budget) = self.monthly_tokens
            && used.tokens() >= budget
        {
            return Some(format!(
                "the organisation {org}'s monthly budget of {budget} model tokens is spent \
                 ({} used this month); raise it with `runbooks org set {org} --monthly-tokens …` \
                 and retry",
                used.tokens()
            ));
        }
        if let Some(budget) = self.monthly_agent_ms
            && used.wall_ms >= budget
        {
            return Some(format!(
                "the organisation {org}'s monthly budget of {} agent minutes is spent ({} used \
                 this month); raise it with `runbooks org set {org} --monthly-agent-minutes …` \
                 and retry",
                minutes(budget),
                minutes(used.wall_ms)
            ));
        }
        None
    }

    /// Why a plan of `leaves` leaf steps in all is too big, if it is.
    pub fn too_many_steps(&self, org: &str, leaves: u64) -> Option<String> {
        let max = self.max_steps?;
        (leaves > max).then(|| {
            format!(
                "the plan has {leaves} steps, more than the {max} the organisation {org} allows \
                 a runbook; raise it with `runbooks org set {org} --max-steps …` and retry"
            )
        })
    }
}

/// Milliseconds as minutes, with at most three decimals and no trailing zeros: `61.2`, `0.5`.
pub fn minutes(ms: u64) -> String {
    let text = format!("{:.3}", ms as f64 / 60_000.0);
    let text = text.trim_end_matches('0').trim_end_matches('.');
    text.to_string()
}

/// Reads a count limit (`--max-running`, `--max-steps`, `--monthly-tokens`): a whole number
/// of at least `least`, or `none`.
pub fn parse_count(text: &str, least: u64) -> Result<LimitValue, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("none") {
        return Ok(LimitValue::Remove);
    }
    match text.parse::<u64>() {
        Ok(n) if n >= least && i64::try_from(n).is_ok() => Ok(LimitValue::Set(n)),
        Ok(_) => Err(format!(
            "must be at least {least} (or `none` to remove the limit)"
        )),
        Err(_) => Err(format!(
            "`{text}` is not a whole number (or `none` to remove the limit)"
        )),
    }
}

/// Reads `--monthly-agent-minutes`: minutes, possibly fractional (`0.5`), not negative, or
/// `none`; answered in milliseconds.
pub fn parse_minutes(text: &str) -> Result<LimitValue, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("none") {
        return Ok(LimitValue::Remove);
    }
    match text.parse::<f64>() {
        // At most about 290 million years, so the milliseconds fit a database integer.
        Ok(m) if m.is_finite() && (0.0..=1.5e14).contains(&m) => {
            Ok(LimitValue::Set((m * 60_000.0).round() as u64))
        }
        Ok(_) => Err("must be a number of minutes, 0 or more (or `none`)".into()),
        Err(_) => Err(format!(
            "`{text}` is not a number of minutes (or `none` to remove the limit)"
        )),
    }
}

/// The start of the calendar month (UTC) that `now_ms` (Unix milliseconds) falls in.
pub fn month_start_ms(now_ms: i64) -> i64 {
    let days = now_ms.div_euclid(86_400_000);
    let (year, month, _) = civil_from_days(days);
    days_from_civil(year, month, 1) * 86_400_000
}

/// The date of a day counted from 1970-01-01 (Howard Hinnant's algorithm).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_start_on_the_first_at_midnight_utc() {
        // 2024-02-29T13:45:00Z → 2024-02-01T00:00:00Z.
        assert_eq!(month_start_ms(1_709_214_300_000), 1_706_745_600_000);
        // The first millisecond of a month is its start; the one before is the last month's.
        assert_eq!(month_start_ms(1_706_745_600_000), 1_706_745_600_000);
        assert_eq!(month_start_ms(1_706_745_599_999), 1_704_067_200_000);
        assert_eq!(month_start_ms(0), 0);
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        for days in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn operators_values_are_read_strictly() {
        assert_eq!(parse_count("3", 1), Ok(LimitValue::Set(3)));
        assert_eq!(parse_count("none", 1), Ok(LimitValue::Remove));
        assert_eq!(parse_count("0", 0), Ok(LimitValue::Set(0)));
        assert!(parse_count("0", 1).unwrap_err().contains("at least 1"));
        assert!(
            parse_count("-1", 1)
                .unwrap_err()
                .contains("not a whole number")
        );
        assert!(parse_count("2.5", 1).is_err());
        assert!(parse_count("99999999999999999999", 0).is_err());
        assert_eq!(parse_minutes("1.5"), Ok(LimitValue::Set(90_000)));
        assert_eq!(parse_minutes("0"), Ok(LimitValue::Set(0)));
        assert_eq!(parse_minutes("NONE"), Ok(LimitValue::Remove));
        for bad in ["-1", "NaN", "inf", "ten", ""] {
            assert!(parse_minutes(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn changes_keep_what_they_do_not_name() {
        let limits = OrgLimits {
            max_running: Some(2),
            max_steps: Some(10),
            ..OrgLimits::default()
        };
        let changed = limits.with(&LimitChanges {
            max_running: Some(LimitValue::Remove),
            monthly_tokens: Some(LimitValue::Set(500)),
            ..LimitChanges::default()
        });
        assert_eq!(
            changed,
            OrgLimits {
                max_running: None,
                max_steps: Some(10),
                monthly_tokens: Some(500),
                monthly_agent_ms: None,
            }
        );
    }

    #[test]
    fn budgets_are_spent_when_use_reaches_them() {
        let limits = OrgLimits {
            monthly_agent_ms: Some(3_600_000),
            monthly_tokens: Some(1_000),
            ..OrgLimits::default()
        };
        let used = Usage {
            wall_ms: 3_672_000,
            ..Usage::default()
        };
        assert_eq!(
            limits.budget_spent("acme", &used).as_deref(),
            Some(
                "the organisation acme's monthly budget of 60 agent minutes is spent (61.2 used \
                 this month); raise it with `runbooks org set acme --monthly-agent-minutes …` \
                 and retry"
            )
        );
        let tokens = Usage {
            prompt_tokens: Some(900),
            completion_tokens: Some(100),
            ..Usage::default()
        };
        assert!(
            limits
                .budget_spent("acme", &tokens)
                .unwrap()
                .contains("1000 model tokens")
        );
        assert_eq!(limits.budget_spent("acme", &Usage::default()), None);
        assert_eq!(OrgLimits::default().budget_spent("acme", &used), None);
        assert_eq!(minutes(30_000), "0.5");
        assert_eq!(minutes(60_000), "1");
    }

    #[test]
    fn plans_over_the_step_limit_are_too_big() {
        let limits = OrgLimits {
            max_steps: Some(3),
            ..OrgLimits::default()
        };
        assert_eq!(limits.too_many_steps("acme", 3), None);
        assert!(
            limits
                .too_many_steps("acme", 4)
                .unwrap()
                .contains("4 steps, more than the 3")
        );
        assert_eq!(OrgLimits::default().too_many_steps("acme", 1_000), None);
    }
}
