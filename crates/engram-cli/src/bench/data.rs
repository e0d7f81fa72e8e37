//! Benchmark data: clustered vectors generated here (the default, so that a fresh machine can
//! run the benchmark), or the dataset format of `shared/bench-data/README.md` with its ground
//! truth; and exact top-10 by brute force when no ground truth is given.

use std::path::Path;

use engram_resilience::{RandomSource, Rng};

use crate::error::{CliError, CliResult};

/// Number of clusters (= sections) of generated data, as many as the dataset's sections.
pub const SECTIONS: usize = 58;

/// Vectors, queries, their sections and the exact top-10 (unfiltered and within the query's
/// section).
#[derive(Debug, Clone)]
pub struct BenchData {
    /// Where the data came from (`generated` or the dataset directory).
    pub source: String,
    /// Dimension of every vector.
    pub dim: usize,
    /// Entry vectors, row-major.
    pub entries: Vec<f32>,
    /// Section of each entry.
    pub entry_sections: Vec<String>,
    /// Query vectors, row-major.
    pub queries: Vec<f32>,
    /// Section of each query.
    pub query_sections: Vec<String>,
    /// Exact top-10 entry rows per query.
    pub truth: Vec<Vec<i32>>,
    /// Exact top-10 within the query's section (may be shorter).
    pub truth_section: Vec<Vec<i32>>,
}

impl BenchData {
    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len() / self.dim
    }
    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
    /// Entry `i`.
    pub fn entry(&self, i: usize) -> &[f32] {
        &self.entries[i * self.dim..(i + 1) * self.dim]
    }
    /// Number of queries.
    pub fn query_count(&self) -> usize {
        self.queries.len() / self.dim
    }
    /// Query `i`.
    pub fn query(&self, i: usize) -> &[f32] {
        &self.queries[i * self.dim..(i + 1) * self.dim]
    }
}

