//! Times are stored as unix milliseconds (one integer type on both backends) and shown as
//! RFC 3339 UTC strings.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::ToSchema;

/// One day in milliseconds.
pub const DAY_MS: i64 = 86_400_000;

/// The UTC day of `ms` as days since the epoch (how per-day counters are keyed).
pub fn utc_day(ms: i64) -> i64 {
    ms.div_euclid(DAY_MS)
}

pub fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// A point in time as unix milliseconds; RFC 3339 on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, ToSchema)]
#[schema(value_type = String, format = DateTime, example = "2027-01-01T00:00:00Z")]
pub struct Timestamp(pub i64);

/// Latest instant we accept (year 9999), so arithmetic never overflows.
pub const MAX_MS: i64 = 253_402_300_799_000;

impl Timestamp {
    pub fn now() -> Self {
        Timestamp(now_ms())
    }
    pub fn ms(self) -> i64 {
        self.0
    }
    pub fn secs(self) -> i64 {
        self.0.div_euclid(1000)
    }
    pub fn to_rfc3339(self) -> String {
        // Clamped, so an out-of-range value can never print as 1970.
        let ms = self.0.clamp(0, MAX_MS);
        let dt = OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let mut s = dt.format(&Rfc3339).unwrap_or_default();
        // Whole seconds print without a fraction; otherwise keep milliseconds only.
        if let Some(dot) = s.find('.') {
            let end = s.len() - 1; // the trailing 'Z'
            let frac = &s[dot + 1..end];
            let ms = &frac[..frac.len().min(3)];
            s = format!("{}.{:0<3}Z", &s[..dot], ms);
        }
        s
    }
    pub fn parse(s: &str) -> Option<Self> {
        let dt = OffsetDateTime::parse(s.trim(), &Rfc3339).ok()?;
        let ms = (dt.unix_timestamp_nanos() / 1_000_000) as i64;
        (0..=MAX_MS).contains(&ms).then_some(Timestamp(ms))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Timestamp::parse(&s).ok_or_else(|| {
            serde::de::Error::custom("expected an RFC 3339 timestamp such as 2027-01-01T00:00:00Z")
        })
    }
}

/// For PATCH bodies: distinguishes an absent field (`None`) from an explicit `null` (`Some(None)`).
pub fn double_option<'de, T, D>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: Deserializer<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

// Stored as integer unix milliseconds on both backends, so rows decode straight into the objects
// API.md shows (no `*Row` twin just to wrap the number).
impl sqlx::Type<sqlx::Any> for Timestamp {
    fn type_info() -> sqlx::any::AnyTypeInfo {
        <i64 as sqlx::Type<sqlx::Any>>::type_info()
    }
    fn compatible(ty: &sqlx::any::AnyTypeInfo) -> bool {
        <i64 as sqlx::Type<sqlx::Any>>::compatible(ty)
    }
}

impl<'r> sqlx::Decode<'r, sqlx::Any> for Timestamp {
    fn decode(value: sqlx::any::AnyValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        <i64 as sqlx::Decode<'r, sqlx::Any>>::decode(value).map(Timestamp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_rfc3339() {
        assert_eq!(Timestamp(0).to_rfc3339(), "1970-01-01T00:00:00Z");
        assert_eq!(
            Timestamp(1_500).to_rfc3339(),
            "1970-01-01T00:00:01.5Z".replace("1.5", "1.500")
        );
        assert_eq!(
            Timestamp::parse("2027-01-01T00:00:00Z").unwrap().secs(),
            1_798_761_600
        );
        assert_eq!(
            Timestamp::parse("2027-01-01T01:00:00+01:00")
                .unwrap()
                .secs(),
            1_798_761_600
        );
        assert!(Timestamp::parse("yesterday").is_none());
    }
}
