//! The RediSearch index: the `FT.CREATE` arguments for a schema, and `FT.INFO` read back into
//! a schema (to compare) and into statistics.

use std::collections::HashMap;

use super::codec::{self, TAG_SEPARATOR};
use crate::backend::IndexStats;
use crate::error::{ErrorKind, Operation, StorageError};
use crate::schema::{
    Algorithm, DistanceMetric, FieldKind, FieldSpec, HnswParams, IndexSchema, VectorSpec,
    VectorType,
};

/// A reply value of `FT.INFO`, reduced to what the parser needs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Info {
    /// A string, number or status.
    Text(String),
    /// A nested array.
    List(Vec<Info>),
}

impl Info {
    fn text(&self) -> Option<&str> {
        match self {
            Info::Text(s) => Some(s),
            Info::List(_) => None,
        }
    }
}

/// `FT.CREATE` arguments after the command name.
pub(crate) fn create_args(schema: &IndexSchema) -> Vec<String> {
    let mut a: Vec<String> = vec![
        schema.name.clone(),
        "ON".into(),
        "HASH".into(),
        "PREFIX".into(),
        "1".into(),
        schema.key_prefix.clone(),
        // No stop words, so that text matching equals `filter::tokenize`: every word counts.
        "STOPWORDS".into(),
        "0".into(),
        "SCHEMA".into(),
    ];
    a.extend([codec::NS.into(), "TAG".into(), "CASESENSITIVE".into()]);
    a.extend([codec::EXP.into(), "NUMERIC".into()]);
    for f in &schema.fields {
        a.push(f.name.clone());
        match f.kind {
            FieldKind::Tag => a.extend([
                "TAG".into(),
                "SEPARATOR".into(),
                TAG_SEPARATOR.to_string(),
                "CASESENSITIVE".into(),
            ]),
            FieldKind::Numeric => a.push("NUMERIC".into()),
            FieldKind::Text => a.extend(["TEXT".into(), "NOSTEM".into()]),
        }
    }
    let v = &schema.vector;
    let mut params = vec![
        "TYPE".to_owned(),
        vector_type_name(v.vector_type).into(),
        "DIM".into(),
        v.dimension.to_string(),
        "DISTANCE_METRIC".into(),
        metric_name(v.metric).into(),
    ];
    let algo = match v.algorithm {
        Algorithm::Flat => "FLAT",
        Algorithm::Hnsw(p) => {
            params.extend([
                "M".into(),
                p.m.to_string(),
                "EF_CONSTRUCTION".into(),
                p.ef_construction.to_string(),
                "EF_RUNTIME".into(),
                p.ef_runtime.to_string(),
            ]);
            "HNSW"
        }
    };
    a.extend([codec::VEC.into(), "VECTOR".into(), algo.into(), params.len().to_string()]);
    a.extend(params);
    a
}

fn vector_type_name(t: VectorType) -> &'static str {
    match t {
        VectorType::Float32 => "FLOAT32",
        VectorType::Float16 => "FLOAT16",
    }
}

fn metric_name(m: DistanceMetric) -> &'static str {
    match m {
        DistanceMetric::Cosine => "COSINE",
        DistanceMetric::L2 => "L2",
        DistanceMetric::Ip => "IP",
    }
}

/// What `FT.INFO` says about an index.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ExistingIndex {
    /// The index as a schema (user fields only, plus the vector field).
    pub(crate) schema: IndexSchema,
    /// Differences from what engram creates that [`IndexSchema::differences`] cannot see
    /// (reserved fields, tag options, stop words).
    pub(crate) problems: Vec<String>,
    /// Document counts and indexing progress.
    pub(crate) stats: IndexStats,
}

/// Turns an `FT.INFO` reply (RESP2: a flat array of names and values) into a name/value map
/// of its top level.
pub(crate) fn top_level(reply: Info) -> Result<HashMap<String, Info>, StorageError> {
    let Info::List(items) = reply else {
        return Err(protocol("FT.INFO did not return an array"));
    };
    let mut map = HashMap::new();
    let mut it = items.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        if let Info::Text(k) = k {
            map.insert(k, v);
        }
    }
    Ok(map)
}

fn protocol(m: impl Into<String>) -> StorageError {
    StorageError::new(ErrorKind::Protocol, Operation::EnsureIndex, m)
}

