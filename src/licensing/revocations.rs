//! Signed revocation lists: `GET /api/licenses/revocations?product=…` answers a compact JWS
//! (EdDSA, signed by the license signing key of the moment, verified with the same JWKS as license
//! tokens) naming the revoked and suspended licenses of one product, so that a client that is
//! offline, or that can reach only a mirror of this file, stops honouring a revoked license at the
//! next list it sees rather than at its token's `exp`.
//!
//! - **Order**: `seq` is a per-product counter in the database (`revocation_seqs`), bumped in the
//!   transaction of every status change to or from `revoked`/`suspended` (`lifecycle::apply`).
//!   Every instance reads the same counter, so `seq` never goes backwards across instances or
//!   restarts, and a client refuses any list older than the newest it has seen.
//! - **Byte-identical lists**: `iat` is the start of the current hour, the ids are sorted and the
//!   filter's salt is derived from (product, seq, iat); Ed25519 signatures are deterministic. So
//!   every instance signs the very same bytes for a (product, seq, hour, key), the `ETag` (a
//!   digest of those bytes) agrees behind a load balancer, and a CDN mirror stays consistent.
//! - **Bounded work**: a request costs one indexed read (the product and its counter); the list is
//!   built and signed once per (product, seq, hour, key) and kept in memory; concurrent misses
//!   wait for one build.
//! - **Size**: up to [`EXPLICIT_LIMIT`] ids a set is listed as ids (≈ 33 bytes each). Above that
//!   it is a Golomb-coded set (GCS, as in BIP 158) of 64-bit SHA-256 hashes of the ids, salted per
//!   list, with false-positive rate 2^-[`FILTER_P`] (≈ 1 in a million): ≈ 2.7 bytes per id (4.8
//!   in the JWS, whose payload encodes the claims in base64url once more, against 44 for ids), and
//!   still exact enough: a license wrongly matched is refused offline only until the next list
//!   (another salt), and online checks never consult the list. A Bloom filter of the same rate
//!   needs ≈ 3.6 bytes per id (a third more); a GCS is the smallest practical form and decodes
//!   with one sequential pass. Measured by `benches/revocations.rs` (docs/api-guide.md).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::limits::Public;
use crate::crypto::sha256;
use crate::db::{Db, Tx};
use crate::error::{Error, Result};
use crate::http::extract::Query;
use crate::jws::Signer;
use crate::state::AppState;

/// The `aud` of every revocation list.
pub const AUDIENCE: &str = "ecosire:revocations";
/// The JWS `typ`: a list is never mistaken for a license token (`JWT`) or a session (`at+jwt`).
pub const TYP: &str = "revocations+jwt";
/// How long a list is acceptable after its `iat`: a mirror that stops syncing is noticed.
pub const LIST_LIFETIME: Duration = Duration::from_secs(3 * 86_400);
/// A list's `iat` is the start of its hour (see the module docs); it is re-signed every hour.
pub const SIGNING_WINDOW_S: i64 = 3_600;
/// Up to this many ids a set is listed; above, it is a Golomb-coded set.
pub const EXPLICIT_LIMIT: usize = 1_000;
/// The GCS parameter: false-positive rate 2^-P.
pub const FILTER_P: u8 = 20;
/// `Cache-Control` of a list: caches and CDNs may serve it for a minute, and revalidate it
/// cheaply (304) after.
const CACHE_CONTROL: &str = "public, max-age=60, stale-while-revalidate=60";

/// A Golomb-coded set of license ids (the large-list form of [`RevocationClaims`]).
///
/// Membership of `id`: `h = u64 (big-endian) of the first 8 bytes of SHA-256(salt ‖ id) mod m`;
/// the set holds the `count` distinct such values of its ids, sorted, each encoded as its
/// difference from the previous one (the first from 0): the quotient `d >> p` in unary (that
/// many 1 bits, then a 0), then the low `p` bits, most significant first, bits packed from the
/// most significant bit of each byte. `id` is in the set when `h` is among the values (false
/// positives at rate 2^-p).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GcsFilter {
    /// Always `gcs-sha256`.
    #[schema(example = "gcs-sha256")]
    pub alg: String,
    /// Bits of each remainder; the false-positive rate is 2^-p.
    #[schema(example = 20)]
    pub p: u8,
    /// The hash range: the number of ids × 2^p.
    pub m: u64,
    /// How many values are encoded.
    pub count: u64,
    /// base64url, 16 bytes.
    pub salt: String,
    /// base64url of the bit stream.
    pub data: String,
}

