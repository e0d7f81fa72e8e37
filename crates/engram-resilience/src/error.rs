//! The error returned when settings cannot build a mechanism.

/// A setting was out of range for the mechanism being built.
///
/// `engram-config` validates the same ranges when it loads a file, so this appears only when
/// settings are built in code or a validated configuration is bypassed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {setting}: {problem}")]
pub struct InvalidSettings {
    setting: &'static str,
    problem: String,
}

impl InvalidSettings {
    pub(crate) fn new(setting: &'static str, problem: impl Into<String>) -> Self {
        Self { setting, problem: problem.into() }
    }

    /// The name of the offending setting, as spelled in the configuration (`max_delay`).
    pub fn setting(&self) -> &'static str {
        self.setting
    }

    /// What was wrong with it.
    pub fn problem(&self) -> &str {
        &self.problem
    }
}

/// Returns an error for `setting` unless `ok` holds.
pub(crate) fn ensure(
    ok: bool,
    setting: &'static str,
    problem: impl FnOnce() -> String,
) -> Result<(), InvalidSettings> {
    if ok { Ok(()) } else { Err(InvalidSettings::new(setting, problem())) }
}
