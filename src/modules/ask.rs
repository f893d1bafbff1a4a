//! Ask: plain-language questions answered from the service's own documentation by ranked
//! retrieval — no model, nothing fetched at run time.
//!
//! The FAQ, API guide and error reference (`docs/*.md`) are compiled into the binary, split into
//! passages at their `#`/`##`/`###` headings and indexed once (`LazyLock`) for Okapi BM25
//! (k1 = 1.2, b = 0.75) over lower-cased alphanumeric tokens with a small stop-word list and a
//! light suffix stemmer; a passage's heading counts three times. The answer is a few sentences of
//! the best passage, citing it and the passages that score close to it. When the best passage
//! scores under `MIN_SCORE` (`MIN_SCORE_TITLED` if its heading names every term of the question)
//! or holds under `MIN_COVERAGE` of the question, the service says it does not know rather than
//! guess.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::auth::limits::AskLimit;
use crate::error::Result;
use crate::http::checks::Checks;
use crate::http::extract::Json;
use crate::state::AppState;

/// The documentation, as `(name in the URL, markdown)`.
const DOCS: &[(&str, &str)] = &[
    ("faq", include_str!("../../docs/faq.md")),
    ("api-guide", include_str!("../../docs/api-guide.md")),
    ("errors", include_str!("../../docs/errors.md")),
];
const DOCS_BASE_URL: &str = "https://docs.ecosire.com";

pub const QUESTION_MAX: usize = 1000;
pub const NO_ANSWER: &str = "I don't know: nothing in the ECOSIRE documentation answers that.";

const K1: f64 = 1.2;
const B: f64 = 0.75;
/// Below this BM25 score the best passage is judged unrelated. Calibrated on this corpus (see
/// `threshold_separates_questions_from_noise`): questions the docs answer score about 4.5 to 14,
/// while a question sharing one generic word with the docs ("api", "key", "time") scores 1.4–3.5.
pub const MIN_SCORE: f64 = 4.0;
/// …and the best passage must hold at least this share of the question (`Index::coverage`): a
/// question that is mostly about something else ("write a poem about licenses": 0.41, "can I use
/// the api to bake bread": 0.07) is not answered from the one word it shares with the docs, while
/// answered questions hold 0.8–1.0 of their terms.
pub const MIN_COVERAGE: f64 = 0.5;
/// A passage whose heading names every term of the question is about that question even when
/// the terms are the corpus's commonest ("what is a license key" scores 3.3: "license" and "key"
/// are everywhere); it needs only this score.
pub const MIN_SCORE_TITLED: f64 = 2.5;
/// Other passages are cited when they score at least this share of the best one.
const SOURCE_RATIO: f64 = 0.6;
const MAX_SOURCES: usize = 3;
const ANSWER_SENTENCES: usize = 3;
const ANSWER_MAX_CHARS: usize = 900;

/// Words that carry no meaning for retrieval (matched before stemming).
const STOP_WORDS: &[&str] = &[
    "a", "about", "after", "all", "also", "am", "an", "and", "any", "are", "as", "at", "be",
    "been", "before", "but", "by", "can", "could", "did", "do", "does", "doing", "for", "from",
    "get", "got", "had", "has", "have", "how", "i", "if", "in", "into", "is", "it", "its", "just",
    "know", "many", "may", "me", "mean", "meaning", "means", "might", "much", "must", "my", "need",
    "of", "on", "or", "our", "please", "should", "so", "some", "tell", "than", "that", "the",
    "their", "them", "then", "there", "these", "they", "this", "those", "to", "too", "us", "use",
    "used", "uses", "using", "want", "was", "we", "were", "what", "when", "where", "which", "who",
    "whom", "why", "will", "with", "would", "you", "your",
];

/// One section of the documentation.
#[derive(Debug, Clone)]
pub struct Passage {
    pub title: String,
    pub url: String,
    /// Plain text (markdown marks removed), one line.
    pub text: String,
}

/// GitHub's heading anchors: lower-case, punctuation dropped, spaces to dashes.
pub fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// Markdown marks that mean nothing in a plain-text answer.
fn plain(line: &str) -> String {
    let l = line.trim();
    let l = l
        .strip_prefix("- ")
        .or_else(|| l.strip_prefix("* "))
        .unwrap_or(l);
    l.replace("**", "").replace('`', "")
}

