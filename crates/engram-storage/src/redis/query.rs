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
    format!(
        "@{}:{{{}}} @{}:[({} +inf]",
        codec::NS,
        escape_tag(namespace.as_str()),
        codec::EXP,
        now.as_millis()
    )
}

/// The query text of a KNN search: scope, filter and optional distance range, then KNN with
/// `$BLOB` (and `$EF` for HNSW) from `PARAMS`, the distance yielded as [`codec::DIST`].
pub(crate) fn knn_query(
    namespace: &Namespace,
    now: Timestamp,
    filter: Option<&Filter>,
    with_range: bool,
    k: usize,
    with_ef: bool,
) -> String {
    let mut q = String::from("(");
    q.push_str(&scope(namespace, now));
    if let Some(f) = filter {
        q.push(' ');
        q.push_str(&render_filter(f));
    }
    if with_range {
        let _ = write!(q, " @{}:[VECTOR_RANGE $RADIUS $BLOB]", codec::VEC);
    }
    let ef = if with_ef { " EF_RUNTIME $EF" } else { "" };
    let _ = write!(q, ")=>[KNN {k} @{} $BLOB{ef} AS {}]", codec::VEC, codec::DIST);
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
        let q = knn_query(&ns, Timestamp(42), Some(&Filter::tag_eq("kind", "x")), true, 5, true);
        assert_eq!(
            q,
            "(@__ns:{team\\-a\\_1} @__exp:[(42 +inf] @kind:{x} @__vec:[VECTOR_RANGE $RADIUS $BLOB])=>[KNN 5 @__vec $BLOB EF_RUNTIME $EF AS __dist]"
        );
        let flat = knn_query(&ns, Timestamp(1), None, false, 3, false);
        assert_eq!(flat, "(@__ns:{team\\-a\\_1} @__exp:[(1 +inf])=>[KNN 3 @__vec $BLOB AS __dist]");
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