/// The claims of a revocation list. Each set is present in exactly one form: `revoked` (ids) or
/// `revoked_filter`, and `suspended` or `suspended_filter`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RevocationClaims {
    /// The configured issuer, as in license tokens.
    pub iss: String,
    /// Always `ecosire:revocations`.
    pub aud: String,
    /// The product id.
    pub product: String,
    /// Orders the lists of a product: it grows with every change to the sets and never goes
    /// backwards. Refuse a list with a lower `seq` than one already seen.
    pub seq: i64,
    /// Unix seconds: the start of the hour in which the list was signed.
    pub iat: i64,
    /// Unix seconds: the list is not acceptable after this.
    pub exp: i64,
    /// Ids of the product's revoked licenses, sorted (at most 1,000; else `revoked_filter`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_filter: Option<GcsFilter>,
    /// Ids of the product's suspended licenses, sorted (at most 1,000; else `suspended_filter`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspended: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspended_filter: Option<GcsFilter>,
}

/// The GCS value of `id` under `salt` in the range `m`.
pub fn gcs_hash(salt: &[u8], id: &str, m: u64) -> u64 {
    let mut input = Vec::with_capacity(salt.len() + id.len());
    input.extend_from_slice(salt);
    input.extend_from_slice(id.as_bytes());
    let d = sha256(&input);
    u64::from_be_bytes(d[..8].try_into().expect("8 bytes")) % m
}

#[derive(Default)]
struct BitWriter {
    bytes: Vec<u8>,
    used: u8,
}

impl BitWriter {
    fn bit(&mut self, one: bool) {
        if self.used == 0 {
            self.bytes.push(0);
        }
        if one {
            *self.bytes.last_mut().expect("pushed") |= 0x80 >> self.used;
        }
        self.used = (self.used + 1) % 8;
    }
}

/// Encodes `ids` as a Golomb-coded set (see [`GcsFilter`]).
pub fn gcs_encode(ids: &[String], p: u8, salt: &[u8; 16]) -> GcsFilter {
    let m = (ids.len().max(1) as u64) << p;
    let mut values: Vec<u64> = ids.iter().map(|id| gcs_hash(salt, id, m)).collect();
    values.sort_unstable();
    values.dedup();
    let mut w = BitWriter::default();
    let mut last = 0;
    for v in &values {
        let d = v - last;
        last = *v;
        for _ in 0..(d >> p) {
            w.bit(true);
        }
        w.bit(false);
        for i in (0..p).rev() {
            w.bit((d >> i) & 1 == 1);
        }
    }
    GcsFilter {
        alg: "gcs-sha256".into(),
        p,
        m,
        count: values.len() as u64,
        salt: URL_SAFE_NO_PAD.encode(salt),
        data: URL_SAFE_NO_PAD.encode(&w.bytes),
    }
}

/// Whether `id` is in `f` (false positives at rate 2^-p); `None` when `f` is malformed. The
/// server never needs it; it pins the format the SDKs decode.
pub fn gcs_contains(f: &GcsFilter, id: &str) -> Option<bool> {
    let salt = URL_SAFE_NO_PAD.decode(&f.salt).ok()?;
    let data = URL_SAFE_NO_PAD.decode(&f.data).ok()?;
    if f.m == 0 || f.p > 32 {
        return None;
    }
    let h = gcs_hash(&salt, id, f.m);
    let mut pos = 0usize;
    let mut bit = || {
        let b = data
            .get(pos / 8)
            .map(|byte| byte & (0x80 >> (pos % 8)) != 0);
        pos += 1;
        b
    };
    let mut value = 0u64;
    for _ in 0..f.count {
        let mut q = 0u64;
        while bit()? {
            q += 1;
        }
        let mut r = 0u64;
        for _ in 0..f.p {
            r = (r << 1) | u64::from(bit()?);
        }
        value += (q << f.p) | r;
        if value >= h {
            return Some(value == h);
        }
    }
    Some(false)
}

