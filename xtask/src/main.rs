//! `cargo xtask`: the project's single automation entry.
fn main() {}
