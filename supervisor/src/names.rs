//! Generated object names: `generateName` + 5 characters, as the API server does it.

use rand::Rng;

/// apimachinery's `rand.String` alphabet: no vowels (no words), no confusable characters.
const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
/// Length of the random suffix.
const SUFFIX_LEN: usize = 5;
/// Names are truncated so that base + suffix fits 63 characters.
const MAX_GENERATED_NAME: usize = 63;

/// `base` (truncated to leave room) followed by 5 random characters, no separator.
pub fn generate(base: &str) -> String {
    let keep = base.len().min(MAX_GENERATED_NAME - SUFFIX_LEN);
    let mut out = base[..keep].to_string();
    let mut rng = rand::rng();
    for _ in 0..SUFFIX_LEN {
        out.push(ALPHABET[rng.random_range(0..ALPHABET.len())] as char);
    }
    out
}

/// 5 characters of [`ALPHABET`] derived from `key` (FNV-1a): a stable suffix for names a
/// controller must find again (an EndpointSlice per Service and port set).
pub fn short_hash(key: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (0..SUFFIX_LEN)
        .map(|_| {
            let c = ALPHABET[(h % ALPHABET.len() as u64) as usize] as char;
            h /= ALPHABET.len() as u64;
            c
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_hashes_are_stable_and_spread() {
        assert_eq!(short_hash("default/web"), short_hash("default/web"));
        assert_ne!(short_hash("default/web"), short_hash("default/web2"));
        assert_eq!(short_hash("x").len(), 5);
    }

    #[test]
    fn suffix_uses_the_alphabet() {
        let n = generate("lab05-cirros-replicaset");
        assert_eq!(n.len(), "lab05-cirros-replicaset".len() + 5);
        assert!(n[23..].bytes().all(|b| ALPHABET.contains(&b)), "{n}");
    }

    #[test]
    fn long_bases_are_truncated() {
        let base = "a".repeat(100);
        assert_eq!(generate(&base).len(), 63);
    }
}
