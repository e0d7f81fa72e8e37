//! Collecting every validation problem at once, each with the path of its field.

use std::fmt;

/// One thing wrong with a configuration: the dotted path of the field and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted path of the field, for example `retry.max_delay`.
    pub path: String,
    /// What is wrong, lowercase, naming the value found and what was expected.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.path, self.message)
    }
}

/// Every problem found by [`crate::Config::validate`], in field order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    /// The problems, in the order the fields are declared.
    pub fn iter(&self) -> impl Iterator<Item = &Problem> {
        self.0.iter()
    }

    /// Whether any problem names this exact field path.
    pub fn mentions(&self, path: &str) -> bool {
        self.0.iter().any(|p| p.path == path)
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(f, "{n} configuration problem{}:", if n == 1 { "" } else { "s" })?;
        for p in &self.0 {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}

/// Accumulates problems while the sections validate themselves.
#[derive(Debug, Default)]
pub(crate) struct Collector {
    problems: Vec<Problem>,
}

impl Collector {
    /// Records a problem for `path`.
    pub(crate) fn push(&mut self, path: &str, message: impl Into<String>) {
        self.problems.push(Problem { path: path.to_owned(), message: message.into() });
    }

    /// Records a problem when `ok` is false.
    pub(crate) fn check(&mut self, ok: bool, path: &str, message: impl FnOnce() -> String) {
        if !ok {
            self.push(path, message());
        }
    }

    /// Checks that a ratio is finite and inside `[lo, hi]`.
    pub(crate) fn ratio(&mut self, value: f64, lo: f64, hi: f64, path: &str) {
        self.check(value.is_finite() && value >= lo && value <= hi, path, || {
            format!("({value}) must be between {lo} and {hi}")
        });
    }

    /// Checks that a duration is not zero.
    pub(crate) fn nonzero(&mut self, value: std::time::Duration, path: &str) {
        self.check(!value.is_zero(), path, || "must be greater than zero".to_owned());
    }

    /// Checks that an integer is at least `min`.
    pub(crate) fn at_least(&mut self, value: u64, min: u64, path: &str) {
        self.check(value >= min, path, || format!("({value}) must be at least {min}"));
    }

    /// Ends collection: `Ok` when nothing was found.
    pub(crate) fn finish(self) -> Result<(), Problems> {
        if self.problems.is_empty() { Ok(()) } else { Err(Problems(self.problems)) }
    }
}
