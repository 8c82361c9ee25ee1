//! App tokens: JWT-compatible compact HS256 (docs/protocol.md section 7.1).
//!
//! `token = b64url(header) "." b64url(claims) "." b64url(HMAC-SHA256(secret, b64url(header) "."
//! b64url(claims)))`, base64url without padding (RFC 7515). The header must say `"alg":"HS256"`;
//! the claims carry the terminal (`id`, `kind`) and `exp` (Unix seconds). Any standard JWT
//! library can mint tokens the broker accepts. [`verify`] checks, in this order: the form, the
//! algorithm, the signature (constant-time), the claims, then the expiry against an injected
//! `now_secs`.

use std::fmt;
use std::string::String;
use std::vec::Vec;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::codes::Code;
use crate::ids::{Address, Kind, id_bits_from_i64};
use crate::limits::MAX_TOKEN;

/// What a token asserts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Claims {
    /// The terminal the bearer is.
    pub address: Address,
    /// Expiry, Unix seconds: the token is valid while `now < exp`.
    pub exp: u64,
}

#[derive(Serialize, Deserialize)]
struct Header<'a> {
    alg: &'a str,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    typ: Option<&'a str>,
}

#[derive(Serialize, Deserialize)]
struct WireClaims {
    id: i64,
    kind: Kind,
    exp: u64,
}

/// Why a token was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenError {
    /// Not three base64url parts of JSON with the expected fields, or longer than [`MAX_TOKEN`].
    Malformed,
    /// The header's `alg` is not `HS256` (including `none`).
    WrongAlg,
    /// The signature does not verify with the broker's secret.
    BadSignature,
    /// `now >= exp`.
    Expired,
}

impl TokenError {
    /// The code for a `reject`: `TOKEN_EXPIRED` for an expired token, else `BAD_TOKEN`.
    pub const fn code(self) -> Code {
        match self {
            TokenError::Expired => Code::TOKEN_EXPIRED,
            _ => Code::BAD_TOKEN,
        }
    }
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TokenError::Malformed => "malformed token",
            TokenError::WrongAlg => "token algorithm is not HS256",
            TokenError::BadSignature => "bad token signature",
            TokenError::Expired => "token expired",
        })
    }
}

impl std::error::Error for TokenError {}

fn mac(secret: &[u8], signing_input: &str) -> Hmac<Sha256> {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(signing_input.as_bytes());
    mac
}

/// Mints a token for `claims`, signed with `secret` (at least 32 random bytes recommended).
/// The `id` claim is written as the unsigned value of the id bits.
pub fn mint(secret: &[u8], claims: &Claims) -> String {
    let header = Header {
        alg: "HS256",
        typ: Some("JWT"),
    };
    let wire = WireClaims {
        id: i64::from(claims.address.id),
        kind: claims.address.kind,
        exp: claims.exp,
    };
    // Serialising these plain structs to JSON cannot fail.
    let header = serde_json::to_vec(&header).unwrap_or_default();
    let wire = serde_json::to_vec(&wire).unwrap_or_default();
    let mut token = URL_SAFE_NO_PAD.encode(header);
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(wire));
    let tag = mac(secret, &token).finalize().into_bytes();
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(tag));
    token
}

fn part(b64: &str) -> Result<Vec<u8>, TokenError> {
    URL_SAFE_NO_PAD
        .decode(b64.as_bytes())
        .map_err(|_| TokenError::Malformed)
}