/// Splits one markdown document into passages at its headings; sections without text are
/// skipped.
pub fn passages(doc: &str, markdown: &str) -> Vec<Passage> {
    let mut out = vec![];
    let mut title: Option<String> = None;
    let mut body: Vec<String> = vec![];
    let mut flush = |title: &Option<String>, body: &mut Vec<String>| {
        let text = body.join(" ").trim().to_string();
        body.clear();
        if let (Some(t), false) = (title, text.is_empty()) {
            out.push(Passage {
                title: t.clone(),
                url: format!("{DOCS_BASE_URL}/{doc}#{}", slug(t)),
                text,
            });
        }
    };
    for line in markdown.lines() {
        let heading = line
            .strip_prefix("### ")
            .or_else(|| line.strip_prefix("## "))
            .or_else(|| line.strip_prefix("# "));
        match heading {
            Some(h) => {
                flush(&title, &mut body);
                title = Some(h.trim().to_string());
            }
            None if line.trim().is_empty() => {}
            None => body.push(plain(line)),
        }
    }
    flush(&title, &mut body);
    out
}

/// A light suffix stemmer, so that "calls"/"call", "verifying"/"verify", "validated"/"validate"
/// meet. Deliberately conservative: a missed match costs less than a wrong one.
fn stem(word: &str) -> String {
    if !word.chars().all(char::is_alphabetic) || word.chars().count() <= 3 {
        return word.to_string();
    }
    let mut w = word.to_string();
    if let Some(s) = w.strip_suffix("ies").or_else(|| w.strip_suffix("ied")) {
        w = format!("{s}y");
    } else if w.ends_with("sses") {
        w.truncate(w.len() - 2);
    } else if w.ends_with('s') && !w.ends_with("ss") && !w.ends_with("us") && !w.ends_with("is") {
        w.pop();
    }
    // "validation" meets "validate", "pagination" meets "paginate".
    if w.len() >= 8 && w.ends_with("ation") {
        w.truncate(w.len() - 3);
        return w;
    }
    let before = w.len();
    if w.len() >= 6 && w.ends_with("ing") {
        w.truncate(w.len() - 3);
    } else if w.len() >= 5 && w.ends_with("ed") {
        w.truncate(w.len() - 2);
    }
    // "logging" → "logg" → "log", "stopped" → "stop".
    let b = w.as_bytes();
    if w.len() < before
        && b.len() >= 3
        && b[b.len() - 1] == b[b.len() - 2]
        && !matches!(
            b[b.len() - 1],
            b'l' | b's' | b'z' | b'a' | b'e' | b'i' | b'o' | b'u'
        )
    {
        w.pop();
    }
    if w.len() >= 5 && w.ends_with('e') {
        w.pop();
    }
    w
}

/// Lower-cased alphanumeric runs, stop words dropped, stemmed. A comma between digits joins
/// them ("1,000" is "1000").
pub fn tokens(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = vec![];
    let mut cur = String::new();
    let mut push = |cur: &mut String| {
        if !cur.is_empty() {
            // Single letters are debris of contractions and possessives ("license's", "don't").
            let letter = cur.chars().count() == 1 && !cur.starts_with(|c: char| c.is_ascii_digit());
            if !letter && !STOP_WORDS.contains(&cur.as_str()) {
                out.push(stem(cur));
            }
            cur.clear();
        }
    };
    for (i, &c) in chars.iter().enumerate() {
        if c.is_alphanumeric() {
            cur.extend(c.to_lowercase());
        } else if c == ','
            && i > 0
            && chars[i - 1].is_ascii_digit()
            && chars.get(i + 1).is_some_and(char::is_ascii_digit)
        {
            continue;
        } else {
            push(&mut cur);
        }
    }
    push(&mut cur);
    out
}

/// A BM25 index over passages.
pub struct Index {
    pub passages: Vec<Passage>,
    /// Term frequencies per passage.
    tf: Vec<HashMap<String, u32>>,
    /// The terms of each passage's heading.
    title_terms: Vec<HashSet<String>>,
    /// Passage lengths in tokens.
    len: Vec<f64>,
    avg_len: f64,
    /// In how many passages each term occurs.
    df: HashMap<String, u32>,
}

