//! A simulated contact: someone with their own Signal identity who writes to
//! the paired companion. It builds a session from the pre-key bundle the
//! companion uploaded at login (the server hands that bundle out, so the
//! mock has it) and encrypts with wacore's own libsignal, so the client
//! decrypts a real `pkmsg`, then `msg`s on the same session.

use std::collections::HashMap;

use anyhow::{Context, anyhow, bail};
use whatsapp_rust::buffa::Message as _;
use whatsapp_rust::wacore::libsignal::protocol::{
    CiphertextMessage, Direction, IdentityChange, IdentityKey, IdentityKeyPair, IdentityKeyStore,
    PreKeyBundle, ProtocolAddress, PublicKey, SessionRecord, SessionStore, SignalMessage,
    SignalProtocolError, UsePQRatchet, message_decrypt_signal, message_encrypt,
    process_prekey_bundle,
};
use whatsapp_rust::wacore::messages::MessageUtils;
use whatsapp_rust::wacore_binary::Node;
use whatsapp_rust::wacore_binary::node::NodeContent;
use whatsapp_rust::waproto::whatsapp as wa;

type SignalResult<T> = Result<T, SignalProtocolError>;

/// The companion's pre-keys as its login's upload IQ carried them.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub registration_id: u32,
    pub identity: [u8; 32],
    pub signed_id: u32,
    pub signed_public: [u8; 32],
    pub signed_signature: Vec<u8>,
    /// One-time pre-keys not yet handed out.
    pub one_time: Vec<(u32, [u8; 32])>,
}

fn bytes_of<'a>(node: &'a Node, path: &[&str]) -> anyhow::Result<&'a [u8]> {
    match node.get_optional_child_by_tag(path).map(|n| &n.content) {
        Some(Some(NodeContent::Bytes(b))) => Ok(b),
        _ => bail!("pre-key upload without <{}>", path.join("/")),
    }
}

fn key32(b: &[u8], what: &str) -> anyhow::Result<[u8; 32]> {
    b.try_into()
        .map_err(|_| anyhow!("{what} is {} bytes, not 32", b.len()))
}

/// A 3-byte (or 4-byte) big-endian id.
fn id_of(b: &[u8]) -> u32 {
    b.iter().fold(0u32, |n, &x| (n << 8) | u32::from(x))
}

impl Bundle {
    /// Parses `<iq xmlns="encrypt" type="set"><registration/><type/>
    /// <identity/><list><key><id/><value/></key>…</list><skey><id/>
    /// <value/><signature/></skey></iq>`.
    pub fn from_upload(iq: &Node) -> anyhow::Result<Bundle> {
        let mut one_time = Vec::new();
        if let Some(list) = iq.get_optional_child("list") {
            for key in list.get_children_by_tag("key") {
                one_time.push((
                    id_of(bytes_of(key, &["id"])?),
                    key32(bytes_of(key, &["value"])?, "a pre-key")?,
                ));
            }
        }
        Ok(Bundle {
            registration_id: id_of(bytes_of(iq, &["registration"])?),
            identity: key32(bytes_of(iq, &["identity"])?, "the identity key")?,
            signed_id: id_of(bytes_of(iq, &["skey", "id"])?),
            signed_public: key32(bytes_of(iq, &["skey", "value"])?, "the signed pre-key")?,
            signed_signature: bytes_of(iq, &["skey", "signature"])?.to_vec(),
            one_time,
        })
    }
}

/// The contact's identity and the identities it has seen, in memory.
struct Ids {
    identity: IdentityKeyPair,
    registration_id: u32,
    known: HashMap<String, IdentityKey>,
}

/// The contact's sessions, in memory.
#[derive(Default)]
struct Sessions(HashMap<String, SessionRecord>);

#[async_trait::async_trait]
impl IdentityKeyStore for Ids {
    async fn get_identity_key_pair(&self) -> SignalResult<IdentityKeyPair> {
        Ok(self.identity.clone())
    }

    async fn get_local_registration_id(&self) -> SignalResult<u32> {
        Ok(self.registration_id)
    }

    async fn save_identity(
        &mut self,
        address: &ProtocolAddress,
        identity: &IdentityKey,
    ) -> SignalResult<IdentityChange> {
        let old = self.known.insert(address.to_string(), *identity);
        Ok(match old {
            Some(o) if o != *identity => IdentityChange::ReplacedExisting,
            _ => IdentityChange::NewOrUnchanged,
        })
    }

    async fn is_trusted_identity(
        &self,
        _address: &ProtocolAddress,
        _identity: &IdentityKey,
        _direction: Direction,
    ) -> SignalResult<bool> {
        Ok(true) // trust on first use, and after
    }