/// Verifies `token` with `secret` at time `now_secs` (Unix seconds) and returns its claims.
/// The `id` claim may be any integer in `-2^31..=2^32-1` (negative: two's-complement bits).
/// No ID-profile check is done here: pass the address to [`crate::ids::IdProfile::validate`].
pub fn verify(secret: &[u8], token: &str, now_secs: u64) -> Result<Claims, TokenError> {
    if token.len() > MAX_TOKEN {
        return Err(TokenError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let header_bytes = part(h)?;
    let header: Header<'_> =
        serde_json::from_slice(&header_bytes).map_err(|_| TokenError::Malformed)?;
    if header.alg != "HS256" {
        return Err(TokenError::WrongAlg);
    }
    let signature = part(s)?;
    let signing_input = &token[..h.len() + 1 + c.len()];
    mac(secret, signing_input)
        .verify_slice(&signature)
        .map_err(|_| TokenError::BadSignature)?;
    let wire: WireClaims = serde_json::from_slice(&part(c)?).map_err(|_| TokenError::Malformed)?;
    let id = id_bits_from_i64(wire.id).ok_or(TokenError::Malformed)?;
    if now_secs >= wire.exp {
        return Err(TokenError::Expired);
    }
    Ok(Claims {
        address: Address {
            kind: wire.kind,
            id,
        },
        exp: wire.exp,
    })
}

/// The address `token` claims, read WITHOUT checking its signature or expiry: for telling an
/// operator which terminal a refused token named (a forged token names whatever it likes), never
/// for deciding anything. `None` when the claims part does not parse.
pub fn claimed_address(token: &str) -> Option<Address> {
    if token.len() > MAX_TOKEN {
        return None;
    }
    let claims = token.split('.').nth(1)?;
    let wire: WireClaims = serde_json::from_slice(&part(claims).ok()?).ok()?;
    Some(Address {
        kind: wire.kind,
        id: id_bits_from_i64(wire.id)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn claims() -> Claims {
        Claims {
            address: Address::phone(7),
            exp: 1_000,
        }
    }

    #[test]
    fn the_claimed_address_is_read_even_from_a_token_that_fails() {
        let t = mint(SECRET, &claims());
        assert_eq!(claimed_address(&t), Some(Address::phone(7)));
        // A bad signature or an expired token still names what it claims; garbage names nothing.
        let mut bad = t.clone();
        bad.push('x');
        assert_eq!(claimed_address(&bad), Some(Address::phone(7)));
        assert_eq!(verify(SECRET, &t, 5_000), Err(TokenError::Expired));
        assert_eq!(claimed_address(&t), Some(Address::phone(7)));
        assert_eq!(claimed_address("a.b.c"), None);
        assert_eq!(claimed_address("nodots"), None);
    }

    #[test]
    fn mint_then_verify() {
        let t = mint(SECRET, &claims());
        assert_eq!(verify(SECRET, &t, 999), Ok(claims()));
        assert_eq!(verify(SECRET, &t, 1_000), Err(TokenError::Expired));
        assert_eq!(verify(b"other", &t, 0), Err(TokenError::BadSignature));
        assert_eq!(TokenError::Expired.code(), Code::TOKEN_EXPIRED);
        assert_eq!(TokenError::BadSignature.code(), Code::BAD_TOKEN);
    }

    /// A token made by hand the way any JWT library does (header with `typ`, claims in another
    /// order, an extra claim, a negative `signed`-profile id).
    #[test]
    fn foreign_token_is_accepted() {
        let h = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"HS256"}"#);
        let c = URL_SAFE_NO_PAD.encode(br#"{"exp":2000,"iat":1,"kind":"phone","id":-7}"#);
        let input = std::format!("{h}.{c}");
        let sig = URL_SAFE_NO_PAD.encode(mac(SECRET, &input).finalize().into_bytes());
        let t = std::format!("{input}.{sig}");
        assert_eq!(
            verify(SECRET, &t, 5),
            Ok(Claims {
                address: Address::phone(-7i32 as u32),
                exp: 2000
            })
        );
    }

    #[test]
    fn tampering_and_bad_forms() {
        let t = mint(SECRET, &claims());
        let (hc, _) = t.rsplit_once('.').unwrap();
        let (h, _) = hc.split_once('.').unwrap();
        // Claims swapped for a device: signature no longer matches.
        let forged = URL_SAFE_NO_PAD.encode(br#"{"id":7,"kind":"device","exp":1000}"#);
        let sig = t.rsplit_once('.').unwrap().1;
        assert_eq!(
            verify(SECRET, &std::format!("{h}.{forged}.{sig}"), 0),
            Err(TokenError::BadSignature)
        );
        let none = URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#);
        let c = hc.split_once('.').unwrap().1;
        assert_eq!(
            verify(SECRET, &std::format!("{none}.{c}."), 0),
            Err(TokenError::WrongAlg)
        );
        assert_eq!(verify(SECRET, "a.b", 0), Err(TokenError::Malformed));
        assert_eq!(
            verify(SECRET, &std::format!("{t}.x"), 0),
            Err(TokenError::Malformed)
        );
        assert_eq!(verify(SECRET, "!.!.!", 0), Err(TokenError::Malformed));
    }
}
