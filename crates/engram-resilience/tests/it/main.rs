//! Integration tests of `engram-resilience` through its public API only.

mod breaker_model;
mod compose;
mod metrics;
