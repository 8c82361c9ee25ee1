//! A strict, allocation-free reader for the lookup answer's JSON:
//! `{"nodes":[{"id":..,"udp":"h:p","ws":"ws://h:p/","app_ws":..},...],"stale":false}`.
//!
//! Written here rather than taking `serde-json-core`: the SDK needs two string fields and a
//! boolean from one fixed shape, a scanner is a few hundred bytes of code, and it skips unknown
//! members of any JSON type (forward compatible) without a derive. Every value is validated
//! (the body must be one well-formed JSON value); nesting deeper than [`MAX_DEPTH`] is refused,
//! so malicious input cannot exhaust the stack. Strings with escapes are validated; a wanted
//! field containing one is treated as absent (addresses never need escapes).

use super::LookupError;

/// Deepest nesting of arrays and objects accepted.
pub(super) const MAX_DEPTH: usize = 8;

/// The fields of one `nodes` entry the client uses.
#[derive(Default)]
pub(super) struct Entry<'a> {
    /// `udp`: `host:port`.
    pub udp: Option<&'a str>,
    /// `ws`: a URL.
    pub ws: Option<&'a str>,
}

/// Calls `on_node` for each entry of `nodes`, in order; returns `stale`.
pub(super) fn parse_lookup<'a>(
    body: &'a [u8],
    mut on_node: impl FnMut(Entry<'a>),
) -> Result<bool, LookupError> {
    let mut p = Parser { s: body, i: 0 };
    let mut stale = None;
    let mut saw_nodes = false;
    p.object(|p, key| {
        match key {
            Key::Plain(b"nodes") => {
                saw_nodes = true;
                p.array(|p| {
                    let mut entry = Entry::default();
                    p.object(|p, key| {
                        match key {
                            Key::Plain(b"udp") => entry.udp = p.optional_string()?,
                            Key::Plain(b"ws") => entry.ws = p.optional_string()?,
                            _ => p.skip_value(2)?,
                        }
                        Ok(())
                    })?;
                    on_node(entry);
                    Ok(())
                })?;
            }
            Key::Plain(b"stale") => stale = Some(p.boolean()?),
            _ => p.skip_value(1)?,
        }
        Ok(())
    })?;
    p.ws();
    if p.i != p.s.len() || !saw_nodes {
        return Err(LookupError::BadJson);
    }
    Ok(stale.unwrap_or(false))
}

enum Key<'a> {
    Plain(&'a [u8]),
    Escaped,
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

type R<T> = Result<T, LookupError>;

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.i += 1;
        }
    }

    fn eat(&mut self, b: u8) -> R<()> {
        self.ws();
        if self.peek() == Some(b) {
            self.i += 1;
            Ok(())
        } else {
            Err(LookupError::BadJson)
        }
    }

    fn literal(&mut self, word: &[u8]) -> R<()> {
        let end = self.i + word.len();
        if self.s.get(self.i..end) == Some(word) {
            self.i = end;
            Ok(())
        } else {
            Err(LookupError::BadJson)
        }
    }

    /// A string; returns its raw content and whether it had escapes.
    fn string(&mut self) -> R<(&'a [u8], bool)> {
        self.eat(b'"')?;
        let start = self.i;
        let mut escaped = false;
        loop {
            match self.peek().ok_or(LookupError::BadJson)? {
                b'"' => break,
                b'\\' => {
                    escaped = true;
                    self.i += 1;
                    match self.peek().ok_or(LookupError::BadJson)? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.i += 1,
                        b'u' => {
                            let hex = self.s.get(self.i + 1..self.i + 5);
                            if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                                return Err(LookupError::BadJson);
                            }
                            self.i += 5;
                        }
                        _ => return Err(LookupError::BadJson),
                    }
                }
                0..0x20 => return Err(LookupError::BadJson),
                _ => self.i += 1,
            }
        }
        let raw = &self.s[start..self.i];
        self.i += 1;
        core::str::from_utf8(raw).map_err(|_| LookupError::BadJson)?;
        Ok((raw, escaped))
    }

    /// A string or `null`; a string with escapes counts as absent.
    fn optional_string(&mut self) -> R<Option<&'a str>> {
        self.ws();
        if self.peek() == Some(b'n') {
            self.literal(b"null")?;
            return Ok(None);
        }
        let (raw, escaped) = self.string()?;
        // Valid UTF-8: checked by `string`.
        Ok((!escaped).then(|| core::str::from_utf8(raw).ok()).flatten())
    }

    fn boolean(&mut self) -> R<bool> {
        self.ws();
        match self.peek() {
            Some(b't') => self.literal(b"true").map(|()| true),
            Some(b'f') => self.literal(b"false").map(|()| false),
            _ => Err(LookupError::BadJson),
        }
    }

    fn number(&mut self) -> R<()> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        let digits = |p: &mut Self| {
            let from = p.i;
            while p.peek().is_some_and(|b| b.is_ascii_digit()) {
                p.i += 1;
            }
            p.i > from
        };
        if !digits(self) {
            return Err(LookupError::BadJson);
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if !digits(self) {
                return Err(LookupError::BadJson);
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if !digits(self) {
                return Err(LookupError::BadJson);
            }
        }
        debug_assert!(self.i > start);
        Ok(())
    }

    /// `{ "key": value, ... }`; `member` reads (or skips) each value.
    fn object(&mut self, mut member: impl FnMut(&mut Self, Key<'a>) -> R<()>) -> R<()> {
        self.eat(b'{')?;
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(());
        }
        loop {
            let (raw, escaped) = self.string()?;
            self.eat(b':')?;
            member(
                self,
                if escaped {
                    Key::Escaped
                } else {
                    Key::Plain(raw)
                },
            )?;
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return Err(LookupError::BadJson),
            }
        }
    }

    /// `[ value, ... ]`; `element` reads each value.
    fn array(&mut self, mut element: impl FnMut(&mut Self) -> R<()>) -> R<()> {
        self.eat(b'[')?;
        self.ws();
        if self.peek() == Some(b']') {
            self.i += 1;
            return Ok(());
        }
        loop {
            element(self)?;
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b']') => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return Err(LookupError::BadJson),
            }
        }
    }

    /// Skips one value of any type at nesting `depth`.
    fn skip_value(&mut self, depth: usize) -> R<()> {
        if depth > MAX_DEPTH {
            return Err(LookupError::BadJson);
        }
        self.ws();
        match self.peek().ok_or(LookupError::BadJson)? {
            b'"' => self.string().map(drop),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'{' => self.object(|p, _| p.skip_value(depth + 1)),
            b'[' => self.array(|p| p.skip_value(depth + 1)),
            b'-' | b'0'..=b'9' => self.number(),
            _ => Err(LookupError::BadJson),
        }
    }
}