/// One set of ids in the form its size calls for.
fn set_form(ids: Vec<String>, salt: &[u8; 16]) -> (Option<Vec<String>>, Option<GcsFilter>) {
    if ids.len() <= EXPLICIT_LIMIT {
        (Some(ids), None)
    } else {
        (None, Some(gcs_encode(&ids, FILTER_P, salt)))
    }
}

/// The claims of the list `seq` of `product_id` signed in the hour starting at `iat`; `revoked`
/// and `suspended` are sorted here. Deterministic: the same inputs give the same claims.
pub fn build_claims(
    issuer: &str,
    product_id: &str,
    seq: i64,
    iat: i64,
    mut revoked: Vec<String>,
    mut suspended: Vec<String>,
) -> RevocationClaims {
    revoked.sort_unstable();
    suspended.sort_unstable();
    let seed = sha256(format!("ecosire revocations\n{product_id}\n{seq}\n{iat}").as_bytes());
    let salt: [u8; 16] = seed[..16].try_into().expect("16 bytes");
    let (revoked, revoked_filter) = set_form(revoked, &salt);
    let (suspended, suspended_filter) = set_form(suspended, &salt);
    RevocationClaims {
        iss: issuer.to_string(),
        aud: AUDIENCE.to_string(),
        product: product_id.to_string(),
        seq,
        iat,
        exp: iat + LIST_LIFETIME.as_secs() as i64,
        revoked,
        revoked_filter,
        suspended,
        suspended_filter,
    }
}

