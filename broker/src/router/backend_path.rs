//! The path check of device-to-HTTP requests: a device `Request` frame names a path that the
//! router appends to `backend.device_request_url`. [`backend_url`] builds that URL only when
//! the result provably stays under the configured base, so a device cannot reach other paths,
//! queries or hosts of the backend. [`super::Router::device_request`] answers any
//! [`BadPath`] with status 400 and counts it as `broker_device_requests_total{result="bad_path"}`.
//!
//! Two layers: the raw path is checked for every form a URL parser or an HTTP server may
//! later turn into a separator or a parent step (dot segments, percent-encoded dots, slashes
//! and backslashes, backslashes, empty segments, `?`, `#`, control characters), and then the
//! parsed, normalised URL is compared with the parsed base (same origin, same query, path under
//! the base path). The second layer holds even if the first misses a form.

use reqwest::Url;

/// Longest path a device may ask for, bytes.
pub const MAX_PATH_LEN: usize = 255;

/// Why a device's request path was refused (the device gets status 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadPath {
    /// The path does not start with `/`.
    #[error("the path must start with /")]
    NotAbsolute,
    /// The path is longer than [`MAX_PATH_LEN`].
    #[error("the path is longer than {MAX_PATH_LEN} bytes")]
    TooLong,
    /// The path holds a control character.
    #[error("the path holds a control character")]
    ControlCharacter,
    /// The path holds `?` or `#`, which would start a query or fragment instead of a path.
    #[error("the path holds ? or #")]
    QueryOrFragment,
    /// The path holds a backslash, which URL parsers and some servers treat as `/`.
    #[error("the path holds a backslash")]
    Backslash,
    /// The path holds a percent-encoded `.`, `/` or `\` (`%2e`, `%2f`, `%5c`, any case).
    #[error("the path holds a percent-encoded dot, slash or backslash")]
    EncodedSeparator,
    /// The path holds `..`, a `.` segment or an empty segment (`//`), which normalise away.
    #[error("the path holds a dot segment, `..` or an empty segment")]
    DotOrEmptySegment,
    /// The normalised URL does not parse or is not under the configured base.
    #[error("the resulting URL is not under the backend base URL")]
    OutsideBase,
}

/// The URL a device request for `path` is sent to: `base` (trailing `/` removed) + `path`,
/// or why `path` is refused. `base` is `backend.device_request_url` (checked at start-up).
pub fn backend_url(base: &str, path: &str) -> Result<Url, BadPath> {
    check_raw(path)?;
    let base = base.trim_end_matches('/');
    let base_url = Url::parse(base).map_err(|_| BadPath::OutsideBase)?;
    let url = Url::parse(&format!("{base}{path}")).map_err(|_| BadPath::OutsideBase)?;
    if !is_under(&base_url, &url) {
        return Err(BadPath::OutsideBase);
    }
    Ok(url)
}

/// The checks on the path as the device sent it.
fn check_raw(path: &str) -> Result<(), BadPath> {
    if !path.starts_with('/') {
        return Err(BadPath::NotAbsolute);
    }
    if path.len() > MAX_PATH_LEN {
        return Err(BadPath::TooLong);
    }
    if path.chars().any(char::is_control) {
        return Err(BadPath::ControlCharacter);
    }
    if path.contains(['?', '#']) {
        return Err(BadPath::QueryOrFragment);
    }
    if path.contains('\\') {
        return Err(BadPath::Backslash);
    }
    let lower = path.to_ascii_lowercase();
    if ["%2e", "%2f", "%5c"].iter().any(|e| lower.contains(e)) {
        return Err(BadPath::EncodedSeparator);
    }
    // Any `..` (not only whole segments: the old rule, kept), `.` segments and `//`.
    if path.contains("..") || path[1..].split('/').any(|s| s == ".") || path.contains("//") {
        return Err(BadPath::DotOrEmptySegment);
    }
    Ok(())
}

