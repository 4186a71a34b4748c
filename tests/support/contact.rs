//! A Signal party the mock plays: a contact who writes to an account, or an
//! account's primary phone. It has its own identity, registration id, signed
//! pre-key and one-time pre-keys, so a client can fetch its bundle
//! (`<iq xmlns="encrypt" type="get"><key>`) and open a session with a
//! `pkmsg`, and it can open a session from the pre-keys a companion uploaded.
//! Everything runs on wacore's own libsignal, in memory.

use std::collections::{HashMap, HashSet};

use anyhow::{Context, anyhow, bail};
use whatsapp_rust::buffa::Message as _;
use whatsapp_rust::wacore::libsignal::protocol::{
    CiphertextMessage, Direction, GenericSignedPreKey, IdentityChange, IdentityKey,
    IdentityKeyPair, IdentityKeyStore, KeyPair, PreKeyBundle, PreKeyId, PreKeyRecord,
    PreKeySignalMessage, PreKeyStore, ProtocolAddress, PublicKey, SessionRecord, SessionStore,
    SignalMessage, SignalProtocolError, SignedPreKeyId, SignedPreKeyRecord, SignedPreKeyStore,
    Timestamp, UsePQRatchet, message_decrypt_prekey, message_decrypt_signal, message_encrypt,
    process_prekey_bundle,
};
use whatsapp_rust::wacore::libsignal::protocol::{
    SenderKeyDistributionMessage, SenderKeyName, SenderKeyRecord, SenderKeyStore,
    create_sender_key_distribution_message, group_decrypt, group_encrypt,
    process_sender_key_distribution_message,
};
use whatsapp_rust::wacore::messages::MessageUtils;
use whatsapp_rust::wacore_binary::Node;
use whatsapp_rust::wacore_binary::builder::NodeBuilder;
use whatsapp_rust::wacore_binary::node::NodeContent;
use whatsapp_rust::waproto::whatsapp as wa;

type SignalResult<T> = Result<T, SignalProtocolError>;

/// One-time pre-keys a party keeps on offer; more are made as they go.
const ONE_TIME_POOL: usize = 5;

/// The signed pre-key's id (each party has one).
const SIGNED_ID: u32 = 1;

/// A companion's pre-keys as its login's upload IQ carried them.
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

    /// What the server holds after `upload` arrived: the same companion
    /// (identity) adds its new one-time pre-keys to those still on offer
    /// and may replace its signed pre-key; a new identity replaces it all.
    pub fn merge(old: Option<Bundle>, upload: Bundle) -> Bundle {
        match old {
            Some(mut old) if old.identity == upload.identity => {
                for (id, key) in upload.one_time {
                    if !old.one_time.iter().any(|(have, _)| *have == id) {
                        old.one_time.push((id, key));
                    }
                }
                Bundle {
                    one_time: old.one_time,
                    ..upload
                }
            }
            _ => upload,
        }
    }

    /// Hands out the oldest one-time pre-key (the client's newest stays
    /// unused: Baileys re-uploads at login when it was taken).
    pub fn take_one_time(&mut self) -> Option<(u32, [u8; 32])> {
        (!self.one_time.is_empty()).then(|| self.one_time.remove(0))
    }

    /// The `<user jid>` entry of a `<key>` fetch's answer, handing out one
    /// one-time pre-key (as the server does; none left: the bundle goes out
    /// without one, which Signal allows). `device_identity` is the
    /// companion's signed ADV identity, which clients check for a
    /// companion device.
    pub fn user_node(&mut self, jid: &str, device_identity: Option<&[u8]>) -> Node {
        let one_time = self.take_one_time();
        user_node(
            jid,
            self.registration_id,
            &self.identity,
            (self.signed_id, &self.signed_public, &self.signed_signature),
            one_time.as_ref().map(|(id, key)| (*id, key)),
            device_identity,
        )
    }
}