/// Bumps the list counter of `product_id` inside `tx`: call it in the transaction that moves one
/// of its licenses to or from `revoked`/`suspended`.
pub async fn bump(tx: &mut Tx, product_id: &str, now_ms: i64) -> Result<()> {
    sqlx::query(
        "INSERT INTO revocation_seqs (product_id, seq, changed_at) VALUES ($1, 1, $2) \
         ON CONFLICT (product_id) DO UPDATE SET seq = revocation_seqs.seq + 1, changed_at = $2",
    )
    .bind(product_id)
    .bind(now_ms)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The longest any license token, license file (air-gapped activation) or list may stay
/// unexpired: the longest offline lease of any product, the longest license-file lease of any
/// product that allows offline activation or still has a device activated that way, or a list's
/// lifetime if longer. A signing key may leave the JWKS this long after it stopped signing
/// (`ecosire keys retire`).
pub async fn max_token_life(db: &Db) -> anyhow::Result<Duration> {
    // Portable SQL: no GREATEST (PostgreSQL) or two-argument MAX (SQLite).
    let days: i64 = sqlx::query_scalar(
        "SELECT COALESCE(MAX(CASE WHEN offline_activation_lease_days > offline_lease_days AND \
         (offline_activation = 1 OR EXISTS (SELECT 1 FROM activations a JOIN licenses l ON l.id = a.license_id \
         WHERE l.product_id = p.id AND a.offline_until IS NOT NULL)) \
         THEN offline_activation_lease_days ELSE offline_lease_days END), 0) FROM products p",
    )
    .fetch_one(&db.pool)
    .await
    .map_err(|e| anyhow::anyhow!("reading the longest offline lease: {e}"))?;
    let lease = Duration::from_secs(u64::try_from(days).unwrap_or(0).saturating_mul(86_400));
    Ok(lease.max(LIST_LIFETIME))
}

/// A signed list, ready to serve.
#[derive(Debug)]
pub struct SignedList {
    seq: i64,
    iat: i64,
    kid: String,
    body: Bytes,
    etag: HeaderValue,
}

/// The latest signed list of each product, and the one lock builds take.
#[derive(Default)]
pub struct RevocationLists {
    lists: Mutex<HashMap<String, Arc<SignedList>>>,
    /// Builds run one at a time: a burst of misses (a new hour, a new seq) makes one build per
    /// product, the others wait and find it cached.
    build: tokio::sync::Mutex<()>,
}

impl RevocationLists {
    fn cached(&self, product_id: &str, seq: i64, iat: i64, kid: &str) -> Option<Arc<SignedList>> {
        let lists = self.lists.lock().expect("lists lock");
        lists
            .get(product_id)
            .filter(|l| l.seq >= seq && l.iat == iat && l.kid == kid)
            .cloned()
    }

    /// The list `seq` of `product_id` for the hour `iat`, signed by `signer`: cached, or built
    /// (one query, one signature) by exactly one request.
    async fn get(
        &self,
        db: &Db,
        signer: &Signer,
        issuer: &str,
        product_id: &str,
        seq: i64,
        iat: i64,
    ) -> Result<Arc<SignedList>> {
        if let Some(l) = self.cached(product_id, seq, iat, &signer.kid) {
            return Ok(l);
        }
        let _one = self.build.lock().await;
        if let Some(l) = self.cached(product_id, seq, iat, &signer.kid) {
            return Ok(l);
        }
        // The counter and the ids in one statement (one snapshot on either backend): a list
        // always says exactly the seq of its contents, so two instances never sign different
        // sets under one seq. It may be newer than the seq the request read; it is cached
        // under its own.
        let rows: Vec<(i64, Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT COALESCE(r.seq, 0), l.id, l.status FROM products p \
             LEFT JOIN revocation_seqs r ON r.product_id = p.id \
             LEFT JOIN licenses l ON l.product_id = p.id AND l.status IN ('revoked', 'suspended') \
             WHERE p.id = $1",
        )
        .bind(product_id)
        .fetch_all(&db.pool)
        .await?;
        let seq = rows.first().map_or(seq, |r| r.0);
        let (mut revoked, mut suspended) = (vec![], vec![]);
        for (_, id, status) in rows {
            match (id, status.as_deref()) {
                (Some(id), Some("revoked")) => revoked.push(id),
                (Some(id), Some(_)) => suspended.push(id),
                _ => {}
            }
        }
        let claims = build_claims(issuer, product_id, seq, iat, revoked, suspended);
        let jws = signer.sign(&claims);
        let etag = format!("\"{}\"", hex::encode(&sha256(jws.as_bytes())[..12]));
        let list = Arc::new(SignedList {
            seq,
            iat,
            kid: signer.kid.clone(),
            body: Bytes::from(jws),
            etag: HeaderValue::from_str(&etag).expect("hex is a valid header"),
        });
        self.lists
            .lock()
            .expect("lists lock")
            .insert(product_id.to_string(), list.clone());
        Ok(list)
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RevocationQuery {
    /// The product, by id or slug.
    #[param(example = "desktop-pro")]
    pub product: String,
}

/// Whether `If-None-Match` names `etag` (or is `*`); weak comparison, as RFC 9110 asks for it.
fn not_modified(headers: &HeaderMap, etag: &HeaderValue) -> bool {
    let want = etag.to_str().unwrap_or("");
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim())
        .any(|t| t == "*" || t.trim_start_matches("W/") == want)
}

/// The signed revocation list of a product: a compact JWS (`typ: revocations+jwt`, EdDSA, the
/// license signing keys of the JWKS) whose claims name its revoked and suspended licenses, with
/// a `seq` that only grows. Public and cacheable: it may be mirrored as a static file anywhere
/// and is still verified by its signature. `If-None-Match` with the `ETag` answers 304.
#[utoipa::path(get, path = "/api/licenses/revocations", tag = "licensing",
    params(RevocationQuery),
    responses(
        (status = 200, description = "A compact JWS; its claims are a RevocationClaims object",
            content_type = "application/jwt", body = String,
            headers(("ETag" = String, description = "Names these exact bytes (the same on every instance)"),
                    ("Cache-Control" = String, description = "public, max-age=60, stale-while-revalidate=60"))),
        (status = 304, description = "Not modified: the If-None-Match ETag is current"),
        (status = 404, description = "NOT_FOUND: no such product", body = crate::error::Problem)))]
