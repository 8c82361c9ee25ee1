//! Decoding of what Redis hands back, as pure functions over bytes: the store's only trust
//! boundary on reads (a corrupted or foreign key must give [`StoreError::Corrupt`], never a panic
//! or a wrong message). Used by [`super::RedisStore`] and fuzzed (`broker/fuzz`).

use bytes::Bytes;

use crate::store::{StoreError, StoredMessage};
use crate::terminal::{Address, from_key};

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("redis {what}"))
}

/// A decimal `u64` as Redis stores it (no sign, no spaces).
pub fn decimal_u64(b: &[u8], what: &str) -> Result<u64, StoreError> {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| corrupt(what))
}

/// A packed terminal key (decimal) back to its address.
pub fn terminal(b: &[u8]) -> Result<Address, StoreError> {
    from_key(decimal_u64(b, "terminal key")?).ok_or_else(|| corrupt("terminal key"))
}

/// The `since` script's reply: rows of (id, expiry, sender or empty, payload), flattened.
pub fn since_reply(flat: &[Vec<u8>]) -> Result<Vec<StoredMessage>, StoreError> {
    if !flat.len().is_multiple_of(4) {
        return Err(corrupt("since reply"));
    }
    flat.chunks_exact(4)
        .map(|row| {
            let from = if row[2].is_empty() {
                None
            } else {
                Some(terminal(&row[2])?)
            };
            Ok(StoredMessage {
                msg_id: decimal_u64(&row[0], "message id")?,
                expires_at_ms: decimal_u64(&row[1], "expiry")?,
                from,
                payload: Bytes::copy_from_slice(&row[3]),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::terminal::AddressKey;

    #[test]
    fn decodes_rows_and_refuses_corrupt_ones() {
        let row = |id: &str, exp: &str, from: &[u8], p: &[u8]| {
            vec![
                id.as_bytes().to_vec(),
                exp.as_bytes().to_vec(),
                from.to_vec(),
                p.to_vec(),
            ]
        };
        let sender = Address::device(7).to_key().to_string();
        let mut flat = row("1", "99", b"", b"a");
        flat.extend(row("2", "100", sender.as_bytes(), b"\xff"));
        let got = since_reply(&flat).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(
            (got[0].msg_id, got[0].expires_at_ms, got[0].from),
            (1, 99, None)
        );
        assert_eq!(got[1].from, Some(Address::device(7)));
        assert_eq!(got[1].payload, Bytes::from_static(b"\xff"));
        assert!(matches!(
            since_reply(&flat[..3]),
            Err(StoreError::Corrupt(_))
        ));
        assert!(matches!(
            since_reply(&row("-1", "1", b"", b"")),
            Err(StoreError::Corrupt(_))
        ));
        assert!(matches!(
            since_reply(&row("1", "1", b"x", b"")),
            Err(StoreError::Corrupt(_))
        ));
        assert!(matches!(
            since_reply(&row("1", "1", u64::MAX.to_string().as_bytes(), b"")),
            Err(StoreError::Corrupt(_))
        ));
    }
}
