//! The canonical request's parts, built exactly as AWS clients build them for non-S3
//! services (`aws-sigv4` with its defaults, botocore's `SigV4Auth`).

/// RFC 3986 unreserved characters, the only bytes SigV4 leaves unencoded.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~')
}

fn encode_into(out: &mut String, bytes: &[u8], keep_slash: bool) {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    for &b in bytes {
        if is_unreserved(b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(DIGITS[usize::from(b >> 4)] as char);
            out.push(DIGITS[usize::from(b & 0xf)] as char);
        }
    }
}

/// The canonical URI of a raw (as sent, already percent-encoded) request path.
///
/// Non-S3 services normalise the path first (RFC 3986 §5.2.4 dot-segment removal, and empty
/// segments dropped, so `//` collapses; a trailing slash is kept), then encode it once more:
/// every byte outside the unreserved set and `/` is percent-encoded, so an `%2F` the client
/// sent becomes `%252F` ("encoded twice"). Both `aws-sigv4` (`normalize_uri_path` +
/// `percent_encode_path`) and botocore (`remove_dot_segments` + `quote(safe='/~')`) do this.
pub(crate) fn canonical_uri(raw_path: &str) -> String {
    if raw_path.is_empty() {
        return "/".to_owned();
    }
    let mut segments: Vec<&str> = Vec::new();
    for segment in raw_path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let trailing = ["/", "/.", "/..", "/./", "/../"]
        .iter()
        .any(|end| raw_path.ends_with(end));
    let mut normalized = String::with_capacity(raw_path.len() + 1);
    for s in &segments {
        normalized.push('/');
        normalized.push_str(s);
    }
    if normalized.is_empty() || (trailing && !normalized.ends_with('/')) {
        normalized.push('/');
    }
    let mut out = String::with_capacity(normalized.len() + 8);
    encode_into(&mut out, normalized.as_bytes(), true);
    out
}

/// Percent-decodes a query component the way `form_urlencoded` does (what `aws-sigv4`
/// parses the query with): `+` is a space, `%XX` a byte, a stray `%` stays literal.
fn decode_component(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex_val(b[i + 1]), hex_val(b[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    out
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Splits a raw query string into decoded `(name, value)` pairs, in order.
pub(crate) fn query_pairs(raw_query: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    raw_query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode_component(k), decode_component(v))
        })
        .collect()
}

/// The canonical query string: every pair except `skip` (the presigned URL's own
/// `X-Amz-Signature`), each name and value RFC 3986-encoded, sorted by encoded name then
/// encoded value, joined with `&`.
pub(crate) fn canonical_query(pairs: &[(Vec<u8>, Vec<u8>)], skip: Option<&[u8]>) -> String {
    let mut encoded: Vec<(String, String)> = pairs
        .iter()
        .filter(|(k, _)| Some(k.as_slice()) != skip)
        .map(|(k, v)| {
            let mut ek = String::new();
            encode_into(&mut ek, k, false);
            let mut ev = String::new();
            encode_into(&mut ev, v, false);
            (ek, ev)
        })
        .collect();
    encoded.sort();
    let mut out = String::new();
    for (i, (k, v)) in encoded.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}

/// A header value as it enters the canonical request: surrounding spaces trimmed and runs
/// of spaces collapsed to one. Like `aws-sigv4`, only spaces are touched, not tabs.
pub(crate) fn canonical_header_value(value: &[u8]) -> Option<String> {
    let value = std::str::from_utf8(value).ok()?;
    let mut out = String::with_capacity(value.len());
    let mut last_space = false;
    for c in value.trim_matches(' ').chars() {
        if c == ' ' {
            if !last_space {
                out.push(c);
            }
            last_space = true;
        } else {
            out.push(c);
            last_space = false;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_uri_encodes_twice_and_normalises() {
        // Cases from the AWS SigV4 test suite (get-slash*, get-relative*, get-space,
        // double-encode) and App Mesh names.
        for (raw, canonical) in [
            ("", "/"),
            ("/", "/"),
            ("//", "/"),
            ("//example//", "/example/"),
            ("/example/..", "/"),
            ("/example1/example2/../..", "/"),
            ("/./", "/"),
            ("/example/./", "/example/"),
            ("/a/b/.", "/a/b/"),
            ("/../a", "/a"),
            ("/example%20space/", "/example%2520space/"),
            ("/~tilde-_.", "/~tilde-_."),
            (
                "/v20190125/meshes/a%2Fb:c+d%C3%A9/virtualNodes",
                "/v20190125/meshes/a%252Fb%3Ac%2Bd%25C3%25A9/virtualNodes",
            ),
        ] {
            assert_eq!(canonical_uri(raw), canonical, "{raw:?}");
        }
    }

    #[test]
    fn canonical_query_sorts_encoded_pairs() {
        let pairs = query_pairs("nextToken=a%2Bb&limit=10&b=2&b=1&a&empty=&sp=x+y&pct=%zz");
        assert_eq!(
            canonical_query(&pairs, None),
            "a=&b=1&b=2&empty=&limit=10&nextToken=a%2Bb&pct=%25zz&sp=x%20y"
        );
        let pairs = query_pairs("X-Amz-Signature=abc&Action=List");
        assert_eq!(
            canonical_query(&pairs, Some(b"X-Amz-Signature")),
            "Action=List"
        );
        assert_eq!(canonical_query(&query_pairs(""), None), "");
    }

    #[test]
    fn header_values_trim_and_collapse_spaces() {
        assert_eq!(
            canonical_header_value(b"  a   b  c ").as_deref(),
            Some("a b c")
        );
        assert_eq!(canonical_header_value(b"a\tb").as_deref(), Some("a\tb"));
        assert_eq!(canonical_header_value(&[0xff]), None);
    }
}
