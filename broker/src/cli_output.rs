//! Writing command output to stdout the way command-line tools should: a reader that goes
//! away early (`broker config check | head`) ends the output quietly instead of a panic with
//! a backtrace, which is what `println!` does on a closed pipe.

use std::io::{ErrorKind, Write};

/// Writes `text` to stdout and flushes. A closed pipe counts as success (the reader has all it
/// wanted); any other failure is returned.
pub fn print(text: &str) -> std::io::Result<()> {
    write_to(&mut std::io::stdout().lock(), text)
}

/// [`print()`] into any writer (tests use a writer that behaves like a closed pipe).
pub fn write_to(out: &mut impl Write, text: &str) -> std::io::Result<()> {
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Closed;

    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    struct Full;

    impl Write for Full {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::from_raw_os_error(28))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_closed_pipe_ends_quietly_and_other_errors_are_reported() {
        assert!(write_to(&mut Closed, "x\n").is_ok());
        assert!(write_to(&mut Full, "x\n").is_err());
        let mut v = Vec::new();
        write_to(&mut v, "abc\n").unwrap();
        assert_eq!(v, b"abc\n");
    }
}