impl Index {
    pub fn new(passages: Vec<Passage>) -> Index {
        let mut tf = Vec::with_capacity(passages.len());
        let title_terms = passages
            .iter()
            .map(|p| tokens(&p.title).into_iter().collect())
            .collect();
        let mut len = Vec::with_capacity(passages.len());
        let mut df: HashMap<String, u32> = HashMap::new();
        for p in &passages {
            // The heading counts thrice: it says what the passage is about (a poor man's BM25F).
            let toks = tokens(&format!("{0} {0} {0} {1}", p.title, p.text));
            let mut counts: HashMap<String, u32> = HashMap::new();
            for t in &toks {
                *counts.entry(t.clone()).or_default() += 1;
            }
            for t in counts.keys() {
                *df.entry(t.clone()).or_default() += 1;
            }
            len.push(toks.len() as f64);
            tf.push(counts);
        }
        let avg_len = len.iter().sum::<f64>() / (len.len().max(1) as f64);
        Index {
            passages,
            tf,
            title_terms,
            len,
            avg_len,
            df,
        }
    }

    fn idf(&self, term: &str) -> f64 {
        let n = self.passages.len() as f64;
        let df = self.df.get(term).copied().unwrap_or(0) as f64;
        (1.0 + (n - df + 0.5) / (df + 0.5)).ln()
    }

    /// The share of `query` that passage `i` holds: the IDF-weighted fraction of the query's
    /// distinct terms found in it. A term the documentation never uses weighs as much as the
    /// rarest one, so "bake bread with the api" is mostly not covered by any passage.
    pub fn coverage(&self, query: &str, i: usize) -> f64 {
        let mut terms = tokens(query);
        terms.sort();
        terms.dedup();
        let total: f64 = terms.iter().map(|t| self.idf(t)).sum();
        let held: f64 = terms
            .iter()
            .filter(|t| self.tf[i].contains_key(*t))
            .map(|t| self.idf(t))
            .sum();
        if total > 0.0 { held / total } else { 0.0 }
    }

    /// Does passage `i`'s heading name every term of `query`?
    pub fn title_covers(&self, query: &str, i: usize) -> bool {
        let terms = tokens(query);
        !terms.is_empty() && terms.iter().all(|t| self.title_terms[i].contains(t))
    }

    /// Is passage `i` (scoring `score`) an answer to `query`, or merely the least unrelated one?
    pub fn answers(&self, query: &str, i: usize, score: f64) -> bool {
        let min = if self.title_covers(query, i) {
            MIN_SCORE_TITLED
        } else {
            MIN_SCORE
        };
        score >= min && self.coverage(query, i) >= MIN_COVERAGE
    }

    /// Passages scoring above zero for `query`, best first, as `(passage index, score)`.
    pub fn search(&self, query: &str) -> Vec<(usize, f64)> {
        let mut terms = tokens(query);
        terms.sort();
        terms.dedup();
        terms.retain(|t| self.df.contains_key(t));
        let mut scored: Vec<(usize, f64)> = (0..self.passages.len())
            .map(|i| {
                let norm = K1 * (1.0 - B + B * self.len[i] / self.avg_len);
                let s = terms
                    .iter()
                    .filter_map(|t| self.tf[i].get(t).map(|&f| (t, f as f64)))
                    .map(|(t, f)| self.idf(t) * f * (K1 + 1.0) / (f + norm))
                    .sum::<f64>();
                (i, s)
            })
            .filter(|&(_, s)| s > 0.0)
            .collect();
        scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        scored
    }
}

static INDEX: LazyLock<Index> = LazyLock::new(|| {
    Index::new(
        DOCS.iter()
            .flat_map(|(doc, md)| passages(doc, md))
            .collect(),
    )
});

/// Splits plain text into sentences at `.`, `?` or `!` followed by a space and a capital or a
/// digit (so "e.g. the" and "99.9 %" stay whole).
fn sentences(text: &str) -> Vec<&str> {
    let mut out = vec![];
    let mut start = 0;
    let bytes = text.as_bytes();
    for (i, c) in text.char_indices() {
        if matches!(c, '.' | '?' | '!')
            && bytes.get(i + 1) == Some(&b' ')
            && text[i + 2..]
                .chars()
                .next()
                .is_some_and(|n| n.is_uppercase() || n.is_ascii_digit() || n == '/')
        {
            out.push(text[start..=i].trim());
            start = i + 2;
        }
    }
    if start < text.len() {
        out.push(text[start..].trim());
    }
    out.retain(|s| !s.is_empty());
    out
}

