//! Per-memory-type policies: expiry, refresh on read, relevance decay.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::duration;
use crate::problems::Collector;

const HOUR: u64 = 3600;
const DAY: u64 = 24 * HOUR;

/// How memories of one type live and fade.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryPolicy {
    /// Time to live from the last write (or read, with `refresh_on_read`), or `"none"` to
    /// keep for ever.
    #[serde(with = "duration::optional")]
    pub ttl: Option<Duration>,
    /// Random spread of the TTL, as a fraction in `[0, 1)`, so that memories written together
    /// do not all expire in the same second. 0.1 gives TTLs within ±10%.
    pub ttl_jitter_ratio: f64,
    /// Whether reading a memory restarts its TTL.
    pub refresh_on_read: bool,
    /// Age at which the recency part of a memory's score has halved.
    #[serde(with = "humantime_serde")]
    pub decay_half_life: Duration,
}

impl MemoryPolicy {
    fn new(ttl: Option<u64>, refresh_on_read: bool, half_life: u64) -> Self {
        Self {
            ttl: ttl.map(Duration::from_secs),
            ttl_jitter_ratio: 0.1,
            refresh_on_read,
            decay_half_life: Duration::from_secs(half_life),
        }
    }

    fn validate(&self, path: &str, c: &mut Collector) {
        if let Some(ttl) = self.ttl {
            c.check(ttl >= Duration::from_millis(1), &format!("{path}.ttl"), || {
                "must be at least 1ms, or \"none\"".to_owned()
            });
        }
        let ratio = self.ttl_jitter_ratio;
        c.check(
            ratio.is_finite() && (0.0..1.0).contains(&ratio),
            &format!("{path}.ttl_jitter_ratio"),
            || format!("({ratio}) must be at least 0 and below 1"),
        );
        c.nonzero(self.decay_half_life, &format!("{path}.decay_half_life"));
    }
}

/// The policy of each memory type.
///
/// Defaults:
///
/// | type | ttl | refresh on read | decay half-life |
/// |---|---|---|---|
/// | short-term | 4 h | yes | 1 h |
/// | working | 1 h | yes | 15 min |
/// | episodic | 7 days | no | 3 days |
/// | long-term | 30 days | yes | 30 days |
/// | semantic | 30 days | yes | 90 days |
///
/// All with a TTL jitter ratio of 0.1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MemoryPolicies {
    /// Short-term memory: what the agent noticed recently. Default: ttl `4h`, refresh on read,
    /// half-life `1h`.
    pub short_term: MemoryPolicy,
    /// Working memory: scratch state of the task at hand. Default: ttl `1h`, refresh on read,
    /// half-life `15m`.
    pub working: MemoryPolicy,
    /// Episodic memory: what happened, in order. Default: ttl `7days`, no refresh,
    /// half-life `3days`.
    pub episodic: MemoryPolicy,
    /// Long-term memory: what the agent should keep. Default: ttl `30days`, refresh on read,
    /// half-life `30days`.
    pub long_term: MemoryPolicy,
    /// Semantic memory: facts and knowledge. Default: ttl `30days`, refresh on read,
    /// half-life `90days`.
    pub semantic: MemoryPolicy,
    /// Duplicate detection on write.
    pub dedup: DedupConfig,
    /// How query results are ranked.
    pub ranking: RankingConfig,
}

/// Duplicate detection on write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DedupConfig {
    /// Whether adding content identical to an existing entry of the same namespace returns the
    /// existing entry's id instead of storing a second one (also between the entries of one
    /// batch). A batch looks its duplicates up with one search per namespace, not one per
    /// entry. Default: `true`.
    pub exact: bool,
    /// When set, adding an entry whose embedding is within this distance of an existing
    /// entry of the same namespace and type returns that entry's id. Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub near_distance: Option<f32>,
}

impl Default for DedupConfig {
    fn default() -> Self {
        Self { exact: true, near_distance: None }
    }
}

/// Weights of the final score of a query result:
/// `similarity × s + importance × i + recency × r`, where recency halves every
/// `decay_half_life` of the memory's type. With the defaults the score is the similarity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RankingConfig {
    /// Weight of vector similarity. Default: `1.0`.
    pub similarity: f64,
    /// Weight of importance. Default: `0.0`.
    pub importance: f64,
    /// Weight of recency. Default: `0.0`.
    pub recency: f64,
    /// When importance or recency weigh in, the store fetches `k × candidate_factor`
    /// nearest candidates and re-ranks them: a larger factor finds more entries that are less
    /// similar but more important or recent, at the cost of a larger search. Default: `4`.
    pub candidate_factor: u32,
}

impl Default for RankingConfig {
    fn default() -> Self {
        Self { similarity: 1.0, importance: 0.0, recency: 0.0, candidate_factor: 4 }
    }
}

impl Default for MemoryPolicies {
    fn default() -> Self {
        Self {
            short_term: MemoryPolicy::new(Some(4 * HOUR), true, HOUR),
            working: MemoryPolicy::new(Some(HOUR), true, 15 * 60),
            episodic: MemoryPolicy::new(Some(7 * DAY), false, 3 * DAY),
            long_term: MemoryPolicy::new(Some(30 * DAY), true, 30 * DAY),
            semantic: MemoryPolicy::new(Some(30 * DAY), true, 90 * DAY),
            dedup: DedupConfig::default(),
            ranking: RankingConfig::default(),
        }
    }
}

impl MemoryPolicies {
    /// The policies with the name of their memory type, in declaration order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &MemoryPolicy)> {
        [
            ("short_term", &self.short_term),
            ("working", &self.working),
            ("episodic", &self.episodic),
            ("long_term", &self.long_term),
            ("semantic", &self.semantic),
        ]
        .into_iter()
    }

    pub(crate) fn validate(&self, c: &mut Collector) {
        for (name, policy) in self.iter() {
            policy.validate(&format!("memory.{name}"), c);
        }
        if let Some(d) = self.dedup.near_distance {
            c.check(d.is_finite() && d >= 0.0, "memory.dedup.near_distance", || {
                format!("({d}) must be a finite number of at least 0")
            });
        }
        let r = &self.ranking;
        for (name, w) in
            [("similarity", r.similarity), ("importance", r.importance), ("recency", r.recency)]
        {
            c.ratio(w, 0.0, 1000.0, &format!("memory.ranking.{name}"));
        }
        c.check(r.similarity + r.importance + r.recency > 0.0, "memory.ranking", || {
            "needs at least one weight above 0".to_owned()
        });
        c.check((1..=100).contains(&r.candidate_factor), "memory.ranking.candidate_factor", || {
            format!("({}) must be between 1 and 100", r.candidate_factor)
        });
    }
}
