//! End-to-end tests of engram across its crates; the tests live in `tests/`.
