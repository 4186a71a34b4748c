//! Signature helpers for scripts that check a caller's HMAC (GitHub's
//! `X-Hub-Signature-256`, Stripe's `Stripe-Signature`): the hex digest a
//! service computes, and a comparison whose time does not depend on where
//! the first difference is, so a forger learns nothing by timing guesses.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// HMAC-SHA256 of `data` under `key`, as lowercase hex. Keys of any length
/// are accepted (HMAC hashes long ones), so this cannot fail.
pub fn hmac_sha256_hex(key: &[u8], data: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    };
    mac.update(data);
    hex::encode(mac.finalize().into_bytes())
}

/// Whether `a` and `b` are the same bytes, in time that depends only on
/// their lengths. A length difference answers false at once: lengths of
/// signatures are public anyway.
pub fn equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231 test cases 1, 2, 6 and 7 (the ones with the full output).
    #[test]
    fn hmac_matches_rfc4231_vectors() {
        let cases: [(&[u8], &[u8], &str); 4] = [
            (
                &[0x0b; 20],
                b"Hi There",
                "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
            ),
            (
                b"Jefe",
                b"what do ya want for nothing?",
                "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
            ),
            (
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First",
                "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
            ),
            (
                &[0xaa; 131],
                b"This is a test using a larger than block-size key and a larger than block-size data. The key needs to be hashed before being used by the HMAC algorithm.",
                "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
            ),
        ];
        for (key, data, want) in cases {
            assert_eq!(hmac_sha256_hex(key, data), want);
        }
    }

    #[test]
    fn empty_key_and_data_are_fine() {
        assert_eq!(
            hmac_sha256_hex(b"", b""),
            "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad"
        );
    }

    /// GitHub's documented example: secret "It's a Secret to Everybody",
    /// payload "Hello, World!".
    #[test]
    fn github_style_signature_verifies() {
        let sig = format!(
            "sha256={}",
            hmac_sha256_hex(b"It's a Secret to Everybody", b"Hello, World!")
        );
        assert_eq!(
            sig,
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
        assert!(equal(
            sig.as_bytes(),
            b"sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        ));
    }

    #[test]
    fn equal_compares_content_and_length() {
        assert!(equal(b"", b""));
        assert!(equal(b"abc", b"abc"));
        assert!(!equal(b"abc", b"abd"));
        assert!(!equal(b"abc", b"xbc"));
        assert!(!equal(b"abc", b"abcd"));
        assert!(!equal(b"abcd", b"abc"));
        assert!(!equal(b"", b"a"));
    }
}