/// `<user jid><registration/><type/><identity/><skey/>[<key/>]
/// [<device-identity/>]</user>`.
fn user_node(
    jid: &str,
    registration_id: u32,
    identity: &[u8; 32],
    signed: (u32, &[u8; 32], &[u8]),
    one_time: Option<(u32, &[u8; 32])>,
    device_identity: Option<&[u8]>,
) -> Node {
    let id3 = |id: u32| id.to_be_bytes()[1..].to_vec();
    let mut children = vec![
        NodeBuilder::new("registration")
            .bytes(registration_id.to_be_bytes().to_vec())
            .build(),
        NodeBuilder::new("type").bytes(vec![5u8]).build(),
        NodeBuilder::new("identity")
            .bytes(identity.to_vec())
            .build(),
        NodeBuilder::new("skey")
            .children([
                NodeBuilder::new("id").bytes(id3(signed.0)).build(),
                NodeBuilder::new("value").bytes(signed.1.to_vec()).build(),
                NodeBuilder::new("signature")
                    .bytes(signed.2.to_vec())
                    .build(),
            ])
            .build(),
    ];
    if let Some((id, key)) = one_time {
        children.push(
            NodeBuilder::new("key")
                .children([
                    NodeBuilder::new("id").bytes(id3(id)).build(),
                    NodeBuilder::new("value").bytes(key.to_vec()).build(),
                ])
                .build(),
        );
    }
    if let Some(di) = device_identity {
        children.push(
            NodeBuilder::new("device-identity")
                .bytes(di.to_vec())
                .build(),
        );
    }
    NodeBuilder::new("user")
        .attr("jid", jid.to_string())
        .children(children)
        .build()
}

fn djb(key: &PublicKey) -> [u8; 32] {
    key.public_key_bytes().try_into().unwrap_or([0; 32])
}

fn rng() -> rand_010::rngs::StdRng {
    rand_010::make_rng::<rand_010::rngs::StdRng>()
}

/// The party's identity and the identities it has seen, in memory.
struct Ids {
    identity: IdentityKeyPair,
    registration_id: u32,
    known: HashMap<String, IdentityKey>,
}

/// The party's sessions, in memory.
#[derive(Default)]
struct Sessions(HashMap<String, SessionRecord>);

/// The party's signed pre-key.
struct Signed {
    record: SignedPreKeyRecord,
    public: [u8; 32],
    signature: Vec<u8>,
}

/// The party's one-time pre-keys.
struct OneTime {
    /// Every one not yet consumed by a `pkmsg`.
    records: HashMap<u32, PreKeyRecord>,
    /// Those not handed out yet, in id order.
    on_offer: Vec<u32>,
    next_id: u32,
}

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

#[async_trait::async_trait]
impl PreKeyStore for OneTime {
    async fn get_pre_key(&self, id: PreKeyId) -> SignalResult<PreKeyRecord> {
        self.records
            .get(&u32::from(id))
            .cloned()
            .ok_or(SignalProtocolError::InvalidPreKeyId)
    }

    async fn save_pre_key(&mut self, id: PreKeyId, record: &PreKeyRecord) -> SignalResult<()> {
        self.records.insert(id.into(), record.clone());
        Ok(())
    }

    async fn remove_pre_key(&mut self, id: PreKeyId) -> SignalResult<()> {
        self.records.remove(&u32::from(id));
        Ok(())
    }
}

#[async_trait::async_trait]
impl SignedPreKeyStore for Signed {
    async fn get_signed_pre_key(&self, id: SignedPreKeyId) -> SignalResult<SignedPreKeyRecord> {
        if u32::from(id) == SIGNED_ID {
            Ok(self.record.clone())
        } else {
            Err(SignalProtocolError::InvalidSignedPreKeyId)
        }
    }

    async fn save_signed_pre_key(
        &mut self,
        _id: SignedPreKeyId,
        _record: &SignedPreKeyRecord,
    ) -> SignalResult<()> {
        Ok(())
    }
}

impl Signed {
    fn generate(identity: &IdentityKeyPair) -> Signed {
        let pair = KeyPair::generate(&mut rng());
        let signature = identity
            .private_key()
            .calculate_signature(&pair.public_key.serialize(), &mut rng())
            .expect("signing a pre-key");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Signed {
            record: SignedPreKeyRecord::new(
                SIGNED_ID.into(),
                Timestamp::from_epoch_millis(now),
                &pair,
                &signature,
            ),
            public: djb(&pair.public_key),
            signature: signature.to_vec(),
        }
    }
}

impl OneTime {
    fn top_up(&mut self) {
        while self.on_offer.len() < ONE_TIME_POOL {
            let id = self.next_id;
            self.next_id += 1;
            let pair = KeyPair::generate(&mut rng());
            self.records.insert(id, PreKeyRecord::new(id.into(), &pair));
            self.on_offer.push(id);
        }
    }

    /// Hands out the oldest key on offer.
    fn take(&mut self) -> Option<(u32, [u8; 32])> {
        self.top_up();
        let id = self.on_offer.remove(0);
        let record = self.records.get(&id)?;
        Some((id, djb(&record.public_key().ok()?)))
    }
}

/// Sender keys: this party's own chain per group, and those others
/// distributed to it.
#[derive(Default)]
struct SenderKeys(HashMap<String, SenderKeyRecord>);