/// A few sentences of `passage` that answer `query`: the opening sentence (it usually states the
/// answer), then those sharing the most query terms, in their original order.
fn excerpt(passage: &Passage, query: &str) -> String {
    let all = sentences(&passage.text);
    let terms: HashSet<String> = tokens(query).into_iter().collect();
    let mut want = ANSWER_SENTENCES;
    // A bare "Yes." opening says little alone.
    if all.first().is_some_and(|s| s.len() < 20) {
        want += 1;
    }
    let mut picked: Vec<usize> = vec![0];
    let mut ranked: Vec<(usize, usize)> = all
        .iter()
        .enumerate()
        .skip(1)
        .map(|(i, s)| {
            let hits = tokens(s)
                .into_iter()
                .collect::<HashSet<_>>()
                .intersection(&terms)
                .count();
            (i, hits)
        })
        .filter(|&(_, hits)| hits > 0)
        .collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    picked.extend(ranked.iter().take(want - 1).map(|&(i, _)| i));
    // Too few matching sentences: continue with the ones that follow the opening.
    let mut next = 1;
    while picked.len() < want && next < all.len() {
        if !picked.contains(&next) {
            picked.push(next);
        }
        next += 1;
    }
    picked.sort_unstable();
    let mut text = picked
        .iter()
        .filter_map(|&i| all.get(i).copied())
        .collect::<Vec<_>>()
        .join(" ");
    if text.chars().count() > ANSWER_MAX_CHARS {
        text = text.chars().take(ANSWER_MAX_CHARS - 1).collect::<String>() + "…";
    }
    text
}

/// A passage an answer was taken from.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Source {
    #[schema(example = "Is there a free tier?")]
    pub title: String,
    #[schema(example = "https://docs.ecosire.com/faq#is-there-a-free-tier")]
    pub url: String,
}

/// The answer and the documentation it came from (`sources` is empty when nothing matched).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Answer {
    #[schema(
        example = "Yes. The free plan costs nothing and includes 1,000 authenticated API calls per day."
    )]
    pub answer: String,
    pub sources: Vec<Source>,
}

/// Answers `question` from `index`.
pub fn answer_from(index: &Index, question: &str) -> Answer {
    let hits = index.search(question);
    let Some(&(best, top)) = hits
        .first()
        .filter(|&&(i, s)| index.answers(question, i, s))
    else {
        return Answer {
            answer: NO_ANSWER.to_string(),
            sources: vec![],
        };
    };
    let sources = hits
        .iter()
        .take_while(|(_, s)| *s >= top * SOURCE_RATIO)
        .take(MAX_SOURCES)
        .map(|&(i, _)| Source {
            title: index.passages[i].title.clone(),
            url: index.passages[i].url.clone(),
        })
        .collect();
    Answer {
        answer: excerpt(&index.passages[best], question),
        sources,
    }
}

/// Answers `question` from the built-in documentation.
pub fn answer(question: &str) -> Answer {
    answer_from(&INDEX, question)
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(ask))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct AskRequest {
    /// 1–1,000 characters.
    #[schema(
        example = "How many API calls per day does the free tier include?",
        min_length = 1,
        max_length = 1000
    )]
    pub question: String,
}

/// Answers a question from the ECOSIRE documentation (public). Retrieval only: the answer is
/// quoted from the best-matching documentation passage, with links to the passages used; a
/// question the documentation does not cover gets an honest "I don't know" and no sources.
#[utoipa::path(post, path = "/api/ecosire-ai/ask", tag = "ask", request_body = AskRequest,
    responses((status = 200, body = Answer),
              (status = 429, description = "RATE_LIMITED", body = crate::error::Problem)))]
