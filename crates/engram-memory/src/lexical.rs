//! A built-in lexical embedder for demos and tests: deterministic feature hashing of word
//! unigrams and bigrams into the index dimension, L2-normalised.
//!
//! It is a lightweight stand-in, not a language model: texts that share words (and word
//! pairs) get similar vectors, synonyms do not. Real deployments pass their model's vectors.
//! Nothing is downloaded.

/// Feature-hashing embedder of a fixed dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LexicalEmbedder {
    dimension: usize,
}

fn fnv1a(bytes: &[u8], seed: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl LexicalEmbedder {
    /// An embedder producing vectors of `dimension` elements (at least 1).
    pub fn new(dimension: usize) -> Self {
        Self { dimension: dimension.max(1) }
    }

    /// The dimension of the vectors.
    pub fn dimension(&self) -> usize {
        self.dimension
    }

    /// The embedding of `text`: each lowercase word and each pair of neighbouring words adds
    /// ±1 (bigrams ±0.5) at a hashed position; the result is L2-normalised. A text without
    /// words gets a fixed unit vector, so it is never the zero vector.
    pub fn embed(&self, text: &str) -> Vec<f32> {
        let words = engram_storage::filter::tokenize(text);
        let mut v = vec![0.0f32; self.dimension];
        let mut add = |feature: &str, weight: f32| {
            let h = fnv1a(feature.as_bytes(), 0);
            let i = (h % self.dimension as u64) as usize;
            let sign = if fnv1a(feature.as_bytes(), 0x9e37_79b9) & 1 == 0 { 1.0 } else { -1.0 };
            v[i] += sign * weight;
        };
        for w in &words {
            add(w, 1.0);
        }
        for pair in words.windows(2) {
            add(&format!("{} {}", pair[0], pair[1]), 0.5);
        }
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm == 0.0 {
            v[0] = 1.0;
        } else {
            v.iter_mut().for_each(|x| *x /= norm);
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cos(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn deterministic_normalised_and_lexically_similar() {
        let e = LexicalEmbedder::new(256);
        let a = e.embed("The user prefers short answers");
        assert_eq!(a, e.embed("the USER prefers short answers!"));
        assert!((cos(&a, &a) - 1.0).abs() < 1e-5);
        let near = e.embed("user prefers short replies");
        let far = e.embed("the build failed on arm64");
        assert!(cos(&a, &near) > cos(&a, &far) + 0.3, "{} vs {}", cos(&a, &near), cos(&a, &far));
        let empty = e.embed("  ...  ");
        assert!((cos(&empty, &empty) - 1.0).abs() < 1e-6, "never the zero vector");
    }
}
