//! Vector validation and the distance definitions shared with RediSearch.

use crate::error::{ErrorKind, Operation, StorageError};
use crate::schema::{DistanceMetric, VectorSpec};

/// Checks a vector before any I/O: the index's dimension, finite elements, and not all zero
/// under COSINE (a zero vector has no direction).
///
/// # Errors
/// [`ErrorKind::DimensionMismatch`] or [`ErrorKind::InvalidInput`].
pub fn validate(v: &[f32], spec: &VectorSpec) -> Result<(), StorageError> {
    let op = Operation::Validate;
    if v.len() != spec.dimension as usize {
        return Err(StorageError::new(
            ErrorKind::DimensionMismatch,
            op,
            format!("vector has {} dimensions, index expects {}", v.len(), spec.dimension),
        ));
    }
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        return Err(StorageError::new(
            ErrorKind::InvalidInput,
            op,
            format!("vector element {i} is {}, elements must be finite", v[i]),
        ));
    }
    if spec.metric == DistanceMetric::Cosine && v.iter().all(|x| *x == 0.0) {
        return Err(StorageError::new(
            ErrorKind::InvalidInput,
            op,
            "vector is all zeros, which has no direction under COSINE distance",
        ));
    }
    Ok(())
}

/// The distance RediSearch reports between `a` and `b`: COSINE `1 - cos(a, b)`, L2 the
/// squared Euclidean distance, IP `1 - a·b`. Computed in f64 and rounded to f32.
pub fn distance(metric: DistanceMetric, a: &[f32], b: &[f32]) -> f32 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum();
    let d = match metric {
        DistanceMetric::Cosine => {
            let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
            let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
            1.0 - dot / (na * nb)
        }
        DistanceMetric::L2 => {
            a.iter().zip(b).map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2)).sum()
        }
        DistanceMetric::Ip => 1.0 - dot,
    };
    d as f32
}

/// Encodes a vector as FLOAT32 little-endian bytes, the layout RediSearch reads.
pub fn to_le_bytes(v: &[f32]) -> Vec<u8> {
    let mut out = vec![0; v.len() * 4];
    for (b, x) in out.chunks_exact_mut(4).zip(v) {
        b.copy_from_slice(&x.to_le_bytes());
    }
    out
}

/// Decodes FLOAT32 little-endian bytes; `None` when the length is not a multiple of 4.
pub fn from_le_bytes(bytes: &[u8]) -> Option<Vec<f32>> {
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    Some(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::schema::{Algorithm, VectorType};

    fn spec(dim: u32, metric: DistanceMetric) -> VectorSpec {
        VectorSpec {
            dimension: dim,
            metric,
            vector_type: VectorType::Float32,
            algorithm: Algorithm::Flat,
        }
    }

    #[test]
    fn rejects_bad_vectors_with_typed_errors() {
        let s = spec(3, DistanceMetric::Cosine);
        assert_eq!(validate(&[1.0, 2.0], &s).unwrap_err().kind(), ErrorKind::DimensionMismatch);
        assert_eq!(validate(&[], &s).unwrap_err().kind(), ErrorKind::DimensionMismatch);
        assert_eq!(
            validate(&[1.0, f32::NAN, 0.0], &s).unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
        assert_eq!(
            validate(&[1.0, f32::INFINITY, 0.0], &s).unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
        assert_eq!(validate(&[0.0; 3], &s).unwrap_err().kind(), ErrorKind::InvalidInput);
        assert!(validate(&[0.0; 3], &spec(3, DistanceMetric::L2)).is_ok());
        let e = validate(&[1.0; 12], &spec(384, DistanceMetric::Ip)).unwrap_err();
        assert_eq!(e.message(), "vector has 12 dimensions, index expects 384");
    }

    #[test]
    fn distances_match_redisearch_definitions() {
        let (a, b) = ([1.0, 0.0], [0.0, 2.0]);
        assert!((distance(DistanceMetric::Cosine, &a, &b) - 1.0).abs() < 1e-6);
        assert!((distance(DistanceMetric::Cosine, &a, &[3.0, 0.0])).abs() < 1e-6);
        assert!((distance(DistanceMetric::L2, &a, &b) - 5.0).abs() < 1e-6, "squared, not rooted");
        assert!((distance(DistanceMetric::Ip, &[0.6, 0.8], &[0.6, 0.8])).abs() < 1e-6);
    }

    proptest! {
        #[test]
        fn le_bytes_round_trip(v in proptest::collection::vec(any::<f32>().prop_filter("finite", |x| x.is_finite()), 0..64)) {
            prop_assert_eq!(from_le_bytes(&to_le_bytes(&v)), Some(v));
        }
    }
}