pub async fn ask(
    State(_state): State<AppState>,
    _rate: AskLimit,
    Json(req): Json<AskRequest>,
) -> Result<Json<Answer>> {
    let question = req.question.trim();
    Checks::new()
        .len(question, "question", 1, QUESTION_MAX)
        .finish()?;
    Ok(Json(answer(question)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passage(title: &str, text: &str) -> Passage {
        Passage {
            title: title.into(),
            url: format!("{DOCS_BASE_URL}/test#{}", slug(title)),
            text: text.into(),
        }
    }

    fn toy() -> Index {
        Index::new(vec![
            passage("Cats", "Cats purr and sleep all day. A cat likes fish."),
            passage("Dogs", "Dogs bark. A dog likes walks and sleeps at night."),
            passage(
                "Pets",
                "Cats and dogs are pets. Pets need food, water and a vet.",
            ),
            passage(
                "Long",
                "Fish fish fish. This passage is long and rambles about many things: \
                 weather, rivers, mountains, trains, boats, clouds, lakes, roads and cities.",
            ),
        ])
    }

    fn titles(index: &Index, q: &str) -> Vec<String> {
        index
            .search(q)
            .into_iter()
            .map(|(i, _)| index.passages[i].title.clone())
            .collect()
    }

    #[test]
    fn tokens_are_lowercase_stemmed_and_without_stop_words() {
        assert_eq!(
            tokens("How many API Calls per day? 1,000!"),
            vec!["api", "call", "per", "day", "1000"]
        );
        assert_eq!(
            tokens("verifying verified verify"),
            vec!["verify", "verify", "verify"]
        );
        assert_eq!(tokens("validates validated validate"), vec!["validat"; 3]);
        assert_eq!(tokens("VALIDATION_FAILED"), vec!["validat", "fail"]);
        assert_eq!(tokens("logging paginate"), vec!["log", "paginat"]);
        assert!(tokens("what is the").is_empty());
    }

    #[test]
    fn slugs_follow_github_anchors() {
        assert_eq!(slug("Is there a free tier?"), "is-there-a-free-tier");
        assert_eq!(slug("VALIDATION_FAILED (422)"), "validation_failed-422");
        assert_eq!(slug("Contacts and CRM"), "contacts-and-crm");
    }

    #[test]
    fn bm25_prefers_the_passage_about_the_term() {
        let idx = toy();
        assert_eq!(titles(&idx, "cat")[0], "Cats");
        assert_eq!(titles(&idx, "bark")[0], "Dogs");
        // "pet" is in one passage's title and text: it wins over passages that only mention cats.
        assert_eq!(titles(&idx, "pets")[0], "Pets");
        // Nothing in common: nothing at all.
        assert!(idx.search("quantum chromodynamics").is_empty());
        // Stop words alone match nothing.
        assert!(idx.search("what is the").is_empty());
    }

    #[test]
    fn bm25_rare_terms_weigh_more_than_common_ones() {
        let idx = toy();
        // "likes" occurs in two passages, "vet" in one: a passage with the rare term wins.
        let hits = idx.search("likes vet");
        assert_eq!(idx.passages[hits[0].0].title, "Pets");
        assert!(idx.idf("vet") > idx.idf("like"));
    }

    #[test]
    fn bm25_term_frequency_saturates_and_length_normalises() {
        let idx = toy();
        // "fish" three times in a long passage vs once in a short one: k1 saturates the count,
        // b penalises the length, so the repetition does not win by a factor of three.
        let hits = idx.search("fish");
        let score = |t: &str| {
            hits.iter()
                .find(|(i, _)| idx.passages[*i].title == t)
                .unwrap()
                .1
        };
        assert!(score("Long") < 3.0 * score("Cats"));
        assert!(score("Long") > score("Cats"));
        // Identical text, different lengths: the shorter passage scores higher.
        let idx = Index::new(vec![
            passage("A", "license seat"),
            passage(
                "B",
                "license seat plus many other unrelated words here and there",
            ),
        ]);
        let hits = idx.search("seat");
        assert_eq!(idx.passages[hits[0].0].title, "A");
        assert!(hits[0].1 > hits[1].1);
    }

    #[test]
    fn passages_split_at_headings_with_anchor_urls() {
        let ps = passages(
            "faq",
            "# Title\n\nIntro text.\n\n## Group\n\n### First question?\n\nAnswer **one**, `code`.\n- item\n\n### Second\nAnswer two.\n",
        );
        let got: Vec<(&str, &str, &str)> = ps
            .iter()
            .map(|p| (p.title.as_str(), p.url.as_str(), p.text.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("Title", "https://docs.ecosire.com/faq#title", "Intro text."),
                (
                    "First question?",
                    "https://docs.ecosire.com/faq#first-question",
                    "Answer one, code. item"
                ),
                (
                    "Second",
                    "https://docs.ecosire.com/faq#second",
                    "Answer two."
                ),
            ]
        );
    }

    #[test]
    fn sentences_split_without_breaking_abbreviations_or_numbers() {
        assert_eq!(
            sentences("Yes. It is 99.9 % up, e.g. most days. Done!"),
            vec!["Yes.", "It is 99.9 % up, e.g. most days.", "Done!"]
        );
    }

    #[test]
    fn the_built_in_docs_have_unique_anchors_and_enough_passages() {
        let idx = &*INDEX;
        assert!(idx.passages.len() > 60, "{}", idx.passages.len());
        let urls: HashSet<&str> = idx.passages.iter().map(|p| p.url.as_str()).collect();
        assert_eq!(urls.len(), idx.passages.len(), "duplicate heading anchors");
    }

    #[test]
    fn every_error_code_of_the_code_base_is_documented() {
        let errors = DOCS.iter().find(|(d, _)| *d == "errors").unwrap().1;
        for code in [
            "MALFORMED_JSON",
            "VALIDATION_FAILED",
            "UNSUPPORTED_MEDIA_TYPE",
            "PAYLOAD_TOO_LARGE",
            "NOT_FOUND",
            "METHOD_NOT_ALLOWED",
            "INTERNAL_ERROR",
            "UNAUTHENTICATED",
            "FORBIDDEN",
            "CSRF_REJECTED",
            "INVALID_CREDENTIALS",
            "REGISTRATION_CLOSED",
            "EMAIL_TAKEN",
            "API_KEY_INACTIVE",
            "RATE_LIMITED",
            "QUOTA_EXCEEDED",
            "LICENSE_NOT_FOUND",
            "LICENSE_REVOKED",
            "LICENSE_SUSPENDED",
            "LICENSE_EXPIRED",
            "ACTIVATION_LIMIT_REACHED",
            "ACTIVATION_NOT_FOUND",
            "SLUG_TAKEN",
            "PRODUCT_IN_USE",
            "CONTACT_EXISTS",
            "TICKET_CLOSED",
            "SUBSCRIPTION_NOT_FOUND",
            "INVALID_SIGNATURE",
            "STRIPE_NOT_CONFIGURED",
            "DATABASE_UNAVAILABLE",
            "VALID",
            "REVOKED",
            "SUSPENDED",
            "EXPIRED",
            "PRODUCT_MISMATCH",
            "ENTITLEMENTS_MISSING",
            "FINGERPRINT_NOT_ACTIVATED",
        ] {
            assert!(
                errors.contains(&format!("### {code} (")),
                "{code} is not documented"
            );
        }
    }

    #[test]
    fn questions_find_their_passages() {
        for (q, url) in [
            ("Is there a free tier?", "faq#is-there-a-free-tier"),
            (
                "how many calls per day",
                "faq#how-many-api-calls-per-day-can-i-make",
            ),
            (
                "how do I verify a token offline",
                "api-guide#verifying-license-tokens-offline",
            ),
            (
                "what does ACTIVATION_LIMIT_REACHED mean",
                "errors#activation_limit_reached-409",
            ),
            (
                "do refunds revoke licenses",
                "faq#do-refunds-revoke-licenses",
            ),
            (
                "how do I rotate an API key",
                "api-guide#rotating-and-revoking-api-keys",
            ),
            (
                "how are webhook signatures verified",
                "api-guide#verifying-webhook-signatures",
            ),
        ] {
            let a = answer(q);
            let urls: Vec<&str> = a.sources.iter().map(|s| s.url.as_str()).collect();
            assert!(
                urls.iter().any(|u| u.ends_with(url)),
                "{q:?}: expected {url} among {urls:?}"
            );
            assert_ne!(a.answer, NO_ANSWER);
        }
    }

    #[test]
    fn threshold_separates_questions_from_noise() {
        let top = |q: &str| INDEX.search(q).first().map_or(0.0, |h| h.1);
        for q in [
            "is there a free tier",
            "how many calls per day",
            "how do I verify a token offline",
            "do refunds revoke licenses",
            "what uptime do you guarantee",
            "do you support webhooks",
            "what are seats",
            "OAuth2 support",
            "how do I log in",
            "is my data encrypted",
            "what happens if my card is declined",
            "can I self host",
            "what is a license key",
            "what is an API key",
            "is it free",
        ] {
            assert_ne!(answer(q).answer, NO_ANSWER, "{q:?} scored {}", top(q));
        }
        for q in [
            "what is the airspeed of a swallow",
            "what is the capital of france",
            "how do I bake a cake",
            "tell me a joke",
            "who won the world cup in 1998",
            "can I use the api to bake bread",
            "what is the meaning of life",
            "what time is it",
            "license",
            "key",
            "write a poem about licenses",
            "api",
            "hello",
        ] {
            assert_eq!(answer(q).answer, NO_ANSWER, "{q:?} scored {}", top(q));
            assert!(answer(q).sources.is_empty());
        }
    }
}
