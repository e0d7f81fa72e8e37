//! RediSearch query text: the tag escaper, the filter renderer, and the scoping clauses every
//! search carries (namespace and expiry). Values never become query syntax: tags are escaped
//! character by character, numbers are formatted by [`format_number`], text is reduced to the
//! words of [`crate::filter::tokenize`] (letters, digits and `_` only), and vectors travel in
//! `PARAMS`.

use std::fmt::Write as _;
use std::ops::Bound;

use super::codec::{self, format_number};
use crate::filter::{Filter, tokenize};
use crate::ids::Namespace;
use crate::record::Timestamp;

/// Escapes a tag value for a `{...}` clause of DIALECT 2: every ASCII character other than a
/// letter or digit gets a backslash, so that separators and operators (`|`, `-`, spaces,
/// braces, `@`, `*`, `$`, parentheses, quotes, `\\`...) are data. `_` is escaped too: a value
/// that is only `_` (a valid namespace) is a syntax error unescaped (found by the fuzzing in
/// `tests/tests/bad_input.rs`). Non-ASCII characters are not syntax in the query language and
/// are kept as they are. Callers never pass an empty value (tags are validated non-empty),
/// since `{}` would not be a clause on that value.
pub(crate) fn escape_tag(value: &str) -> String {
    escape(value, |c| c.is_ascii_alphanumeric())
}

/// Escapes a word of a text clause like a tag, but keeps `_` (a word character of the text
/// tokenizer).
fn escape_word(value: &str) -> String {
    escape(value, |c| c.is_ascii_alphanumeric() || c == '_')
}

