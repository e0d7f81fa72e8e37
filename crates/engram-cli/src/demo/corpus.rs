//! The demo's built-in corpus: a few hundred memories of three agents, written for engram.
//!
//! Hand-written memories give each agent a character; small templates add the routine
//! events an agent accumulates (test runs, tickets, bookings), so that recall has to pick
//! the right few among many similar ones. Everything is deterministic.

use engram_memory::MemoryType;

/// One memory of the corpus.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoMemory {
    /// The agent (namespace suffix).
    pub agent: &'static str,
    /// Memory type.
    pub memory_type: MemoryType,
    /// Importance, 0 to 1.
    pub importance: f32,
    /// Tags.
    pub tags: Vec<&'static str>,
    /// The content.
    pub content: String,
}

use MemoryType::{Episodic as E, LongTerm as L, Semantic as S, ShortTerm as T, Working as W};

/// The coding assistant.
pub const CODER: &str = "coder";
/// The customer-support agent.
pub const SUPPORT: &str = "support";
/// The travel planner.
pub const TRAVEL: &str = "travel";

type Hand = (&'static str, MemoryType, f32, &'static [&'static str], &'static str);

const HAND_WRITTEN: &[Hand] = &[
    // The coding assistant, working with one developer on a Rust service.
    (
        CODER,
        S,
        0.9,
        &["preference"],
        "the user prefers short answers with a code example first and the explanation after",
    ),
    (
        CODER,
        S,
        0.8,
        &["preference"],
        "the user wants every dependency pinned to an exact version in Cargo.toml",
    ),
    (
        CODER,
        S,
        0.7,
        &["environment"],
        "the project builds on a 2-core machine without a GPU, so release builds take minutes",
    ),
    (
        CODER,
        S,
        0.6,
        &["environment"],
        "the service runs on Kubernetes with Redis Stack as a StatefulSet",
    ),
    (
        CODER,
        L,
        0.9,
        &["convention"],
        "error messages in this codebase are lowercase and say what was expected and what was found",
    ),
    (
        CODER,
        L,
        0.8,
        &["convention"],
        "tests that need Redis read ENGRAM_TEST_REDIS_URL and never flush the server",
    ),
    (
        CODER,
        L,
        0.7,
        &["convention"],
        "the team uses thiserror in libraries and anyhow only in binaries",
    ),
    (
        CODER,
        L,
        0.6,
        &["convention"],
        "pull requests need a passing cargo clippy with -D warnings before review",
    ),
    (
        CODER,
        E,
        0.8,
        &["incident", "tests"],
        "the integration tests failed on Monday because Redis was not running on the CI machine",
    ),
    (
        CODER,
        E,
        0.7,
        &["incident", "tests"],
        "a flaky test in the retry layer failed when the machine was loaded; it used real time instead of paused tokio time",
    ),
    (
        CODER,
        E,
        0.6,
        &["incident", "performance"],
        "ingest slowed to 1,500 entries per second after switching the index from FLAT to HNSW",
    ),
    (
        CODER,
        E,
        0.5,
        &["release"],
        "version 0.3 was released on Friday after the circuit breaker rewrite",
    ),
    (
        CODER,
        W,
        0.6,
        &["task"],
        "currently refactoring the storage layer so that every backend runs the same conformance suite",
    ),
    (
        CODER,
        W,
        0.5,
        &["task"],
        "next step: add a benchmark comparing the full layer stack with the raw backend",
    ),
    (CODER, T, 0.2, &["chat"], "the user said they will be back after lunch"),
    (CODER, T, 0.3, &["chat"], "the user pasted a stack trace from the health checker"),
    // The support agent of a small SaaS product.
    (
        SUPPORT,
        S,
        0.9,
        &["policy", "billing"],
        "refunds are allowed within 30 days of purchase for annual plans",
    ),
    (
        SUPPORT,
        S,
        0.8,
        &["policy", "auth"],
        "password resets expire after one hour and must be requested again",
    ),
    (
        SUPPORT,
        S,
        0.8,
        &["policy", "auth"],
        "accounts lock for 15 minutes after five failed login attempts",
    ),
    (
        SUPPORT,
        S,
        0.7,
        &["product"],
        "the export feature produces CSV files of at most 100,000 rows",
    ),
    (
        SUPPORT,
        S,
        0.6,
        &["product"],
        "single sign-on with SAML is only available on the enterprise plan",
    ),
    (
        SUPPORT,
        L,
        0.9,
        &["customer", "vip"],
        "Acme Corp is an enterprise customer; escalate their tickets to the on-call engineer",
    ),
    (SUPPORT, L, 0.7, &["customer"], "Globex prefers to be contacted by email, never by phone"),
    (
        SUPPORT,
        L,
        0.6,
        &["tone"],
        "customers respond better when the first sentence acknowledges the problem",
    ),
    (
        SUPPORT,
        E,
        0.8,
        &["incident", "auth"],
        "on Tuesday the login service was down for 40 minutes after a certificate expired",
    ),
    (
        SUPPORT,
        E,
        0.6,
        &["incident", "billing"],
        "a billing run charged 12 customers twice; all were refunded the same day",
    ),
    (
        SUPPORT,
        W,
        0.5,
        &["task"],
        "waiting for engineering to confirm the fix for the CSV export timeout",
    ),
    (SUPPORT, T, 0.3, &["chat"], "the current customer is on the free plan and asked about SSO"),
    // The travel planner of one traveller.
    (TRAVEL, S, 0.9, &["preference", "food"], "the traveller is vegetarian and loves spicy food"),
    (
        TRAVEL,
        S,
        0.8,
        &["preference", "seat"],
        "the traveller always wants an aisle seat on flights longer than three hours",
    ),
    (
        TRAVEL,
        S,
        0.7,
        &["preference", "hotel"],
        "the traveller prefers small hotels in walkable old towns over large resorts",
    ),
    (TRAVEL, S, 0.6, &["document"], "the traveller's passport expires in March 2027"),
    (
        TRAVEL,
        L,
        0.8,
        &["budget"],
        "the yearly travel budget is 6,000 euros, with at most 150 euros per night for hotels",
    ),
    (TRAVEL, L, 0.7, &["loyalty"], "the traveller collects miles with Star Alliance airlines"),
    (
        TRAVEL,
        E,
        0.7,
        &["trip", "lisbon"],
        "in Lisbon last spring the traveller loved the tram 28 ride and the bakery in Belém",
    ),
    (
        TRAVEL,
        E,
        0.6,
        &["trip", "kyoto"],
        "in Kyoto the traveller found the temples too crowded at midday and preferred early mornings",
    ),
    (
        TRAVEL,
        E,
        0.5,
        &["trip", "problem"],
        "a train strike in Italy cancelled the Florence day trip in October",
    ),
    (
        TRAVEL,
        W,
        0.6,
        &["task", "porto"],
        "planning a long weekend in Porto in May: flights found, hotel not booked yet",
    ),
    (TRAVEL, T, 0.2, &["chat"], "the traveller asked whether Porto is rainy in May"),
];

const CRATES: &[&str] =
    &["config", "resilience", "storage", "memory", "cli", "xtask", "redis backend", "layers"];
const TEST_OUTCOMES: &[(&str, f32, &str)] = &[
    ("all tests passed in {t} seconds", 0.2, "tests"),
    ("one test timed out waiting for Redis after {t} seconds", 0.5, "tests"),
    ("clippy reported {t} warnings about needless clones", 0.3, "lint"),
    ("the build failed: a missing feature flag on tokio, fixed in {t} minutes", 0.4, "build"),
    ("a property test found a round-trip bug in the codec after {t} cases", 0.6, "tests"),
];
const REVIEWS: &[(&str, f32)] = &[
    ("asked to replace an unwrap on network input by a typed error", 0.5),
    ("suggested a doc comment that says what the function returns on a miss", 0.3),
    ("approved it after the benchmark showed no regression", 0.2),
    ("requested a test that fails when the namespace filter is missing", 0.6),
];
const CUSTOMERS: &[&str] = &[
    "Acme Corp",
    "Globex",
    "Initech",
    "Umbrella",
    "Hooli",
    "Vandelay",
    "Stark Labs",
    "Wayne Freight",
    "Tyrell",
    "Cyberdyne",
];
const PROBLEMS: &[(&str, &str, &str)] = &[
    ("could not log in after a password reset", "auth", "sent a new reset link"),
    ("was charged twice this month", "billing", "refunded the duplicate charge"),
    ("asked how to export all contacts to CSV", "product", "explained the export limits"),
    ("reported that the dashboard loads slowly", "performance", "opened an engineering ticket"),
    ("wants to add ten more seats", "billing", "upgraded the plan"),
    ("cannot configure single sign-on", "auth", "explained SSO needs the enterprise plan"),
];
const CITIES: &[(&str, &str)] = &[
    ("Porto", "portugal"),
    ("Lisbon", "portugal"),
    ("Kyoto", "japan"),
    ("Florence", "italy"),
    ("Edinburgh", "uk"),
    ("Vienna", "austria"),
    ("Seville", "spain"),
    ("Istanbul", "turkey"),
    ("Copenhagen", "denmark"),
    ("Krakow", "poland"),
    ("Bologna", "italy"),
    ("Osaka", "japan"),
];
const CITY_FACTS: &[(&str, MemoryType, f32, &str)] = &[
    ("found a vegetarian restaurant with spicy dishes near the old town of {c}", E, 0.5, "food"),
    ("a hotel in {c} fits the budget at 120 euros per night", S, 0.4, "hotel"),
    ("flights to {c} are cheapest on Tuesdays", S, 0.3, "flight"),
    ("the traveller asked about museums that open early in {c}", T, 0.2, "chat"),
    ("the best months to visit {c} are April and October", S, 0.4, "season"),
];

/// The whole corpus, in a fixed order.
pub fn corpus() -> Vec<DemoMemory> {
    let mut out: Vec<DemoMemory> = HAND_WRITTEN
        .iter()
        .map(|(agent, t, imp, tags, content)| DemoMemory {
            agent,
            memory_type: *t,
            importance: *imp,
            tags: tags.to_vec(),
            content: (*content).to_owned(),
        })
        .collect();
    for (i, krate) in CRATES.iter().enumerate() {
        for (j, (outcome, imp, tag)) in TEST_OUTCOMES.iter().enumerate() {
            let t = 3 + (i * 7 + j * 5) % 40;
            out.push(DemoMemory {
                agent: CODER,
                memory_type: E,
                importance: *imp,
                tags: vec![tag, "ci"],
                content: format!(
                    "ran the checks of the {krate} crate: {}",
                    outcome.replace("{t}", &t.to_string())
                ),
            });
        }
    }
    for krate in CRATES {
        for (comment, imp) in REVIEWS {
            out.push(DemoMemory {
                agent: CODER,
                memory_type: E,
                importance: *imp,
                tags: vec!["review"],
                content: format!("reviewed a pull request on the {krate} crate and {comment}"),
            });
        }
    }
    for (i, customer) in CUSTOMERS.iter().enumerate() {
        for (j, (problem, tag, fix)) in PROBLEMS.iter().enumerate() {
            let ticket = 4100 + i * PROBLEMS.len() + j;
            out.push(DemoMemory {
                agent: SUPPORT,
                memory_type: E,
                importance: if *customer == "Acme Corp" { 0.8 } else { 0.4 },
                tags: vec![tag, "ticket"],
                content: format!("ticket {ticket}: {customer} {problem}; we {fix}"),
            });
        }
    }
    for (city, country) in CITIES {
        for (fact, t, imp, tag) in CITY_FACTS {
            out.push(DemoMemory {
                agent: TRAVEL,
                memory_type: *t,
                importance: *imp,
                tags: vec![tag, country],
                content: fact.replace("{c}", city),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn corpus_has_a_few_hundred_distinct_valid_memories_of_every_type() {
        let c = corpus();
        assert!((200..=500).contains(&c.len()), "{} memories", c.len());
        let distinct: BTreeSet<&str> = c.iter().map(|m| m.content.as_str()).collect();
        assert_eq!(distinct.len(), c.len(), "every memory is distinct");
        let agents: BTreeSet<&str> = c.iter().map(|m| m.agent).collect();
        assert_eq!(agents.len(), 3);
        for t in MemoryType::ALL {
            assert!(c.iter().any(|m| m.memory_type == t), "no {t} memory");
        }
        for m in &c {
            let e = engram_memory::MemoryEntry::builder(&format!("demo-{}", m.agent), &*m.content)
                .memory_type(m.memory_type)
                .importance(m.importance)
                .tags(m.tags.iter().copied())
                .build();
            assert!(e.is_ok(), "{}: {:?}", m.content, e.err());
        }
    }
}
