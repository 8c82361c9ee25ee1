//! See docs/protocol.md (work in progress).
