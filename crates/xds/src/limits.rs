//! Bounds on what a proxy (or anyone who can reach the xDS port) can make the server keep,
//! and log-safe rendering of the strings a client sends.
//!
//! Every string a client controls is either refused past a limit (node ids, resource
//! names, subscription sizes: the stream ends with `INVALID_ARGUMENT` naming the limit) or
//! kept truncated with a marker (NACK text, reported versions), and is written to the log
//! escaped and shortened through [`Untrusted`], so a newline in a node id cannot forge a
//! log line and a megabyte of NACK text is never logged in full.

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Longest `node.id` accepted, in bytes. App Mesh names are at most 255 characters, so the
/// longest real id (an ARN with mesh, owner and node names) stays under 1,000 bytes; 2 KiB
/// leaves room and keeps one stream's identity (kept in the status table, the metrics and
/// log lines) small.
pub const MAX_NODE_ID_LEN: usize = 2048;

/// Longest resource name a proxy may subscribe to, in bytes. meshplane's resource names
/// are built from App Mesh names (255 characters each) and stay well under this.
pub const MAX_RESOURCE_NAME_LEN: usize = 2048;

/// Most names one stream may subscribe to (or report in `initial_resource_versions`) per
/// resource type. A proxy subscribes to one EDS name per cluster it has; meshes of tens of
/// thousands of clusters are far beyond what Envoy handles well (docs: ~2,500 per CDS).
pub const MAX_NAMES_PER_TYPE: usize = 65_536;

/// Longest version string kept as a proxy's reported version (meshplane's versions are
/// 16-64 character hashes); longer ones are kept truncated.
pub const MAX_VERSION_LEN: usize = 256;

/// Bytes of a NACK's `error_detail.message` kept in the proxy status and events; the rest
/// is cut and [`TRUNCATED_MARKER`] appended. Envoy's own messages are a few hundred bytes.
pub const MAX_NACK_MESSAGE_LEN: usize = 4096;

/// Characters of a client-supplied string written into one log field by [`Untrusted`].
pub const MAX_LOGGED_LEN: usize = 512;

/// How often a NACK of one node is logged at WARN; the others are counted and the count is
/// reported with the next line.
pub const NACK_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Appended to a string cut by [`truncate`].
pub const TRUNCATED_MARKER: &str = "... [truncated]";

/// A client-supplied string for a log field: control, format (bidi) and other non-printing
/// characters escaped as Rust escapes them (`\n`, `\u{202e}`), and cut after
/// [`MAX_LOGGED_LEN`] characters with the total size noted.
///
/// ```
/// use meshplane_xds::Untrusted;
/// assert_eq!(Untrusted("a\nb").to_string(), r"a\nb");
/// ```
#[derive(Clone, Copy)]
pub struct Untrusted<'a>(pub &'a str);

/// Rate limit for one kind of log line: at most one line per interval; the lines skipped
/// in between are counted and reported by the next [`permit`](Self::permit).
#[derive(Debug)]
pub struct LogLimiter {
    interval: Duration,
    state: Mutex<LimiterState>,
}

#[derive(Debug, Default)]
struct LimiterState {
    last: Option<Instant>,
    suppressed: u64,
}

// === impl Untrusted ===

impl fmt::Display for Untrusted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut chars = self.0.chars();
        for c in chars.by_ref().take(MAX_LOGGED_LEN) {
            if c == '"' || c == '\'' {
                // Quotes are harmless in a log field; keep them readable.
                f.write_fmt(format_args!("{c}"))?;
            } else {
                f.write_fmt(format_args!("{}", c.escape_debug()))?;
            }
        }
        if chars.next().is_some() {
            write!(f, "... [{} bytes in all]", self.0.len())?;
        }
        Ok(())
    }
}

impl fmt::Debug for Untrusted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

// === impl LogLimiter ===

impl LogLimiter {
    /// A limiter allowing one line per `interval`.
    pub fn new(interval: Duration) -> LogLimiter {
        LogLimiter {
            interval,
            state: Mutex::new(LimiterState::default()),
        }
    }

    /// `Some(skipped)` if a line may be written now (`skipped` lines were suppressed since
    /// the last one), `None` if this one must be skipped (it is counted).
    pub fn permit(&self) -> Option<u64> {
        self.permit_at(Instant::now())
    }

    fn permit_at(&self, now: Instant) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match s.last {
            Some(last) if now.saturating_duration_since(last) < self.interval => {
                s.suppressed += 1;
                None
            }
            _ => {
                s.last = Some(now);
                Some(std::mem::take(&mut s.suppressed))
            }
        }
    }
}

