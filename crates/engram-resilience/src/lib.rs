//! Resilience mechanisms for engram, independent of Redis and storage.
//!
//! This crate will own the backoff strategies (fixed, linear, exponential, with none, full,
//! equal or decorrelated jitter), the retry policy with its retry budget, the circuit breaker,
//! the health checker, and the clock and randomness seams that let tests run them on paused
//! time. It takes its settings from `engram-config` and knows nothing of Redis, storage or the
//! memory domain: it compiles and tests without a server.
//!
//! It is empty until the resilience issue lands.
