//! Kubernetes resource quantities (`100m`, `0.5`, `265Mi`, `1Gi`, `512M`, `1e3`).
//!
//! Parsed exactly (no floating point) and converted the way apimachinery does: `milli_value` and
//! `value` round up to the next integer unit.

use std::fmt;

/// Why a quantity string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
)]
pub struct QuantityError;

/// A parsed quantity: `digits × 10^exp10 × 2^exp2`, non-negative.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity {
    digits: u128,
    exp10: i32,
    exp2: u32,
}

impl Quantity {
    /// Parses a Kubernetes quantity. Negative quantities are rejected (no resource is negative).
    pub fn parse(s: &str) -> Result<Self, QuantityError> {
        let s = s.trim();
        let num_end = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+'))
            .unwrap_or(s.len());
        let (num, suffix) = s.split_at(num_end);
        let num = num.strip_prefix('+').unwrap_or(num);
        if num.is_empty() || num.matches('.').count() > 1 || num == "." {
            return Err(QuantityError);
        }
        let (int_part, frac_part) = num.split_once('.').unwrap_or((num, ""));
        let mut digits: u128 = 0;
        for c in int_part.chars().chain(frac_part.chars()) {
            let d = c.to_digit(10).ok_or(QuantityError)?;
            digits = digits
                .checked_mul(10)
                .and_then(|v| v.checked_add(u128::from(d)))
                .ok_or(QuantityError)?;
        }
        let frac_len = i32::try_from(frac_part.len()).map_err(|_| QuantityError)?;
        let (exp10, exp2) = match suffix {
            "" => (0, 0),
            "n" => (-9, 0),
            "u" => (-6, 0),
            "m" => (-3, 0),
            "k" => (3, 0),
            "M" => (6, 0),
            "G" => (9, 0),
            "T" => (12, 0),
            "P" => (15, 0),
            "E" => (18, 0),
            "Ki" => (0, 10),
            "Mi" => (0, 20),
            "Gi" => (0, 30),
            "Ti" => (0, 40),
            "Pi" => (0, 50),
            "Ei" => (0, 60),
            other => {
                let exp = other
                    .strip_prefix('e')
                    .or_else(|| other.strip_prefix('E'))
                    .ok_or(QuantityError)?;
                let e: i32 = exp.parse().map_err(|_| QuantityError)?;
                if !(-30..=30).contains(&e) {
                    return Err(QuantityError);
                }
                (e, 0)
            }
        };
        Ok(Quantity {
            digits,
            exp10: exp10.checked_sub(frac_len).ok_or(QuantityError)?,
            exp2,
        })
    }

    /// The value scaled by `10^scale`, rounded up; `None` on overflow.
    fn scaled_ceil(&self, scale: i32) -> Option<u128> {
        let mut n = self.digits.checked_mul(1u128.checked_shl(self.exp2)?)?;
        let e = self.exp10.checked_add(scale)?;
        if e >= 0 {
            for _ in 0..e {
                n = n.checked_mul(10)?;
            }
            Some(n)
        } else {
            // n < 10^39: a divisor too large for u128 leaves a fraction that rounds up to 1.
            match 10u128.checked_pow(e.unsigned_abs()) {
                Some(div) => Some(n.div_ceil(div)),
                None => Some(u128::from(n > 0)),
            }
        }
    }

    /// The quantity in thousandths of a unit (CPU millicores), rounded up.
    pub fn milli_value(&self) -> Option<u64> {
        self.scaled_ceil(3).and_then(|v| u64::try_from(v).ok())
    }

    /// The quantity in whole units (bytes for memory), rounded up.
    pub fn value(&self) -> Option<u64> {
        self.scaled_ceil(0).and_then(|v| u64::try_from(v).ok())
    }
}

/// Parses a CPU quantity to millicores (`100m` → 100, `1` → 1000, `0.5` → 500).
pub fn parse_cpu_millis(s: &str) -> Result<u64, QuantityError> {
    Quantity::parse(s)?.milli_value().ok_or(QuantityError)
}

/// Parses a memory quantity to bytes (`265Mi` → 277872640).
pub fn parse_bytes(s: &str) -> Result<u64, QuantityError> {
    Quantity::parse(s)?.value().ok_or(QuantityError)
}

/// Formats millicores the way metrics-server does: `250m`, or whole cores as `2`.
pub fn format_cpu_millis(m: u64) -> String {
    if m % 1000 == 0 && m > 0 {
        format!("{}", m / 1000)
    } else {
        format!("{m}m")
    }
}

