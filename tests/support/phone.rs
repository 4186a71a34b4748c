//! The phone's side of QR pairing: what the primary device puts in the
//! `<pair-success>` after scanning a companion's QR code.
//!
//! The companion (wacore's `PairUtils::do_pair_crypto`) checks, for a
//! non-hosted (E2EE) account:
//!
//! ```text
//! ADVSignedDeviceIdentityHMAC {
//!     details: ADVSignedDeviceIdentity bytes,
//!     hmac: HMAC-SHA256(adv secret from the QR, details)      // no prefix
//!     account_type: E2EE,
//! }
//! ADVSignedDeviceIdentity {
//!     details: ADVDeviceIdentity bytes (key_index is required),
//!     account_signature_key: the phone's identity public key (32-byte Djb),
//!     account_signature: XEdDSA over [6, 0] ‖ details ‖ companion identity pub,
//! }
//! ```

use anyhow::{Context, anyhow, bail};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use whatsapp_rust::buffa::Message as _;
use whatsapp_rust::wacore::libsignal::protocol::IdentityKeyPair;
use whatsapp_rust::waproto::whatsapp as wa;

/// `ADV_PREFIX_ACCOUNT_SIGNATURE` in wacore's pair.rs.
const ADV_PREFIX_ACCOUNT_SIGNATURE: &[u8] = &[6, 0];

/// The key index the mock phone gives each companion it links.
pub const KEY_INDEX: u32 = 1;

/// What the companion's QR code carries: `ref,noise,identity,adv[,type]`
/// (wacore `PairUtils::make_qr_data`; Baileys puts the same fields after a
/// `https://wa.me/settings/linked_devices#` link).
#[derive(Debug, Clone)]
pub struct Qr {
    pub pairing_ref: String,
    pub noise: [u8; 32],
    pub identity: [u8; 32],
    pub adv_secret: Vec<u8>,
}

/// What a phone's camera reads before the fields when the code is a link
/// (Baileys 7 shows its QR as one).
const LINK_PREFIX: &str = "https://wa.me/settings/linked_devices#";

impl Qr {
    /// Parses `ref,noise,identity,adv[,type]`, bare or after the
    /// `wa.me/settings/linked_devices#` link.
    pub fn parse(code: &str) -> anyhow::Result<Qr> {
        let code = code.strip_prefix(LINK_PREFIX).unwrap_or(code);
        let parts: Vec<&str> = code.split(',').collect();
        if parts.len() < 4 {
            bail!("QR code with {} fields: {code}", parts.len());
        }
        let key = |i: usize, what: &str| -> anyhow::Result<[u8; 32]> {
            base64_decode(parts[i])
                .with_context(|| format!("QR {what}"))?
                .try_into()
                .map_err(|_| anyhow!("QR {what} is not 32 bytes"))
        };
        Ok(Qr {
            pairing_ref: parts[0].to_string(),
            noise: key(1, "noise key")?,
            identity: key(2, "identity key")?,
            adv_secret: base64_decode(parts[3]).context("QR adv secret")?,
        })
    }
}

/// The `<device-identity>` bytes for a companion with identity key
/// `companion_identity`, signed by the phone's identity key (the account
/// key: a client trusts it as the primary device's Signal identity) and
/// MACed with the companion's ADV secret. `raw_id` names the account's
/// ADV identity; the device lists the server hands out carry it too.
pub fn device_identity(
    phone: &IdentityKeyPair,
    raw_id: u32,
    companion_identity: &[u8; 32],
    adv_secret: &[u8],
) -> anyhow::Result<Vec<u8>> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let inner = wa::ADVDeviceIdentity {
        raw_id: Some(raw_id),
        timestamp: Some(now),
        key_index: Some(KEY_INDEX),
        account_type: Some(wa::ADVEncryptionType::E2EE),
        device_type: Some(wa::ADVEncryptionType::E2EE),
    }
    .encode_to_vec();

    let mut to_sign = ADV_PREFIX_ACCOUNT_SIGNATURE.to_vec();
    to_sign.extend_from_slice(&inner);
    to_sign.extend_from_slice(companion_identity);
    let signature = phone
        .private_key()
        .calculate_signature(
            &to_sign,
            &mut rand_010::make_rng::<rand_010::rngs::StdRng>(),
        )
        .map_err(|e| anyhow!("signing the device identity: {e}"))?;

    let signed = wa::ADVSignedDeviceIdentity {
        details: Some(inner),
        account_signature_key: Some(phone.public_key().public_key_bytes().to_vec()),
        account_signature: Some(signature.to_vec()),
        device_signature: None,
    }
    .encode_to_vec();

    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(adv_secret).map_err(|e| anyhow!("HMAC key: {e}"))?;
    mac.update(&signed);
    Ok(wa::ADVSignedDeviceIdentityHMAC {
        details: Some(signed),
        hmac: Some(mac.finalize().into_bytes().to_vec()),
        account_type: Some(wa::ADVEncryptionType::E2EE),
    }
    .encode_to_vec())
}

/// `ADV_PREFIX_KEY_INDEX_LIST`: what the account signs a key index list
/// under. Neither client here verifies that signature.
const ADV_PREFIX_KEY_INDEX_LIST: &[u8] = &[6, 2];

/// The signed `<key-index-list>` bytes a device list carries: which
/// companion key indexes of the account `raw_id` are valid.
pub fn key_index_list(phone: &IdentityKeyPair, raw_id: u32, valid: &[u32]) -> Vec<u8> {
    let details = wa::ADVKeyIndexList {
        raw_id: Some(raw_id),
        timestamp: Some(super::now_secs()),
        current_index: valid.iter().copied().max(),
        valid_indexes: valid.to_vec(),
        ..Default::default()
    }
    .encode_to_vec();
    let mut to_sign = ADV_PREFIX_KEY_INDEX_LIST.to_vec();
    to_sign.extend_from_slice(&details);
    let signature = phone
        .private_key()
        .calculate_signature(
            &to_sign,
            &mut rand_010::make_rng::<rand_010::rngs::StdRng>(),
        )
        .map(|s| s.to_vec())
        .ok();
    wa::ADVSignedKeyIndexList {
        details: Some(details),
        account_signature: signature,
        account_signature_key: None,
    }
    .encode_to_vec()
}

/// Standard padded base64, the inverse of [`super::base64`].
pub fn base64_decode(text: &str) -> anyhow::Result<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => bail!("bad base64 character {:?}", c as char),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Ok(out)
}
