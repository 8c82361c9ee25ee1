//! Reading a back-end HTTP response body with a size cap enforced while it streams in: the
//! body is read chunk by chunk and reading stops (the connection is dropped) as soon as it
//! would pass the cap, so a back end sending a huge or endless body costs the broker at most
//! the cap plus one chunk. A `content-length` over the cap is refused before any body is read.

use bytes::{Bytes, BytesMut};

/// Why a capped body could not be read.
#[derive(Debug, PartialEq, Eq)]
pub enum CappedBodyError {
    /// The body is longer than the cap (announced or seen while reading).
    TooLarge,
    /// The request's timeout passed while reading.
    Timeout,
    /// The connection failed while reading.
    Failed,
}

/// Reads `resp`'s body, at most `cap` bytes (see module docs).
pub async fn read_capped(
    mut resp: reqwest::Response,
    cap: usize,
) -> Result<Bytes, CappedBodyError> {
    if resp.content_length().is_some_and(|n| n > cap as u64) {
        return Err(CappedBodyError::TooLarge);
    }
    let mut body = BytesMut::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > cap {
                    // Dropping `resp` here closes the connection: nothing more is read.
                    return Err(CappedBodyError::TooLarge);
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body.freeze()),
            Err(e) if e.is_timeout() => return Err(CappedBodyError::Timeout),
            Err(_) => return Err(CappedBodyError::Failed),
        }
    }
}