/// Formats bytes with the largest exact binary suffix (`265Mi`), else `Ki` rounded up.
pub fn format_bytes(b: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("Ti", 1 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ];
    for (suffix, unit) in UNITS {
        if b >= unit && b % unit == 0 {
            return format!("{}{suffix}", b / unit);
        }
    }
    if b < 1024 {
        return b.to_string();
    }
    format!("{}Ki", b.div_ceil(1024))
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}e{}*2^{}", self.digits, self.exp10, self.exp2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_quantities() {
        let cases = [
            ("100m", 100),
            ("300m", 300),
            ("1", 1000),
            ("0.5", 500),
            ("2.25", 2250),
            ("1500m", 1500),
            ("1e3", 1_000_000),
            ("0.0001", 1), // rounds up like apimachinery's MilliValue
            ("+1", 1000),
        ];
        for (s, want) in cases {
            assert_eq!(parse_cpu_millis(s), Ok(want), "{s}");
        }
    }

    #[test]
    fn memory_quantities() {
        let cases = [
            ("265Mi", 265 * 1024 * 1024),
            ("1Gi", 1 << 30),
            ("512M", 512_000_000),
            ("128974848", 128_974_848),
            ("129e6", 129_000_000),
            ("123Ki", 125_952),
            ("1.5Gi", 1_610_612_736),
            ("0.1Ki", 103), // 102.4 rounds up
        ];
        for (s, want) in cases {
            assert_eq!(parse_bytes(s), Ok(want), "{s}");
        }
    }

    #[test]
    fn rejects_garbage() {
        for s in ["", "abc", "-1", "1.2.3", "10Xi", "Mi", "1e99", ".", "1 Gi"] {
            assert_eq!(parse_bytes(s), Err(QuantityError), "{s:?}");
        }
    }

    #[test]
    fn long_fractions_do_not_overflow_the_exponent() {
        let zeros = format!("0.{}1", "0".repeat(100_000));
        assert_eq!(parse_bytes(&zeros), Ok(1));
        assert_eq!(parse_bytes(&format!("{zeros}e-30")), Ok(1));
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        const SUFFIXES: [&str; 18] = [
            "", "n", "u", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei",
            "e3", "e-3",
        ];

        fn exact(digits: u64, suffix: &str, milli: bool) -> Option<u64> {
            let (e10, e2): (i32, u32) = match suffix {
                "" => (0, 0),
                "n" => (-9, 0),
                "u" => (-6, 0),
                "m" => (-3, 0),
                "k" | "e3" => (3, 0),
                "e-3" => (-3, 0),
                "M" => (6, 0),
                "G" => (9, 0),
                "T" => (12, 0),
                "P" => (15, 0),
                "E" => (18, 0),
                "Ki" => (0, 10),
                "Mi" => (0, 20),
                "Gi" => (0, 30),
                "Ti" => (0, 40),
                "Pi" => (0, 50),
                _ => (0, 60),
            };
            let e10 = e10 + if milli { 3 } else { 0 };
            let n = u128::from(digits).checked_mul(1u128 << e2)?;
            let v = if e10 >= 0 {
                n.checked_mul(10u128.pow(e10.unsigned_abs()))?
            } else {
                n.div_ceil(10u128.pow(e10.unsigned_abs()))
            };
            u64::try_from(v).ok()
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            #[test]
            fn any_text_parses_or_errs(s in "\\PC{0,40}") {
                let _ = parse_bytes(&s);
                let _ = parse_cpu_millis(&s);
            }

            #[test]
            fn numeric_text_parses_or_errs(s in "[+-]?[0-9.]{0,45}([eEinumkKMGTP]{0,2}[-+]?[0-9]{0,12})") {
                let _ = parse_bytes(&s);
                let _ = parse_cpu_millis(&s);
            }

            #[test]
            fn integer_quantities_are_exact_or_overflow(d in any::<u64>(), i in 0..SUFFIXES.len()) {
                let s = format!("{d}{}", SUFFIXES[i]);
                prop_assert_eq!(parse_bytes(&s).ok(), exact(d, SUFFIXES[i], false), "{}", s);
                prop_assert_eq!(parse_cpu_millis(&s).ok(), exact(d, SUFFIXES[i], true), "{}", s);
            }

            #[test]
            fn formatted_values_parse_back(b in 0..u64::MAX - 2048, m in any::<u64>()) {
                let want = if b < 1024 || b % 1024 == 0 { b } else { b.div_ceil(1024) * 1024 };
                prop_assert_eq!(parse_bytes(&format_bytes(b)), Ok(want));
                prop_assert_eq!(parse_cpu_millis(&format_cpu_millis(m)), Ok(m));
            }
        }
    }

    #[test]
    fn formats() {
        assert_eq!(format_cpu_millis(283), "283m");
        assert_eq!(format_cpu_millis(2000), "2");
        assert_eq!(format_cpu_millis(0), "0m");
        assert_eq!(format_bytes(265 << 20), "265Mi");
        assert_eq!(format_bytes(1 << 30), "1Gi");
        assert_eq!(format_bytes(1000), "1000");
        assert_eq!(format_bytes(1025), "2Ki");
    }
}