fn escape(value: &str, plain: impl Fn(char) -> bool) -> String {
    let mut out = String::with_capacity(value.len() * 2);
    for c in value.chars() {
        if c.is_ascii() && !plain(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Renders a filter (already validated against the schema) as a RediSearch query clause.
///
/// Tags: `@f:{v1 | v2}` with escaped values; ranges: `@f:[lo hi]` with `(` for an exclusive
/// bound and `-inf`/`+inf` for open ends; text: `@f:(w1 w2)` with the filter's words; `And`:
/// `(a b)`; `Or`: `(a | b)`; `Not`: `-(a)`. Every clause is parenthesised, so the rendering
/// of one clause cannot bind to its neighbours.
pub(crate) fn render_filter(filter: &Filter) -> String {
    let mut out = String::new();
    render_into(filter, &mut out);
    out
}

fn render_into(filter: &Filter, out: &mut String) {
    match filter {
        Filter::Tag { field, values } => {
            let _ = write!(out, "@{field}:{{");
            for (i, v) in values.iter().enumerate() {
                if i > 0 {
                    out.push_str(" | ");
                }
                out.push_str(&escape_tag(v));
            }
            out.push('}');
        }
        Filter::Range { field, lower, upper } => {
            let lo = match lower {
                Bound::Included(x) => format_number(*x),
                Bound::Excluded(x) => format!("({}", format_number(*x)),
                Bound::Unbounded => "-inf".to_owned(),
            };
            let hi = match upper {
                Bound::Included(x) => format_number(*x),
                Bound::Excluded(x) => format!("({}", format_number(*x)),
                Bound::Unbounded => "+inf".to_owned(),
            };
            let _ = write!(out, "@{field}:[{lo} {hi}]");
        }
        Filter::Text { field, text } => {
            // Words are runs of letters, digits and `_`; escaping keeps that true even if the
            // tokenizer changes.
            let words: Vec<String> = tokenize(text).iter().map(|w| escape_word(w)).collect();
            let _ = write!(out, "@{field}:({})", words.join(" "));
        }
        Filter::And(fs) | Filter::Or(fs) => {
            let sep = if matches!(filter, Filter::And(_)) { " " } else { " | " };
            out.push('(');
            for (i, f) in fs.iter().enumerate() {
                if i > 0 {
                    out.push_str(sep);
                }
                render_into(f, out);
            }
            out.push(')');
        }
        Filter::Not(f) => {
            out.push_str("-(");
            render_into(f, out);
            out.push(')');
        }
    }
}

/// The clauses that scope a query to one namespace and to records live at `now`.
pub(crate) fn scope(namespace: &Namespace, now: Timestamp) -> String {
    format!("{} {}", namespace_clause(namespace), live_clause(now))
}

/// The clause that keeps one namespace's records.
pub(crate) fn namespace_clause(namespace: &Namespace) -> String {
    format!("@{}:{{{}}}", codec::NS, escape_tag(namespace.as_str()))
}

/// The clause that keeps records live at `now`.
fn live_clause(now: Timestamp) -> String {
    format!("@{}:[({} +inf]", codec::EXP, now.as_millis())
}

/// The `HYBRID_POLICY` of one KNN query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hybrid {
    /// None sent: the server chooses.
    Server,
    /// `HYBRID_POLICY ADHOC_BF`: brute force over the filtered records (no `EF_RUNTIME`,
    /// which the server refuses with this policy).
    AdhocBf,
    /// `HYBRID_POLICY BATCHES BATCH_SIZE n`.
    Batches(u32),
}

/// What goes around the filter of a KNN query.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Knn {
    /// Neighbours wanted.
    pub(crate) k: usize,
    /// Records live at this time only (`@__exp` clause), or `None` to leave expiry to the
    /// client (the caller then drops expired hits and asks again with the clause if any).
    pub(crate) live_at: Option<Timestamp>,
    /// A `VECTOR_RANGE` clause on `$RADIUS`.
    pub(crate) range: bool,
    /// `EF_RUNTIME $EF` (HNSW; never sent with [`Hybrid::AdhocBf`]).
    pub(crate) ef: bool,
    /// The plan.
    pub(crate) hybrid: Hybrid,
}

/// The pre-filter of a KNN query: namespace, optional liveness, filter and distance range.
pub(crate) fn knn_prefilter(
    namespace: &Namespace,
    filter: Option<&Filter>,
    live_at: Option<Timestamp>,
    range: bool,
) -> String {
    let mut q = String::from("(");
    q.push_str(&namespace_clause(namespace));
    if let Some(now) = live_at {
        q.push(' ');
        q.push_str(&live_clause(now));
    }
    if let Some(f) = filter {
        q.push(' ');
        q.push_str(&render_filter(f));
    }
    if range {
        let _ = write!(q, " @{}:[VECTOR_RANGE $RADIUS $BLOB]", codec::VEC);
    }
    q.push(')');
    q
}

/// The query text of a KNN search: the pre-filter of [`knn_prefilter`], then KNN with `$BLOB`
/// (and `$EF`) from `PARAMS`, the plan, and the distance yielded as [`codec::DIST`].
pub(crate) fn knn_query(namespace: &Namespace, filter: Option<&Filter>, knn: Knn) -> String {
    let mut q = knn_prefilter(namespace, filter, knn.live_at, knn.range);
    let _ = write!(q, "=>[KNN {} @{} $BLOB", knn.k, codec::VEC);
    match knn.hybrid {
        Hybrid::AdhocBf => q.push_str(" HYBRID_POLICY ADHOC_BF"),
        Hybrid::Batches(n) => {
            if knn.ef {
                q.push_str(" EF_RUNTIME $EF");
            }
            let _ = write!(q, " HYBRID_POLICY BATCHES BATCH_SIZE {n}");
        }
        Hybrid::Server => {
            if knn.ef {
                q.push_str(" EF_RUNTIME $EF");
            }
        }
    }
    let _ = write!(q, " AS {}]", codec::DIST);
    q
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn tag_escaper_makes_every_operator_data() {
        assert_eq!(escape_tag("plainTag9"), "plainTag9");
        assert_eq!(escape_tag("_"), "\\_");
        assert_eq!(escape_word("snake_case"), "snake_case");
        assert_eq!(escape_tag("a|b c"), "a\\|b\\ c");
        assert_eq!(escape_tag("{x}-y"), "\\{x\\}\\-y");
        assert_eq!(
            escape_tag("}) | @other:{*} =>"),
            "\\}\\)\\ \\|\\ \\@other\\:\\{\\*\\}\\ \\=\\>"
        );
        assert_eq!(escape_tag("\\$p\"'"), "\\\\\\$p\\\"\\'");
        assert_eq!(escape_tag("été 日本"), "été\\ 日本");
    }

    #[test]
    fn filters_render_exactly() {
        let cases = [
            (Filter::tag_eq("kind", "fact"), "@kind:{fact}"),
            (Filter::tag_in("kind", ["a|b", "c d"]), "@kind:{a\\|b | c\\ d}"),
            (Filter::range("score", Bound::Included(0.5), Bound::Excluded(1.0)), "@score:[0.5 (1]"),
            (Filter::range("score", Bound::Unbounded, Bound::Included(-2.5)), "@score:[-inf -2.5]"),
            (
                Filter::range("score", Bound::Excluded(1e-7), Bound::Unbounded),
                "@score:[(0.0000001 +inf]",
            ),
            (Filter::text("body", "Gamma, BETA! x_y"), "@body:(gamma beta x_y)"),
            (
                Filter::and([Filter::tag_eq("kind", "a"), Filter::text("body", "b")]),
                "(@kind:{a} @body:(b))",
            ),
            (
                Filter::or([Filter::tag_eq("kind", "a"), Filter::not(Filter::tag_eq("kind", "b"))]),
                "(@kind:{a} | -(@kind:{b}))",
            ),
        ];
        for (f, want) in cases {
            assert_eq!(render_filter(&f), want, "{f:?}");
        }
    }

    #[test]
    fn every_query_is_scoped_to_its_namespace_and_live_records() {
        let ns = Namespace::new("team-a_1").unwrap();
        assert_eq!(scope(&ns, Timestamp(42)), "@__ns:{team\\-a\\_1} @__exp:[(42 +inf]");
        let knn = Knn {
            k: 5,
            live_at: Some(Timestamp(42)),
            range: true,
            ef: true,
            hybrid: Hybrid::Server,
        };
        let q = knn_query(&ns, Some(&Filter::tag_eq("kind", "x")), knn);
        assert_eq!(
            q,
            "(@__ns:{team\\-a\\_1} @__exp:[(42 +inf] @kind:{x} @__vec:[VECTOR_RANGE $RADIUS $BLOB])=>[KNN 5 @__vec $BLOB EF_RUNTIME $EF AS __dist]"
        );
        let knn = Knn {
            k: 3,
            live_at: Some(Timestamp(1)),
            range: false,
            ef: false,
            hybrid: Hybrid::Server,
        };
        let flat = knn_query(&ns, None, knn);
        assert_eq!(flat, "(@__ns:{team\\-a\\_1} @__exp:[(1 +inf])=>[KNN 3 @__vec $BLOB AS __dist]");
    }

    #[test]
    fn plans_render_as_hybrid_policies() {
        let ns = Namespace::new("n").unwrap();
        let knn = |hybrid| Knn { k: 10, live_at: None, range: false, ef: true, hybrid };
        let f = Filter::tag_eq("s", "a");
        assert_eq!(
            knn_query(&ns, Some(&f), knn(Hybrid::Batches(100))),
            "(@__ns:{n} @s:{a})=>[KNN 10 @__vec $BLOB EF_RUNTIME $EF HYBRID_POLICY BATCHES BATCH_SIZE 100 AS __dist]"
        );
        // The server refuses EF_RUNTIME with ADHOC_BF.
        assert_eq!(
            knn_query(&ns, Some(&f), knn(Hybrid::AdhocBf)),
            "(@__ns:{n} @s:{a})=>[KNN 10 @__vec $BLOB HYBRID_POLICY ADHOC_BF AS __dist]"
        );
    }

    proptest! {
        /// Whatever a tag holds, its escaped form has no unescaped ASCII punctuation or space,
        /// so it cannot close the clause or start another.
        #[test]
        fn escaped_tags_have_no_bare_syntax(v in "\\PC{1,40}") {
            let e = escape_tag(&v);
            let mut chars = e.chars();
            while let Some(c) = chars.next() {
                if c == '\\' {
                    prop_assert!(chars.next().is_some(), "dangling escape in {e:?}");
                } else {
                    prop_assert!(!c.is_ascii() || c.is_ascii_alphanumeric(), "bare {c:?} in {e:?}");
                }
            }
        }
    }
}
