//! Ranking of query results.
//!
//! `score = similarity × w_s + importance × w_i + recency × w_r`, where similarity is derived
//! from the distance ([`similarity`]) and recency is `0.5^(age / half-life)` with the age since
//! the last access (or the last write) and the half-life of the memory's type. With the default
//! weights (1, 0, 0) the order is the index's order by distance.
//!
//! When importance or recency weigh in, the store fetches `k × candidate_factor` nearest
//! candidates and re-ranks them. The trade-off: an entry outside those candidates is never
//! returned however important or recent it is; a larger factor widens the net at the cost of
//! a larger search. Ties are broken by distance, then id, so equal inputs give equal output.

use engram_config::{DistanceMetric, RankingConfig};
use engram_storage::Timestamp;

use crate::entry::MemoryEntry;

/// Similarity in `[0, 1]` from a distance: COSINE `1 - d/2` (d in `[0, 2]`), IP `1 - d`
/// (the dot product, clamped), L2 `1 / (1 + d)`.
pub fn similarity(metric: DistanceMetric, distance: f32) -> f64 {
    let d = f64::from(distance);
    let s = match metric {
        DistanceMetric::Cosine => 1.0 - d / 2.0,
        DistanceMetric::Ip => 1.0 - d,
        DistanceMetric::L2 => 1.0 / (1.0 + d.max(0.0)),
    };
    s.clamp(0.0, 1.0)
}

/// `0.5^(age / half_life)` for the age of the entry at `now` (1 for an entry from the future).
pub fn recency(entry: &MemoryEntry, now: Timestamp, half_life_ms: f64) -> f64 {
    let last = entry.last_accessed.unwrap_or(entry.updated_at).max(entry.updated_at);
    let age = now.as_millis().saturating_sub(last.as_millis()) as f64;
    if half_life_ms <= 0.0 { 0.0 } else { 0.5f64.powf(age / half_life_ms) }
}

/// Whether the weights leave the order to similarity alone.
pub fn is_pure_similarity(w: &RankingConfig) -> bool {
    w.importance == 0.0 && w.recency == 0.0
}

/// The final score.
pub fn score(w: &RankingConfig, similarity: f64, importance: f32, recency: f64) -> f64 {
    w.similarity * similarity + w.importance * f64::from(importance) + w.recency * recency
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn similarity_is_bounded_and_monotonic() {
        assert_eq!(similarity(DistanceMetric::Cosine, 0.0), 1.0);
        assert_eq!(similarity(DistanceMetric::Cosine, 2.0), 0.0);
        assert!(similarity(DistanceMetric::L2, 1.0) > similarity(DistanceMetric::L2, 2.0));
        assert_eq!(similarity(DistanceMetric::Ip, -3.0), 1.0, "clamped");
    }

    #[test]
    fn recency_halves_every_half_life() {
        let mut e = MemoryEntry::builder("n", "x").build().expect("valid");
        e.updated_at = Timestamp(0);
        e.last_accessed = None;
        assert!((recency(&e, Timestamp(1000), 1000.0) - 0.5).abs() < 1e-12);
        assert!((recency(&e, Timestamp(2000), 1000.0) - 0.25).abs() < 1e-12);
        e.last_accessed = Some(Timestamp(2000));
        assert!(
            (recency(&e, Timestamp(2000), 1000.0) - 1.0).abs() < 1e-12,
            "an access resets the age"
        );
    }
}