/// Index statistics from the top level of `FT.INFO`.
pub(crate) fn stats(info: &HashMap<String, Info>) -> IndexStats {
    let num = |k: &str| info.get(k).and_then(Info::text).and_then(|s| s.parse::<f64>().ok());
    IndexStats {
        documents: num("num_docs").unwrap_or(0.0) as u64,
        indexing_failures: num("hash_indexing_failures").unwrap_or(0.0) as u64,
        percent_indexed: num("percent_indexed").unwrap_or(0.0),
    }
}

/// Reads an existing index named `name` from its `FT.INFO`.
///
/// # Errors
/// [`ErrorKind::Protocol`] for a reply of an unknown shape.
pub(crate) fn parse_info(name: &str, reply: Info) -> Result<ExistingIndex, StorageError> {
    let info = top_level(reply)?;
    let mut problems = Vec::new();
    let definition = match info.get("index_definition") {
        Some(Info::List(d)) => pairs(d),
        _ => return Err(protocol("FT.INFO has no index_definition")),
    };
    if definition.get("key_type").map(String::as_str) != Some("HASH") {
        problems.push("the index is not ON HASH".to_owned());
    }
    let prefixes: Vec<String> = match info.get("index_definition") {
        Some(Info::List(d)) => d
            .chunks(2)
            .find(|p| p[0].text() == Some("prefixes"))
            .and_then(|p| p.get(1))
            .map(|p| match p {
                Info::List(l) => l.iter().filter_map(|x| x.text().map(str::to_owned)).collect(),
                Info::Text(t) => vec![t.clone()],
            })
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    if prefixes.len() != 1 {
        problems.push(format!("the index has {} key prefixes, engram uses one", prefixes.len()));
    }
    match info.get("stopwords_list") {
        Some(Info::List(l)) if l.is_empty() => {}
        _ => problems.push("the index keeps stop words; engram creates it with STOPWORDS 0".into()),
    }
    let Some(Info::List(attributes)) = info.get("attributes") else {
        return Err(protocol("FT.INFO has no attributes"));
    };
    let mut fields = Vec::new();
    let mut vector = None;
    let (mut saw_ns, mut saw_exp) = (false, false);
    for attr in attributes {
        let Info::List(tokens) = attr else {
            return Err(protocol("FT.INFO attribute is not an array"));
        };
        let a = Attribute::parse(tokens);
        let name = a.get("attribute").or_else(|| a.get("identifier")).unwrap_or_default();
        let ty = a.get("type").unwrap_or_default().to_ascii_uppercase();
        match (name, ty.as_str()) {
            (codec::NS, "TAG") => {
                saw_ns = true;
                if !a.has_flag("CASESENSITIVE") {
                    problems.push("field \"__ns\" is not CASESENSITIVE".into());
                }
            }
            (codec::EXP, "NUMERIC") => saw_exp = true,
            (codec::VEC, "VECTOR") => vector = Some(a.vector()?),
            (n, _) if n.starts_with("__") => {
                problems.push(format!("reserved field {n:?} has type {ty}"));
            }
            (n, "TAG") => {
                if !a.has_flag("CASESENSITIVE") {
                    problems.push(format!("tag field {n:?} is not CASESENSITIVE"));
                }
                if a.get("SEPARATOR") != Some(TAG_SEPARATOR.to_string().as_str()) {
                    problems.push(format!("tag field {n:?} has another separator than \\x1f"));
                }
                fields.push(FieldSpec::new(n, FieldKind::Tag));
            }
            (n, "NUMERIC") => fields.push(FieldSpec::new(n, FieldKind::Numeric)),
            (n, "TEXT") => {
                if !a.has_flag("NOSTEM") {
                    problems.push(format!("text field {n:?} is not NOSTEM"));
                }
                fields.push(FieldSpec::new(n, FieldKind::Text));
            }
            (n, other) => {
                problems.push(format!("field {n:?} has type {other}, which engram does not use"))
            }
        }
    }
    if !saw_ns {
        problems.push("the index lacks the namespace field \"__ns\" (not made by engram?)".into());
    }
    if !saw_exp {
        problems.push("the index lacks the expiry field \"__exp\" (not made by engram?)".into());
    }
    let Some(vector) = vector else {
        problems.push("the index lacks the vector field \"__vec\"".into());
        return Err(StorageError::new(
            ErrorKind::SchemaMismatch,
            Operation::EnsureIndex,
            format!(
                "index {name:?} exists with another schema ({}); engram never drops or rewrites an index: drop it yourself or choose another index name",
                problems.join("; ")
            ),
        ));
    };
    Ok(ExistingIndex {
        schema: IndexSchema {
            name: name.to_owned(),
            key_prefix: prefixes.into_iter().next().unwrap_or_default(),
            fields,
            vector,
        },
        problems,
        stats: stats(&info),
    })
}

fn pairs(items: &[Info]) -> HashMap<String, String> {
    items
        .chunks(2)
        .filter_map(|p| Some((p[0].text()?.to_owned(), p.get(1)?.text()?.to_owned())))
        .collect()
}

/// One attribute of `FT.INFO`: `key value` pairs mixed with bare flags.
struct Attribute {
    values: Vec<(String, String)>,
    flags: Vec<String>,
}

/// Attribute keys that are followed by a value; every other token is a flag.
const VALUED: &[&str] = &[
    "identifier",
    "attribute",
    "type",
    "separator",
    "weight",
    "phonetic",
    "algorithm",
    "data_type",
    "dim",
    "distance_metric",
    "m",
    "ef_construction",
    "ef_runtime",
    "epsilon",
    "block_size",
    "initial_cap",
];

impl Attribute {
    fn parse(tokens: &[Info]) -> Self {
        let mut values = Vec::new();
        let mut flags = Vec::new();
        let mut i = 0;
        while i < tokens.len() {
            let key = tokens[i].text().unwrap_or_default();
            if VALUED.contains(&key.to_ascii_lowercase().as_str()) && i + 1 < tokens.len() {
                values.push((key.to_owned(), tokens[i + 1].text().unwrap_or_default().to_owned()));
                i += 2;
            } else {
                flags.push(key.to_ascii_uppercase());
                i += 1;
            }
        }
        Self { values, flags }
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.values.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v.as_str())
    }

    fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    fn vector(&self) -> Result<VectorSpec, StorageError> {
        let num = |k: &str| {
            self.get(k)
                .and_then(|v| v.parse::<u32>().ok())
                .ok_or_else(|| protocol(format!("FT.INFO vector field lacks {k}")))
        };
        let vector_type = match self.get("data_type").map(str::to_ascii_uppercase).as_deref() {
            Some("FLOAT32") => VectorType::Float32,
            Some("FLOAT16") => VectorType::Float16,
            other => {
                return Err(StorageError::new(
                    ErrorKind::SchemaMismatch,
                    Operation::EnsureIndex,
                    format!("the index's vector type {other:?} is not one engram uses"),
                ));
            }
        };
        let metric = match self.get("distance_metric").map(str::to_ascii_uppercase).as_deref() {
            Some("COSINE") => DistanceMetric::Cosine,
            Some("L2") => DistanceMetric::L2,
            Some("IP") => DistanceMetric::Ip,
            other => return Err(protocol(format!("FT.INFO distance metric {other:?}"))),
        };
        let algorithm = match self.get("algorithm").map(str::to_ascii_uppercase).as_deref() {
            Some("FLAT") => Algorithm::Flat,
            Some("HNSW") => Algorithm::Hnsw(HnswParams {
                m: num("M")?,
                ef_construction: num("ef_construction")?,
                // FT.INFO does not report it; it is given with every query anyway.
                ef_runtime: self.get("ef_runtime").and_then(|v| v.parse().ok()).unwrap_or(10),
            }),
            other => {
                return Err(StorageError::new(
                    ErrorKind::SchemaMismatch,
                    Operation::EnsureIndex,
                    format!("the index's vector algorithm {other:?} is not one engram uses"),
                ));
            }
        };
        Ok(VectorSpec { dimension: num("dim")?, metric, vector_type, algorithm })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::FieldSpec;

    fn t(s: &str) -> Info {
        Info::Text(s.to_owned())
    }

    fn l(items: &[&str]) -> Info {
        Info::List(items.iter().map(|s| t(s)).collect())
    }

    fn schema(algorithm: Algorithm) -> IndexSchema {
        IndexSchema {
            name: "idx".into(),
            key_prefix: "p:".into(),
            fields: vec![
                FieldSpec::new("kind", FieldKind::Tag),
                FieldSpec::new("score", FieldKind::Numeric),
                FieldSpec::new("body", FieldKind::Text),
            ],
            vector: VectorSpec {
                dimension: 4,
                metric: DistanceMetric::Cosine,
                vector_type: VectorType::Float32,
                algorithm,
            },
        }
    }

    /// An `FT.INFO` reply as the server gives it for what `create_args` makes.
    fn info_reply(algo: &[&str]) -> Info {
        let sep = TAG_SEPARATOR.to_string();
        let mut vec_attr = vec!["identifier", "__vec", "attribute", "__vec", "type", "VECTOR"];
        vec_attr.extend_from_slice(algo);
        Info::List(vec![
            t("index_name"),
            t("idx"),
            t("index_definition"),
            Info::List(vec![
                t("key_type"),
                t("HASH"),
                t("prefixes"),
                l(&["p:"]),
                t("default_score"),
                t("1"),
            ]),
            t("attributes"),
            Info::List(vec![
                l(&[
                    "identifier",
                    "__ns",
                    "attribute",
                    "__ns",
                    "type",
                    "TAG",
                    "SEPARATOR",
                    ",",
                    "CASESENSITIVE",
                ]),
                l(&["identifier", "__exp", "attribute", "__exp", "type", "NUMERIC"]),
                l(&[
                    "identifier",
                    "kind",
                    "attribute",
                    "kind",
                    "type",
                    "TAG",
                    "SEPARATOR",
                    &sep,
                    "CASESENSITIVE",
                ]),
                l(&["identifier", "score", "attribute", "score", "type", "NUMERIC"]),
                l(&[
                    "identifier",
                    "body",
                    "attribute",
                    "body",
                    "type",
                    "TEXT",
                    "WEIGHT",
                    "1",
                    "NOSTEM",
                ]),
                l(&vec_attr),
            ]),
            t("num_docs"),
            t("3"),
            t("hash_indexing_failures"),
            t("1"),
            t("percent_indexed"),
            t("1"),
            t("stopwords_list"),
            Info::List(vec![]),
        ])
    }

    #[test]
    fn info_of_a_created_index_matches_its_schema() {
        let hnsw = Algorithm::Hnsw(HnswParams { m: 16, ef_construction: 200, ef_runtime: 50 });
        let reply = info_reply(&[
            "algorithm",
            "HNSW",
            "data_type",
            "FLOAT32",
            "dim",
            "4",
            "distance_metric",
            "COSINE",
            "M",
            "16",
            "ef_construction",
            "200",
        ]);
        let existing = parse_info("idx", reply).unwrap();
        assert!(existing.problems.is_empty(), "{:?}", existing.problems);
        assert!(schema(hnsw).differences(&existing.schema).is_empty(), "{:?}", existing.schema);
        assert_eq!(existing.stats.documents, 3);
        assert_eq!(existing.stats.indexing_failures, 1);

        let flat = info_reply(&[
            "algorithm",
            "FLAT",
            "data_type",
            "FLOAT32",
            "dim",
            "8",
            "distance_metric",
            "L2",
        ]);
        let existing = parse_info("idx", flat).unwrap();
        let d = schema(Algorithm::Flat).differences(&existing.schema);
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(d.iter().any(|x| x.contains("dimension: wanted 4, index has 8")), "{d:?}");
    }

    #[test]
    fn create_args_name_every_field_and_vector_parameter() {
        let hnsw = Algorithm::Hnsw(HnswParams { m: 8, ef_construction: 100, ef_runtime: 20 });
        let a = create_args(&schema(hnsw)).join(" ");
        assert!(a.starts_with("idx ON HASH PREFIX 1 p: STOPWORDS 0 SCHEMA __ns TAG CASESENSITIVE __exp NUMERIC kind TAG SEPARATOR \u{1f} CASESENSITIVE score NUMERIC body TEXT NOSTEM"), "{a}");
        assert!(a.ends_with("__vec VECTOR HNSW 12 TYPE FLOAT32 DIM 4 DISTANCE_METRIC COSINE M 8 EF_CONSTRUCTION 100 EF_RUNTIME 20"), "{a}");
        let a = create_args(&schema(Algorithm::Flat)).join(" ");
        assert!(
            a.ends_with("__vec VECTOR FLAT 6 TYPE FLOAT32 DIM 4 DISTANCE_METRIC COSINE"),
            "{a}"
        );
    }
}