fn sk_key(name: &SenderKeyName) -> String {
    format!("{}\u{0}{}", name.group_id(), name.sender_id())
}

#[async_trait::async_trait]
impl SenderKeyStore for SenderKeys {
    async fn store_sender_key(
        &mut self,
        name: &SenderKeyName,
        record: SenderKeyRecord,
    ) -> SignalResult<()> {
        self.0.insert(sk_key(name), record);
        Ok(())
    }

    async fn load_sender_key(&self, name: &SenderKeyName) -> SignalResult<Option<SenderKeyRecord>> {
        Ok(self.0.get(&sk_key(name)).cloned())
    }
}

pub struct Contact {
    /// The phone number (the JID's user part).
    pub user: String,
    /// The LID's user part.
    pub lid: String,
    ids: Ids,
    sessions: Sessions,
    signed: Signed,
    one_time: OneTime,
    /// Ids of the messages already decrypted (each can be only once).
    read: HashSet<String>,
    /// What was sent to this party so far, in order.
    pub inbox: Vec<wa::Message>,
    sender_keys: SenderKeys,
}

impl Contact {
    pub fn new(user: &str, lid: &str) -> Contact {
        let identity = IdentityKeyPair::generate(&mut rng());
        let signed = Signed::generate(&identity);
        Contact {
            user: user.to_string(),
            lid: lid.to_string(),
            ids: Ids {
                identity,
                registration_id: rand_010::random::<u32>() & 0x3fff,
                known: HashMap::new(),
            },
            sessions: Sessions::default(),
            signed,
            one_time: OneTime {
                records: HashMap::new(),
                on_offer: Vec::new(),
                next_id: 1,
            },
            read: Default::default(),
            inbox: Vec::new(),
            sender_keys: SenderKeys::default(),
        }
    }

    /// `message` for group `group` (`<id>@g.us`) as this party sends it:
    /// the sender-key distribution message (to go to each member device
    /// over its 1:1 session) and the `skmsg` ciphertext everyone reads.
    pub async fn group_encrypt(
        &mut self,
        group: &str,
        message: &wa::Message,
    ) -> anyhow::Result<(wa::Message, Vec<u8>)> {
        let name = SenderKeyName::from_parts(group, &format!("{}.0", self.user));
        let skdm = create_sender_key_distribution_message(&name, &mut self.sender_keys, &mut rng())
            .await?;
        let distribution = wa::Message {
            sender_key_distribution_message: whatsapp_rust::buffa::MessageField::some(
                wa::message::SenderKeyDistributionMessage {
                    group_id: Some(group.to_string()),
                    axolotl_sender_key_distribution_message: Some(skdm.serialized().to_vec()),
                },
            ),
            ..Default::default()
        };
        let padded = MessageUtils::pad_message_v2(message.encode_to_vec());
        let skmsg = group_encrypt(&mut self.sender_keys, &name, &padded, &mut rng()).await?;
        Ok((distribution, skmsg.serialized().to_vec()))
    }

    /// Reads a group message (`skmsg`) `from` sent in `group`, with the
    /// sender key it distributed earlier; into the inbox, once.
    pub async fn group_receive(
        &mut self,
        group: &str,
        from: &ProtocolAddress,
        id: &str,
        ciphertext: &[u8],
    ) -> anyhow::Result<bool> {
        let key = format!("{group}/{id}");
        if self.read.contains(&key) {
            return Ok(false);
        }
        let name = SenderKeyName::from_parts(group, &from.to_string());
        let plain = group_decrypt(ciphertext, &mut self.sender_keys, &name)
            .await
            .context("decrypting the group message")?;
        let body = MessageUtils::unpad_message_ref(&plain, 2)?;
        let message = wa::Message::decode_from_slice(body).context("decoding the message")?;
        self.inbox.push(message);
        self.read.insert(key);
        Ok(true)
    }

    /// The identity key pair (a phone signs its companions' ADV identity
    /// with it: the account key is the primary's identity key).
    pub fn identity(&self) -> &IdentityKeyPair {
        &self.ids.identity
    }

    /// The identity public key as 32 raw bytes.
    pub fn identity_public(&self) -> [u8; 32] {
        djb(self.ids.identity.public_key())
    }

    /// This party's entry in a `<key>` fetch's answer under `jid`, handing
    /// out one of its one-time pre-keys.
    pub fn user_node(&mut self, jid: &str) -> Node {
        let one_time = self.one_time.take();
        user_node(
            jid,
            self.ids.registration_id,
            &self.identity_public(),
            (SIGNED_ID, &self.signed.public, &self.signed.signature),
            one_time.as_ref().map(|(id, key)| (*id, key)),
            None,
        )
    }

