//! Hardware-in-the-loop test runner. Work in progress: see issue 4.
