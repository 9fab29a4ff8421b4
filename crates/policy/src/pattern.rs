//! IAM wildcard matching: `*` (any run of characters, `/` and `:` included) and `?` (one character).

/// Whether `text` matches the IAM wildcard `pattern` (`*` any run, `?` one character),
/// comparing characters exactly.
///
/// Greedy matching with one backtrack point, the last `*` (no regex, so no pathological
/// patterns): at most `pattern.len() * text.len()` steps.
pub fn glob(pattern: &str, text: &str) -> bool {
    glob_by(pattern, text, |p, t| p == t)
}

/// [`glob`] ignoring ASCII case (IAM action names are case-insensitive).
pub fn glob_ignore_case(pattern: &str, text: &str) -> bool {
    glob_by(pattern, text, |p, t| p.eq_ignore_ascii_case(&t))
}

fn glob_by(pattern: &str, text: &str, eq: impl Fn(char, char) -> bool) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    // Where the last `*` was, and the text position it currently swallows up to.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && (p[pi] == '?' || eq(p[pi], t[ti])) {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            // Let the last `*` swallow one more character and retry after it.
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stars_and_question_marks() {
        assert!(glob("*", ""));
        assert!(glob("*", "a/b:c"));
        assert!(glob("a*c", "abbbc"));
        assert!(glob("a*c", "ac"));
        assert!(!glob("a*c", "acb"));
        assert!(glob("a?c", "abc"));
        assert!(!glob("a?c", "ac"));
        assert!(glob("?", "é"));
        assert!(glob("**a**", "xxa"));
        assert!(!glob("", "a"));
        assert!(glob("", ""));
        assert!(!glob("A", "a"));
        assert!(glob_ignore_case(
            "appmesh:describe*",
            "AppMesh:DescribeMesh"
        ));
    }
}