    async fn get_identity(&self, address: &ProtocolAddress) -> SignalResult<Option<IdentityKey>> {
        Ok(self.known.get(&address.to_string()).copied())
    }
}

#[async_trait::async_trait]
impl SessionStore for Sessions {
    async fn load_session(&self, address: &ProtocolAddress) -> SignalResult<Option<SessionRecord>> {
        Ok(self.0.get(&address.to_string()).cloned())
    }

    async fn has_session(&self, address: &ProtocolAddress) -> SignalResult<bool> {
        Ok(self.0.contains_key(&address.to_string()))
    }

    async fn store_session(
        &mut self,
        address: &ProtocolAddress,
        record: SessionRecord,
    ) -> SignalResult<()> {
        self.0.insert(address.to_string(), record);
        Ok(())
    }
}

pub struct Contact {
    /// The phone number (the JID's user part).
    pub user: String,
    ids: Ids,
    sessions: Sessions,
    /// Ids of the messages already decrypted (each can be only once).
    read: std::collections::HashSet<String>,
    /// What the companion sent this contact, in order.
    pub inbox: Vec<wa::Message>,
}

impl Contact {
    pub fn new(user: &str) -> Contact {
        let mut rng = rand_010::make_rng::<rand_010::rngs::StdRng>();
        Contact {
            user: user.to_string(),
            ids: Ids {
                identity: IdentityKeyPair::generate(&mut rng),
                registration_id: rand_010::random::<u32>() & 0x3fff,
                known: HashMap::new(),
            },
            sessions: Sessions::default(),
            read: Default::default(),
            inbox: Vec::new(),
        }
    }

    /// Encrypts `message` (padded as WhatsApp pads) for the companion
    /// `device`, starting a session from `bundle` the first time. Answers the
    /// `<enc type>` (`pkmsg` until the companion answers, then `msg`) and the
    /// ciphertext.
    pub async fn encrypt(
        &mut self,
        device: &ProtocolAddress,
        bundle: &mut Bundle,
        message: &wa::Message,
    ) -> anyhow::Result<(&'static str, Vec<u8>)> {
        if !self.sessions.0.contains_key(&device.to_string()) {
            let one_time = bundle.one_time.pop();
            let pre_key = match one_time {
                Some((id, key)) => Some((
                    id.into(),
                    PublicKey::from_djb_public_key_bytes(&key).context("a pre-key")?,
                )),
                None => None,
            };
            let signal_bundle = PreKeyBundle::new(
                bundle.registration_id,
                device.device_id(),
                pre_key,
                bundle.signed_id.into(),
                PublicKey::from_djb_public_key_bytes(&bundle.signed_public)
                    .context("the signed pre-key")?,
                bundle.signed_signature.clone(),
                IdentityKey::new(
                    PublicKey::from_djb_public_key_bytes(&bundle.identity)
                        .context("the identity key")?,
                ),
            )?;
            let mut rng = rand_010::make_rng::<rand_010::rngs::StdRng>();
            process_prekey_bundle(
                device,
                &mut self.sessions,
                &mut self.ids,
                &signal_bundle,
                &mut rng,
                UsePQRatchet::No,
            )
            .await?;
        }
        let padded = MessageUtils::pad_message_v2(message.encode_to_vec());
        let ct = message_encrypt(&padded, device, &mut self.sessions, &mut self.ids).await?;
        Ok(match ct {
            CiphertextMessage::PreKeySignalMessage(m) => ("pkmsg", m.serialized().to_vec()),
            CiphertextMessage::SignalMessage(m) => ("msg", m.serialized().to_vec()),
            other => bail!("unexpected ciphertext kind {:?}", other.message_type()),
        })
    }

    /// Decrypts the companion's message `id` (an `<enc>` of `kind`) into
    /// the inbox, once. The contact owns no pre-keys, so the companion can
    /// only answer on the session the contact started: `msg`, not `pkmsg`.
    pub async fn receive(
        &mut self,
        from: &ProtocolAddress,
        id: &str,
        kind: &str,
        ciphertext: &[u8],
    ) -> anyhow::Result<()> {
        if self.read.contains(id) {
            return Ok(());
        }
        if kind != "msg" {
            bail!("message {id}: <enc type={kind:?}> (the contact only reads msg)");
        }
        let m = SignalMessage::try_from(ciphertext).context("parsing a SignalMessage")?;
        let mut rng = rand_010::make_rng::<rand_010::rngs::StdRng>();
        let plain =
            message_decrypt_signal(&m, from, &mut self.sessions, &mut self.ids, &mut rng).await?;
        let body = MessageUtils::unpad_message_ref(&plain.plaintext, 2)?;
        self.inbox
            .push(wa::Message::decode_from_slice(body).context("decoding the message")?);
        self.read.insert(id.to_string());
        Ok(())
    }
}
