//! Values stored as text that decode straight from a row into the type the code uses (enums such
//! as a role or a key scope), so the objects API.md shows need no `*Row` twin to parse them.

/// Implements decoding of `$t` from a text column through `$parse: fn(&str) -> $t`.
#[macro_export]
macro_rules! text_column {
    ($t:ty, $parse:expr) => {
        impl sqlx::Type<sqlx::Any> for $t {
            fn type_info() -> sqlx::any::AnyTypeInfo {
                <String as sqlx::Type<sqlx::Any>>::type_info()
            }
            fn compatible(ty: &sqlx::any::AnyTypeInfo) -> bool {
                <String as sqlx::Type<sqlx::Any>>::compatible(ty)
            }
        }

        impl<'r> sqlx::Decode<'r, sqlx::Any> for $t {
            fn decode(value: sqlx::any::AnyValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
                let text = <&str as sqlx::Decode<'r, sqlx::Any>>::decode(value)?;
                Ok(($parse)(text))
            }
        }
    };
}
