//! API tokens: created by an operator, shown once, stored only as a SHA-256 hash.
//!
//! Tokens carry 256 random bits, so a fast hash is enough: there is nothing to brute-force
//! that a slow password hash would protect.

use rand::RngCore;
use sha2::{Digest, Sha256};

/// Every token starts with this, so secret scanners and people can recognise one.
pub const PREFIX: &str = "rbk_";

/// A new random token, e.g. `rbk_3f…` (68 characters).
pub fn generate() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{PREFIX}{}", hex::encode(bytes))
}

/// The hash under which a token is stored and looked up.
pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Whether a string has the shape of a token (checked before any database look-up).
pub fn well_formed(token: &str) -> bool {
    token.len() == PREFIX.len() + 64
        && token.starts_with(PREFIX)
        && token[PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_well_formed_and_hashed() {
        let a = generate();
        let b = generate();
        assert_ne!(a, b);
        assert!(well_formed(&a));
        assert!(!well_formed("rbk_short"));
        assert!(!well_formed(&a.to_uppercase()));
        assert_eq!(hash(&a).len(), 64);
        assert_ne!(hash(&a), hash(&b));
        assert!(!hash(&a).contains(&a[PREFIX.len()..]));
    }
}
