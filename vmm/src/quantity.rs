//! Kubernetes resource quantities (`256Mi`, `1Gi`, `512M`, `1e9`, plain bytes) parsed to bytes.
//!
//! Only the forms that make sense for memory sizes are accepted: a non-negative integer or decimal
//! number, an optional decimal exponent (`e`/`E`), and an optional binary (`Ki`..`Ei`) or decimal
//! (`k`, `M`..`E`) suffix. The result must be a whole number of bytes that fits in a `u64`.

use thiserror::Error;

/// Why a quantity string was rejected.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum QuantityError {
    #[error("empty quantity")]
    Empty,
    #[error("{0:?} is not a number")]
    NotANumber(String),
    #[error("unknown suffix {0:?} (use Ki, Mi, Gi, Ti, Pi, Ei, k, M, G, T, P, E or none)")]
    UnknownSuffix(String),
    #[error("{0:?} is too large")]
    Overflow(String),
    #[error("{0:?} is not a whole number of bytes")]
    Fractional(String),
}

/// Parses a Kubernetes quantity such as `256Mi`, `1Gi`, `512M` or `1048576` into bytes.
pub fn parse_bytes(input: &str) -> Result<u64, QuantityError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(QuantityError::Empty);
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    if number.is_empty() || number == "." || number.matches('.').count() > 1 {
        return Err(QuantityError::NotANumber(input.to_string()));
    }
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    // Exponent: either a suffix (binary/decimal multiplier) or a decimal exponent `eN`.
    let (multiplier, exp10): (u128, i32) = match suffix {
        "" => (1, 0),
        "Ki" => (1 << 10, 0),
        "Mi" => (1 << 20, 0),
        "Gi" => (1 << 30, 0),
        "Ti" => (1 << 40, 0),
        "Pi" => (1 << 50, 0),
        "Ei" => (1 << 60, 0),
        "k" => (1, 3),
        "M" => (1, 6),
        "G" => (1, 9),
        "T" => (1, 12),
        "P" => (1, 15),
        "E" => (1, 18),
        other => match other.strip_prefix(['e', 'E']) {
            Some(exp) if !exp.is_empty() => {
                let e: i32 = exp
                    .parse()
                    .map_err(|_| QuantityError::UnknownSuffix(other.to_string()))?;
                (1, e)
            }
            _ => return Err(QuantityError::UnknownSuffix(other.to_string())),
        },
    };
    let overflow = || QuantityError::Overflow(input.to_string());
    // value = digits * 10^(exp10 - frac_len) * multiplier, computed exactly in u128.
    let digits: String = format!("{int_part}{frac_part}");
    let digits = digits.trim_start_matches('0');
    if digits.len() > 38 {
        return Err(overflow());
    }
    let mantissa: u128 = if digits.is_empty() {
        0
    } else {
        digits.parse().map_err(|_| overflow())?
    };
    let scale = exp10 - frac_part.len() as i32;
    let mut value = mantissa.checked_mul(multiplier).ok_or_else(overflow)?;
    if scale >= 0 {
        let pow = 10u128.checked_pow(scale as u32).ok_or_else(overflow)?;
        value = value.checked_mul(pow).ok_or_else(overflow)?;
    } else {
        let pow = 10u128
            .checked_pow(scale.unsigned_abs())
            .ok_or_else(|| QuantityError::Fractional(input.to_string()))?;
        if value % pow != 0 {
            return Err(QuantityError::Fractional(input.to_string()));
        }
        value /= pow;
    }
    u64::try_from(value).map_err(|_| overflow())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_kubernetes_forms() {
        let cases: &[(&str, u64)] = &[
            ("0", 0),
            ("1048576", 1 << 20),
            ("265Mi", 265 << 20),
            ("256Mi", 256 << 20),
            ("1Gi", 1 << 30),
            ("1.5Gi", 3 << 29),
            ("512M", 512_000_000),
            ("1G", 1_000_000_000),
            ("128k", 128_000),
            ("64Ki", 64 << 10),
            ("2Ti", 2 << 40),
            ("1e9", 1_000_000_000),
            ("1E3", 1000),
            ("0.5Ki", 512),
            (" 16Mi ", 16 << 20),
            ("15Ei", 15 << 60),
        ];
        for (input, want) in cases {
            assert_eq!(parse_bytes(input), Ok(*want), "{input}");
        }
    }

    #[test]
    fn rejects_nonsense() {
        assert_eq!(parse_bytes(""), Err(QuantityError::Empty));
        assert!(matches!(
            parse_bytes("abc"),
            Err(QuantityError::NotANumber(_))
        ));
        assert!(matches!(
            parse_bytes("-1Gi"),
            Err(QuantityError::NotANumber(_))
        ));
        assert!(matches!(
            parse_bytes("1.2.3"),
            Err(QuantityError::NotANumber(_))
        ));
        assert!(matches!(
            parse_bytes("."),
            Err(QuantityError::NotANumber(_))
        ));
        assert!(matches!(
            parse_bytes("1Gb"),
            Err(QuantityError::UnknownSuffix(_))
        ));
        assert!(matches!(
            parse_bytes("1m"),
            Err(QuantityError::UnknownSuffix(_))
        ));
        assert!(matches!(
            parse_bytes("1e"),
            Err(QuantityError::UnknownSuffix(_))
        ));
        assert!(matches!(
            parse_bytes("16Ei"),
            Err(QuantityError::Overflow(_))
        ));
        assert!(matches!(
            parse_bytes("1e40"),
            Err(QuantityError::Overflow(_))
        ));
        assert!(matches!(
            parse_bytes("1.5"),
            Err(QuantityError::Fractional(_))
        ));
        assert!(matches!(
            parse_bytes("1e-3"),
            Err(QuantityError::Fractional(_))
        ));
    }
}