/// Whether `url` has `base`'s origin and query and a path at or below `base`'s path.
fn is_under(base: &Url, url: &Url) -> bool {
    if url.origin() != base.origin()
        || url.username() != base.username()
        || url.query() != base.query()
        || url.fragment().is_some()
    {
        return false;
    }
    let prefix = base.path().trim_end_matches('/');
    match url.path().strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "http://127.0.0.1:8080/api";

    #[test]
    fn a_plain_path_is_appended_to_the_base() {
        let url = backend_url(BASE, "/echo/state").unwrap();
        assert_eq!(url.as_str(), "http://127.0.0.1:8080/api/echo/state");
        let url = backend_url("http://h/api/", "/x").unwrap();
        assert_eq!(url.as_str(), "http://h/api/x");
        let url = backend_url("http://h", "/").unwrap();
        assert_eq!(url.as_str(), "http://h/");
        // A dot inside a name is fine; percent-encoding of other bytes too.
        let url = backend_url(BASE, "/file.txt/a%20b").unwrap();
        assert_eq!(url.path(), "/api/file.txt/a%20b");
    }

    #[test]
    fn each_escaping_form_is_refused_with_its_reason() {
        for (path, want) in [
            ("relative", BadPath::NotAbsolute),
            ("", BadPath::NotAbsolute),
            ("/a\u{0}b", BadPath::ControlCharacter),
            ("/a\nb", BadPath::ControlCharacter),
            ("/a\tb", BadPath::ControlCharacter),
            ("/a\u{7f}", BadPath::ControlCharacter),
            ("/x?admin=1", BadPath::QueryOrFragment),
            ("/x#frag", BadPath::QueryOrFragment),
            ("/..\\admin", BadPath::Backslash),
            ("/a\\b", BadPath::Backslash),
            ("/%2e%2e/admin", BadPath::EncodedSeparator),
            ("/%2E%2E/admin", BadPath::EncodedSeparator),
            ("/.%2e/admin", BadPath::EncodedSeparator),
            ("/%2e./admin", BadPath::EncodedSeparator),
            ("/%2e/admin", BadPath::EncodedSeparator),
            ("/..%2fadmin", BadPath::EncodedSeparator),
            ("/a%2Fb", BadPath::EncodedSeparator),
            ("/a%5cb", BadPath::EncodedSeparator),
            ("/../admin", BadPath::DotOrEmptySegment),
            ("/a/..", BadPath::DotOrEmptySegment),
            ("/a/../../b", BadPath::DotOrEmptySegment),
            ("/./admin", BadPath::DotOrEmptySegment),
            ("/a/.", BadPath::DotOrEmptySegment),
            ("//evil.example/x", BadPath::DotOrEmptySegment),
            ("/a//b", BadPath::DotOrEmptySegment),
        ] {
            assert_eq!(backend_url(BASE, path), Err(want), "{path:?}");
        }
        let long = format!("/{}", "a".repeat(MAX_PATH_LEN));
        assert_eq!(backend_url(BASE, &long), Err(BadPath::TooLong));
        let longest = format!("/{}", "a".repeat(MAX_PATH_LEN - 1));
        assert!(backend_url(BASE, &longest).is_ok());
    }

    #[test]
    fn the_url_parser_would_have_left_the_base_for_the_refused_forms() {
        // Shows what the raw checks protect against: naive concatenation escapes the prefix.
        for path in ["/%2e%2e/admin", "/..\\admin", "/x?y", "/x#y"] {
            let naive = Url::parse(&format!("{BASE}{path}")).unwrap();
            let base = Url::parse(BASE).unwrap();
            assert!(!is_under(&base, &naive), "{path:?} -> {naive}");
        }
    }

    #[test]
    fn the_normalised_url_must_stay_under_the_base() {
        let base = Url::parse("http://h:1/api?k=1").unwrap();
        let under = |u: &str| is_under(&base, &Url::parse(u).unwrap());
        assert!(under("http://h:1/api?k=1"));
        assert!(under("http://h:1/api/x?k=1"));
        assert!(
            !under("http://h:1/apix?k=1"),
            "a sibling sharing the prefix"
        );
        assert!(!under("http://h:1/admin?k=1"));
        assert!(!under("http://h:1/api/x?k=2"), "another query");
        assert!(!under("http://h:1/api/x?k=1#f"), "a fragment");
        assert!(!under("http://other:1/api/x?k=1"), "another host");
        assert!(!under("http://h:2/api/x?k=1"), "another port");
        assert!(!under("https://h:1/api/x?k=1"), "another scheme");
        assert!(!under("http://u@h:1/api/x?k=1"), "added credentials");
    }
}