pub async fn get_revocation_list(
    _rate: Public,
    State(state): State<AppState>,
    Query(q): Query<RevocationQuery>,
    headers: HeaderMap,
) -> Result<Response> {
    let row: Option<(String, i64)> = sqlx::query_as(
        "SELECT p.id, COALESCE(r.seq, 0) FROM products p \
         LEFT JOIN revocation_seqs r ON r.product_id = p.id WHERE p.id = $1 OR p.slug = $1",
    )
    .bind(&q.product)
    .fetch_optional(&state.db.pool)
    .await?;
    let (product_id, seq) = row.ok_or_else(|| Error::no_such("Product"))?;
    let now = crate::timestamp::now_ms().div_euclid(1000);
    let iat = now - now.rem_euclid(SIGNING_WINDOW_S);
    let signer = state.keys.list_signer();
    let list = state
        .revocations
        .get(
            &state.db,
            &signer,
            &state.config.token_issuer,
            &product_id,
            seq,
            iat,
        )
        .await?;
    let cache = [
        (header::ETAG, list.etag.clone()),
        (
            header::CACHE_CONTROL,
            HeaderValue::from_static(CACHE_CONTROL),
        ),
    ];
    if not_modified(&headers, &list.etag) {
        return Ok((StatusCode::NOT_MODIFIED, cache).into_response());
    }
    Ok((
        cache,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/jwt"),
        )],
        list.body.clone(),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize, tag: &str) -> Vec<String> {
        (0..n).map(|i| format!("lic_{tag}{i:08}")).collect()
    }

    #[test]
    fn a_gcs_holds_its_ids_and_rarely_anything_else() {
        let set = ids(1_500, "r");
        let f = gcs_encode(&set, FILTER_P, &[7; 16]);
        assert!(set.iter().all(|id| gcs_contains(&f, id) == Some(true)));
        // Each lookup decodes half the set on average: kept small for the unoptimized test build.
        let strangers = ids(10_000, "x");
        let false_positives = strangers
            .iter()
            .filter(|id| gcs_contains(&f, id) == Some(true))
            .count();
        // Expected 10,000 × 2^-20 ≈ 0.01.
        assert!(false_positives <= 1, "{false_positives}");
        let bytes = URL_SAFE_NO_PAD.decode(&f.data).unwrap().len();
        assert!(bytes < 1_500 * 3, "≈ 2.7 bytes an id: {bytes}");
        // An empty set matches nothing; a truncated one is malformed.
        let empty = gcs_encode(&[], FILTER_P, &[7; 16]);
        assert_eq!(gcs_contains(&empty, "lic_r00000001"), Some(false));
        let cut = GcsFilter {
            data: URL_SAFE_NO_PAD.encode(&URL_SAFE_NO_PAD.decode(&f.data).unwrap()[..10]),
            ..f
        };
        assert!(set.iter().any(|id| gcs_contains(&cut, id).is_none()));
    }

    /// The vector the SDKs decode too (`sdks/rust/src/revocations.rs`, the TypeScript tests):
    /// one format, three implementations.
    #[test]
    fn the_shared_test_vector() {
        let members: Vec<String> = ["lic_a", "lic_b", "lic_c", "lic_d", "lic_e"]
            .map(String::from)
            .to_vec();
        let f = gcs_encode(&members, 4, &[7; 16]);
        assert_eq!(
            (f.m, f.count, f.salt.as_str(), f.data.as_str()),
            (80, 5, "BwcHBwcHBwcHBwcHBwcHBw", "lPhIMA")
        );
        for id in &members {
            assert_eq!(gcs_contains(&f, id), Some(true));
        }
        for id in ["lic_f", "lic_g", "lic_h", "lic_x", "lic_y", "lic_z"] {
            assert_eq!(gcs_contains(&f, id), Some(false));
        }
    }

    #[test]
    fn small_sets_are_listed_large_ones_filtered_and_builds_are_deterministic() {
        let c = build_claims("ecosire", "prd_1", 3, 7200, ids(2, "b"), ids(1_001, "s"));
        assert_eq!(c.revoked.as_deref(), Some(&ids(2, "b")[..]));
        assert!(c.revoked_filter.is_none());
        assert!(c.suspended.is_none());
        let f = c.suspended_filter.as_ref().unwrap();
        assert_eq!(gcs_contains(f, "lic_s00001000"), Some(true));
        assert_eq!(c.exp - c.iat, 3 * 86_400);
        let mut shuffled = ids(1_001, "s");
        shuffled.reverse();
        let again = build_claims("ecosire", "prd_1", 3, 7200, ids(2, "b"), shuffled);
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            serde_json::to_string(&again).unwrap()
        );
        // Another seq, another salt: a false positive does not outlive its list.
        let next = build_claims("ecosire", "prd_1", 4, 7200, vec![], ids(1_001, "s"));
        assert_ne!(next.suspended_filter.unwrap().salt, f.salt);
    }
}