    /// Whether writing to `device` needs a new session from `bundle` (none
    /// yet, or the companion's identity changed: it was linked anew).
    pub fn needs_session(&self, device: &ProtocolAddress, bundle: &Bundle) -> bool {
        let key = device.to_string();
        let same_identity = self
            .ids
            .known
            .get(&key)
            .is_some_and(|k| djb(k.public_key()) == bundle.identity);
        !(same_identity && self.sessions.0.contains_key(&key))
    }

    /// Encrypts `message` (padded as WhatsApp pads) for the companion
    /// `device`, starting a session from `bundle` the first time, or again
    /// once the companion's identity changed (it was linked anew). Answers
    /// the `<enc type>` (`pkmsg` until the companion answers, then `msg`)
    /// and the ciphertext.
    pub async fn encrypt(
        &mut self,
        device: &ProtocolAddress,
        bundle: &mut Bundle,
        message: &wa::Message,
    ) -> anyhow::Result<(&'static str, Vec<u8>)> {
        let key = device.to_string();
        let identity = IdentityKey::new(
            PublicKey::from_djb_public_key_bytes(&bundle.identity).context("the identity key")?,
        );
        if self.ids.known.get(&key).is_some_and(|k| *k != identity) {
            self.sessions.0.remove(&key);
            self.ids.known.remove(&key);
        }
        if !self.sessions.0.contains_key(&key) {
            let pre_key = match bundle.one_time.pop() {
                Some((id, k)) => Some((
                    id.into(),
                    PublicKey::from_djb_public_key_bytes(&k).context("a pre-key")?,
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
                identity,
            )?;
            process_prekey_bundle(
                device,
                &mut self.sessions,
                &mut self.ids,
                &signal_bundle,
                &mut rng(),
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

    /// Decrypts the companion's message `id` (an `<enc>` of `kind`: `msg`
    /// on a session either side started, `pkmsg` for one the companion
    /// started from this party's pre-keys) into the inbox, once. Answers
    /// whether it was new.
    pub async fn receive(
        &mut self,
        from: &ProtocolAddress,
        id: &str,
        kind: &str,
        ciphertext: &[u8],
    ) -> anyhow::Result<bool> {
        if self.read.contains(id) {
            return Ok(false);
        }
        let plain = match kind {
            "msg" => {
                let m = SignalMessage::try_from(ciphertext).context("parsing a SignalMessage")?;
                message_decrypt_signal(&m, from, &mut self.sessions, &mut self.ids, &mut rng())
                    .await?
            }
            "pkmsg" => {
                let m = PreKeySignalMessage::try_from(ciphertext)
                    .context("parsing a PreKeySignalMessage")?;
                message_decrypt_prekey(
                    &m,
                    from,
                    &mut self.sessions,
                    &mut self.ids,
                    &mut self.one_time,
                    &self.signed,
                    &mut rng(),
                    UsePQRatchet::No,
                )
                .await?
            }
            other => bail!("message {id}: <enc type={other:?}> is not for a 1:1 session"),
        };
        let body = MessageUtils::unpad_message_ref(&plain.plaintext, 2)?;
        let mut message = wa::Message::decode_from_slice(body).context("decoding the message")?;
        // A sender key for a group: kept for the `skmsg` that follows.
        if let Some(d) = message.sender_key_distribution_message.as_option()
            && let (Some(group), Some(bytes)) =
                (&d.group_id, &d.axolotl_sender_key_distribution_message)
        {
            let skdm = SenderKeyDistributionMessage::try_from(bytes.as_slice())
                .context("parsing a sender key distribution")?;
            let name = SenderKeyName::from_parts(group, &from.to_string());
            process_sender_key_distribution_message(&name, &skdm, &mut self.sender_keys).await?;
            let only_the_key = wa::Message {
                sender_key_distribution_message: message.sender_key_distribution_message.clone(),
                message_context_info: message.message_context_info.clone(),
                ..Default::default()
            } == message;
            if only_the_key {
                self.read.insert(id.to_string());
                return Ok(false);
            }
        }
        // A copy for the sender's own devices wraps the message.
        if let Some(inner) = message
            .device_sent_message
            .as_option()
            .and_then(|d| d.message.as_option())
        {
            message = inner.clone();
        }
        self.inbox.push(message);
        self.read.insert(id.to_string());
        Ok(true)
    }
}

/// The text a message carries, if any (plain or extended).
pub fn text_of(message: &wa::Message) -> Option<String> {
    message.conversation.clone().or_else(|| {
        message
            .extended_text_message
            .as_option()
            .and_then(|e| e.text.clone())
    })
}