fn gaussian(rng: &mut Rng) -> f32 {
    // Box-Muller; 53-bit uniforms in (0, 1].
    let u = |r: &mut Rng| ((r.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
    let (a, b) = (u(rng), u(rng));
    ((-2.0 * a.ln()).sqrt() * (2.0 * std::f64::consts::PI * b).cos()) as f32
}

fn normalise(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= n);
}

/// `n` entries and `q` queries in [`SECTIONS`] Gaussian clusters around random unit centres
/// (spread 0.8 per unit of centre norm, a little overlap between clusters), seeded.
pub fn generate(n: usize, q: usize, dim: usize, seed: u64) -> BenchData {
    let mut rng = Rng::seeded(seed);
    let centres: Vec<Vec<f32>> = (0..SECTIONS)
        .map(|_| {
            let mut c: Vec<f32> = (0..dim).map(|_| gaussian(&mut rng)).collect();
            normalise(&mut c);
            c
        })
        .collect();
    let spread = 0.8 / (dim as f32).sqrt();
    let point = |rng: &mut Rng, s: usize| -> Vec<f32> {
        let mut v: Vec<f32> = centres[s].iter().map(|c| c + spread * gaussian(rng)).collect();
        normalise(&mut v);
        v
    };
    let mut entries = Vec::with_capacity(n * dim);
    let mut entry_sections = Vec::with_capacity(n);
    for i in 0..n {
        // Uneven cluster sizes, as real sections are.
        let s = ((i * 7919) % (SECTIONS * (SECTIONS + 1) / 2)) as f64;
        let s = (((8.0 * s + 1.0).sqrt() - 1.0) / 2.0) as usize % SECTIONS;
        entries.extend(point(&mut rng, s));
        entry_sections.push(format!("s{s}"));
    }
    let mut queries = Vec::with_capacity(q * dim);
    let mut query_sections = Vec::with_capacity(q);
    for _ in 0..q {
        let s = (rng.next_u64() % SECTIONS as u64) as usize;
        queries.extend(point(&mut rng, s));
        query_sections.push(format!("s{s}"));
    }
    let mut data = BenchData {
        source: "generated".into(),
        dim,
        entries,
        entry_sections,
        queries,
        query_sections,
        truth: Vec::new(),
        truth_section: Vec::new(),
    };
    data.truth = exact_top10(&data, false);
    data.truth_section = exact_top10(&data, true);
    data
}

/// Exact top-10 by cosine (vectors are unit length), optionally within the query's section.
pub fn exact_top10(d: &BenchData, same_section: bool) -> Vec<Vec<i32>> {
    (0..d.query_count())
        .map(|qi| {
            let q = d.query(qi);
            let mut scored: Vec<(f32, i32)> = (0..d.len())
                .filter(|&i| !same_section || d.entry_sections[i] == d.query_sections[qi])
                .map(|i| (-d.entry(i).iter().zip(q).map(|(a, b)| a * b).sum::<f32>(), i as i32))
                .collect();
            let k = scored.len().min(10);
            if k > 0 && k < scored.len() {
                scored.select_nth_unstable_by(k - 1, |a, b| a.0.total_cmp(&b.0));
            }
            let mut top = scored[..k].to_vec();
            top.sort_by(|a, b| a.0.total_cmp(&b.0));
            top.into_iter().map(|(_, i)| i).collect()
        })
        .collect()
}

fn read_f32(path: &Path) -> CliResult<Vec<f32>> {
    let bytes = std::fs::read(path)
        .map_err(|e| CliError::bad_input(format!("cannot read {}: {e}", path.display())))?;
    Ok(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

fn read_i32_rows(path: &Path) -> CliResult<Vec<Vec<i32>>> {
    let bytes = std::fs::read(path)
        .map_err(|e| CliError::bad_input(format!("cannot read {}: {e}", path.display())))?;
    let all: Vec<i32> =
        bytes.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    Ok(all.chunks_exact(10).map(|r| r.iter().copied().filter(|&i| i >= 0).collect()).collect())
}

fn sections(path: &Path, rows: usize) -> CliResult<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::bad_input(format!("cannot read {}: {e}", path.display())))?;
    text.lines()
        .take(rows)
        .enumerate()
        .map(|(i, l)| {
            let v: serde_json::Value = serde_json::from_str(l).map_err(|e| {
                CliError::bad_input(format!("{} line {}: {e}", path.display(), i + 1))
            })?;
            Ok(v["section"].as_str().unwrap_or("none").to_owned())
        })
        .collect()
}

/// Reads a dataset directory (`entries.f32`, `queries.f32`, `gt_top10.i32`,
/// `gt_top10_section.i32`, `entries.jsonl`, `queries.jsonl`), keeping the first `limit`
/// entries; the ground truth is recomputed when fewer than all entries are kept.
///
/// # Errors
/// Exit code 2 when a file is missing or malformed.
pub fn load(dir: &Path, dim: usize, limit: Option<usize>, queries: usize) -> CliResult<BenchData> {
    let entries = read_f32(&dir.join("entries.f32"))?;
    let total = entries.len() / dim;
    if total == 0 || entries.len() % dim != 0 {
        return Err(CliError::bad_input(format!(
            "{}: expected rows of {dim} float32 values, found {} values",
            dir.join("entries.f32").display(),
            entries.len()
        )));
    }
    let n = limit.unwrap_or(total).min(total);
    let all_queries = read_f32(&dir.join("queries.f32"))?;
    let q = (all_queries.len() / dim).min(queries);
    let mut data = BenchData {
        source: dir.display().to_string(),
        dim,
        entries: entries[..n * dim].to_vec(),
        entry_sections: sections(&dir.join("entries.jsonl"), n)?,
        queries: all_queries[..q * dim].to_vec(),
        query_sections: sections(&dir.join("queries.jsonl"), q)?,
        truth: Vec::new(),
        truth_section: Vec::new(),
    };
    if n == total {
        data.truth = read_i32_rows(&dir.join("gt_top10.i32"))?.into_iter().take(q).collect();
        data.truth_section =
            read_i32_rows(&dir.join("gt_top10_section.i32"))?.into_iter().take(q).collect();
    } else {
        data.truth = exact_top10(&data, false);
        data.truth_section = exact_top10(&data, true);
    }
    Ok(data)
}

/// recall@10 of `found` (entry rows per query) against `truth`.
pub fn recall(found: &[Vec<i32>], truth: &[Vec<i32>]) -> f64 {
    let (mut hit, mut want) = (0usize, 0usize);
    for (f, t) in found.iter().zip(truth) {
        want += t.len();
        hit += f.iter().filter(|i| t.contains(i)).count();
    }
    if want == 0 { 1.0 } else { hit as f64 / want as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_data_is_clustered_seeded_and_its_truth_is_exact() {
        let d = generate(600, 20, 64, 7);
        assert_eq!((d.len(), d.query_count()), (600, 20));
        assert_eq!(d.entries, generate(600, 20, 64, 7).entries, "seeded");
        let norm: f32 = d.entry(3).iter().map(|x| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-4);
        // A query's nearest neighbours are mostly from its own cluster.
        let same = d
            .truth
            .iter()
            .enumerate()
            .map(|(qi, t)| {
                t.iter().filter(|&&i| d.entry_sections[i as usize] == d.query_sections[qi]).count()
            })
            .sum::<usize>();
        assert!(same * 10 > d.truth.iter().map(Vec::len).sum::<usize>() * 7, "{same}");
        assert!(d.truth_section.iter().enumerate().all(|(qi, t)| {
            t.iter().all(|&i| d.entry_sections[i as usize] == d.query_sections[qi])
        }));
        assert_eq!(recall(&d.truth, &d.truth), 1.0);
        assert_eq!(recall(&[vec![1, 2]], &[vec![2, 3, 4, 5]]), 0.25);
    }
}