/// `s` if it has at most `max` bytes, else its longest prefix of at most `max` bytes that
/// ends on a character boundary, followed by [`TRUNCATED_MARKER`].
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = String::with_capacity(end + TRUNCATED_MARKER.len());
    out.push_str(&s[..end]);
    out.push_str(TRUNCATED_MARKER);
    out
}

/// Why a `node.id` is refused before it is looked up, or `None` if its size and characters
/// are acceptable. Control and bidi characters can never be part of an App Mesh name.
pub(crate) fn check_node_id(id: &str) -> Option<String> {
    if id.is_empty() {
        return Some("first request must carry node.id".into());
    }
    if id.len() > MAX_NODE_ID_LEN {
        return Some(format!(
            "node.id is {} bytes, the limit is {MAX_NODE_ID_LEN} bytes",
            id.len()
        ));
    }
    if let Some(c) = id.chars().find(|c| forbidden_char(*c)) {
        return Some(format!(
            "node.id contains the control or formatting character {:?}",
            c
        ));
    }
    None
}

/// Refuses a subscription of `total` names per type (after the request is applied), or
/// one of `names` longer than [`MAX_RESOURCE_NAME_LEN`]. The message names the limit.
pub(crate) fn check_names<'a>(
    ty: crate::ResourceType,
    names: impl IntoIterator<Item = &'a str>,
    total: usize,
) -> Result<(), tonic::Status> {
    if total > MAX_NAMES_PER_TYPE {
        return Err(tonic::Status::invalid_argument(format!(
            "{ty} subscription has {total} resource names, the limit is {MAX_NAMES_PER_TYPE}"
        )));
    }
    if let Some(long) = names.into_iter().find(|n| n.len() > MAX_RESOURCE_NAME_LEN) {
        return Err(tonic::Status::invalid_argument(format!(
            "{ty} resource name is {} bytes, the limit is {MAX_RESOURCE_NAME_LEN} bytes",
            long.len()
        )));
    }
    Ok(())
}

/// Control characters (C0, DEL, C1) and the Unicode bidi controls.
fn forbidden_char(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untrusted_escapes_line_breaks_and_bidi_and_cuts_long_strings() {
        let forged = "mesh/m/virtualNode/n\n2026-01-01T00:00:00Z  INFO forged\r\u{202e}";
        let shown = Untrusted(forged).to_string();
        assert!(!shown.contains('\n') && !shown.contains('\r') && !shown.contains('\u{202e}'));
        assert!(
            shown.contains(r"\n2026") && shown.contains(r"\u{202e}"),
            "{shown}"
        );
        let long = "x".repeat(100_000);
        let shown = Untrusted(&long).to_string();
        assert!(shown.len() < MAX_LOGGED_LEN + 40, "{}", shown.len());
        assert!(shown.ends_with("[100000 bytes in all]"), "{shown}");
    }

    #[test]
    fn truncate_keeps_a_char_boundary_and_marks_the_cut() {
        assert_eq!(truncate("short", 10), "short");
        let s = "é".repeat(10); // 20 bytes
        let t = truncate(&s, 5);
        assert_eq!(t, format!("éé{TRUNCATED_MARKER}"));
    }

    #[test]
    fn limiter_allows_one_line_per_interval_and_counts_the_rest() {
        let l = LogLimiter::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(l.permit_at(t0), Some(0));
        for i in 1..=999 {
            assert_eq!(l.permit_at(t0 + Duration::from_millis(i)), None);
        }
        assert_eq!(l.permit_at(t0 + Duration::from_secs(61)), Some(999));
        assert_eq!(l.permit_at(t0 + Duration::from_secs(62)), None);
    }

    #[test]
    fn node_ids_are_checked_for_size_and_characters() {
        assert!(check_node_id("mesh/m/virtualNode/n").is_none());
        assert!(check_node_id(&"a".repeat(MAX_NODE_ID_LEN)).is_none());
        let e = check_node_id(&"a".repeat(MAX_NODE_ID_LEN + 1)).unwrap();
        assert!(e.contains("the limit is 2048 bytes"), "{e}");
        assert!(check_node_id("").is_some());
        assert!(check_node_id("mesh/m/virtualNode/a\nb").is_some());
        assert!(check_node_id("mesh/m/virtualNode/a\u{202e}b").is_some());
    }
}
