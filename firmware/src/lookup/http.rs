//! The few parts of an HTTP/1.x response the lookup reads: the status and the body.
//!
//! The body is what follows the header block, cut to `Content-Length` when that header is
//! there (the connection's close ends it otherwise). `Transfer-Encoding` (chunked) is not read:
//! the broker answers with a length, and the request says `Connection: close`.

use super::LookupError;

/// The body of a `200` response; other statuses are [`LookupError::Status`].
pub(super) fn body_of_200(response: &[u8]) -> Result<&[u8], LookupError> {
    let end = find(response, b"\r\n\r\n").ok_or(LookupError::BadHttp)?;
    let head = core::str::from_utf8(&response[..end]).map_err(|_| LookupError::BadHttp)?;
    let body = &response[end + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or(LookupError::BadHttp)?;
    let status = status(status_line)?;
    let mut length = None;
    for line in lines {
        let (name, value) = line.split_once(':').ok_or(LookupError::BadHttp)?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let n: usize = value.parse().map_err(|_| LookupError::BadHttp)?;
            if length.is_some_and(|l| l != n) {
                return Err(LookupError::BadHttp);
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(LookupError::BadHttp);
        }
    }
    if status != 200 {
        return Err(LookupError::Status(status));
    }
    match length {
        Some(n) => body.get(..n).ok_or(LookupError::BadHttp),
        None => Ok(body),
    }
}

fn status(line: &str) -> Result<u16, LookupError> {
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().ok_or(LookupError::BadHttp)?;
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(LookupError::BadHttp);
    }
    let code = parts.next().ok_or(LookupError::BadHttp)?;
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(LookupError::BadHttp);
    }
    code.parse().map_err(|_| LookupError::BadHttp)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
